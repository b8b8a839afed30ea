/**
 * An opened repository: its storage, its description (pgark.json, when initialised) and the
 * keys to write and read its objects. Commands get everything about "where and how to store"
 * from here.
 */
import type { LoadedConfig } from '../config/load.ts';
import { requireSetting } from '../config/load.ts';
import { PgarkError } from '../errors.ts';
import type { WriteFormat } from '../pipeline/object-format.ts';
import { BACKUP_DATA_DEFAULT_LEVEL, DEFAULT_LEVEL } from '../pipeline/codec.ts';
import { openStorage } from '../storage/open.ts';
import type { Storage } from '../storage/types.ts';
import { parseRepoIdentity, readRepoIdentity, type RepoIdentity } from './identity.ts';
import type { Spool } from './spool.ts';
import { loadIdentityFile, validateRecipients } from './keys.ts';

export class Repository {
  readonly storage: Storage;
  readonly identity: RepoIdentity | undefined;
  private readonly loaded: LoadedConfig;
  private identitiesCache: string[] | undefined;

  private constructor(storage: Storage, identity: RepoIdentity | undefined, loaded: LoadedConfig) {
    this.storage = storage;
    this.identity = identity;
    this.loaded = loaded;
  }

  /**
   * `spool`: where to cache the repository description, which never changes after init, so
   * that wal-push and wal-fetch (one process per WAL file) save a round trip per call.
   */
  static async open(loaded: LoadedConfig, options: { requireInit: boolean; spool?: Spool }): Promise<Repository> {
    const url = requireSetting(loaded, 'repo', 'where is the repository?');
    const storage = await openStorage(url, loaded.config);
    try {
      const cached = await options.spool?.readCachedIdentity();
      let identity = cached ? parseRepoIdentity(cached, 'the cached repository description') : undefined;
      if (!identity) {
        identity = await readRepoIdentity(storage);
        if (identity) await options.spool?.cacheIdentity(JSON.stringify(identity));
      }
      if (!identity && options.requireInit) {
        throw new PgarkError('CONFIG', `${storage.description} is not a pgark repository (no pgark.json)`, {
          hint: 'run `pgark init` once to initialise it for this cluster, or fix the repo setting',
        });
      }
      return new Repository(storage, identity, loaded);
    } catch (error) {
      await storage.close();
      throw error;
    }
  }

  get description(): string {
    return this.storage.description;
  }

  /**
   * Codec, level and recipients for new objects. Recipients come from the configuration, or else
   * from the repository's description, so a writer needs no setting to keep encrypting. The
   * level is `compression-level` when set, else the codec's default for `content` (codec.ts:
   * backup data compresses at a faster level than WAL and the rest).
   */
  async writeFormat(content: 'backup data' | 'other' = 'other'): Promise<WriteFormat> {
    const { config, origin } = this.loaded;
    let recipients: string[];
    if (config.recipient && config.recipient.length > 0) {
      recipients = await validateRecipients(config.recipient, origin.get('recipient') ?? 'recipient');
    } else {
      recipients = this.identity?.encryption.recipients ?? [];
    }
    const defaults = content === 'backup data' ? BACKUP_DATA_DEFAULT_LEVEL : DEFAULT_LEVEL;
    return { codec: config.compression, level: config['compression-level'] ?? defaults[config.compression], recipients };
  }

  /** wal-push stores a block map of each segment (wal-block-map.ts). */
  get walBlockMap(): boolean {
    return this.loaded.config['wal-block-map'];
  }

  /** The private keys for reading encrypted objects; a clear error when none is configured. */
  async identities(why: string): Promise<string[]> {
    if (this.identitiesCache) return this.identitiesCache;
    const path = this.loaded.config.identity;
    if (!path) {
      throw new PgarkError('CRYPTO', `${why} is encrypted and no identity is configured`, {
        hint: 'pass --identity FILE or set PGARK_IDENTITY (the file written by `pgark keygen`)',
      });
    }
    this.identitiesCache = await loadIdentityFile(path);
    return this.identitiesCache;
  }

  async close(): Promise<void> {
    await this.storage.close();
  }
}
