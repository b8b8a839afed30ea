/** pgark init: bind a repository to this PostgreSQL cluster (pgark.json). */
import type { CommandContext } from '../cli/context.ts';
import { requireSetting } from '../config/load.ts';
import { PgarkError } from '../errors.ts';
import { clusterInfo, connect } from '../postgres/connection.ts';
import { readRepoIdentity, writeRepoIdentity, type RepoIdentity } from '../repo/identity.ts';
import { validateRecipients } from '../repo/keys.ts';
import { REPO_FORMAT_VERSION } from '../repo/layout.ts';
import { openStorage } from '../storage/open.ts';
import { log } from '../util/log.ts';

declare const PGARK_VERSION: string | undefined;

export async function run(ctx: CommandContext): Promise<number> {
  const { config, origin } = ctx.loaded;
  const url = requireSetting(ctx.loaded, 'repo', 'which repository to initialise?');
  const recipients = await validateRecipients(config.recipient ?? [], origin.get('recipient') ?? 'recipient');

  const client = await connect(config);
  let info;
  try {
    info = await clusterInfo(client);
  } finally {
    await client.end();
  }

  const storage = await openStorage(url, config);
  try {
    const existing = await readRepoIdentity(storage);
    if (existing) {
      if (existing.postgres.systemIdentifier !== info.systemIdentifier) {
        throw new PgarkError('REPO_MISMATCH',
          `${storage.description} belongs to another cluster (system identifier ${existing.postgres.systemIdentifier}, PostgreSQL ${existing.postgres.majorVersion}); this one is ${info.systemIdentifier}`,
          { hint: 'use a separate repository (or prefix) per cluster' });
      }
      if (recipients.length > 0 && recipients.join(',') !== existing.encryption.recipients.join(',')) {
        throw new PgarkError('CONFLICT', `${storage.description} is already initialised with other encryption recipients`, {
          hint: 'recipients are fixed at init; drop --recipient to keep the recorded ones',
        });
      }
      log.info('repository already initialised for this cluster', { repo: storage.description, systemIdentifier: info.systemIdentifier });
      if (ctx.json) process.stdout.write(JSON.stringify(existing) + '\n');
      return 0;
    }
    const identity: RepoIdentity = {
      format: REPO_FORMAT_VERSION,
      createdAt: new Date().toISOString(),
      createdBy: `pgark ${typeof PGARK_VERSION === 'string' ? PGARK_VERSION : 'dev'}`,
      postgres: { systemIdentifier: info.systemIdentifier, majorVersion: info.majorVersion, walSegmentSize: info.walSegmentSize },
      encryption: { recipients },
    };
    await writeRepoIdentity(storage, identity);
    log.info('initialised repository', {
      repo: storage.description,
      systemIdentifier: info.systemIdentifier,
      postgres: info.majorVersion,
      encrypted: recipients.length > 0,
    });
    if (recipients.length === 0) log.warn('the repository is not encrypted: set recipient (pgark keygen) before init to encrypt client-side');
    if (ctx.json) process.stdout.write(JSON.stringify(identity) + '\n');
    return 0;
  } finally {
    await storage.close();
  }
}
