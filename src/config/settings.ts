/**
 * Every setting pgark knows, in one table. The config file (YAML, kebab-case keys), the
 * environment (PGARK_ + upper snake case) and the command-line flags (--key) are all derived
 * from it, and so is the configuration reference in the README (`pgark help settings`).
 */
/** The config file read when neither --config nor PGARK_CONFIG names one (absent: defaults). */
export const DEFAULT_CONFIG_PATH = '/etc/pgark/pgark.yaml';

export type SettingType =
  | { kind: 'string' }
  | { kind: 'list' }                       // YAML list, comma-separated in env, repeatable flag
  | { kind: 'boolean' }
  | { kind: 'integer'; min: number; max: number }
  | { kind: 'size'; min?: number }         // bytes: 8MiB, 1G, 4096
  | { kind: 'duration' }                   // milliseconds: 30s, 5m, 250ms
  | { kind: 'enum'; values: readonly string[] };

export interface SettingSpec {
  readonly key: string;
  readonly type: SettingType;
  readonly description: string;
  readonly default?: string | number | boolean;
  /** Never logged or printed; `pgark config` shows "(set)" instead. */
  readonly secret?: boolean;
  readonly group: 'repository' | 's3' | 'azure' | 'encryption' | 'postgres' | 'archive' | 'backup' | 'retention' | 'performance' | 'logging';
}

const STORAGE_CLASS_NOTE = 'S3 storage class; empty = the bucket default';

export const SETTINGS = [
  { key: 'repo', group: 'repository', type: { kind: 'string' }, description: 'Repository URL: file:///path, s3://bucket/prefix, azure://container/prefix' },
  { key: 'compression', group: 'repository', type: { kind: 'enum', values: ['zstd', 'lz4', 'gzip', 'none'] }, default: 'zstd', description: 'Codec for new objects (reading detects the codec of each object)' },
  { key: 'compression-level', group: 'repository', type: { kind: 'integer', min: -7, max: 22 }, description: 'Codec level for everything written: zstd 1-19 (default: 1 for backup data read in whole runs of pages, 3 for the rest; see Backups), gzip 1-9 (default 6); lz4 ignores it' },

  { key: 'recipient', group: 'encryption', type: { kind: 'list' }, description: 'age recipient(s) (age1..., public) to encrypt new objects to; default: the recipients recorded by `pgark init`' },
  { key: 'identity', group: 'encryption', type: { kind: 'string' }, description: 'age identity file (private key, mode 0600) for reading encrypted objects' },

  { key: 's3-region', group: 's3', type: { kind: 'string' }, description: 'S3 region (default: AWS_REGION, the profile, or us-east-1)' },
  { key: 's3-endpoint', group: 's3', type: { kind: 'string' }, description: 'Custom S3 endpoint URL (Ceph RGW, MinIO, ...)' },
  { key: 's3-force-path-style', group: 's3', type: { kind: 'boolean' }, description: 'Path-style addressing (bucket in the path); default on for a custom endpoint' },
  { key: 's3-profile', group: 's3', type: { kind: 'string' }, description: 'Shared-config profile for credentials (default: AWS_PROFILE / default)' },
  { key: 's3-access-key-id', group: 's3', type: { kind: 'string' }, description: 'Static access key; default: the standard AWS credential chain (env, profile, web identity, IMDS)' },
  { key: 's3-secret-access-key', group: 's3', type: { kind: 'string' }, secret: true, description: 'Static secret key (with s3-access-key-id)' },
  { key: 's3-session-token', group: 's3', type: { kind: 'string' }, secret: true, description: 'Session token for temporary static credentials' },
  { key: 's3-storage-class', group: 's3', type: { kind: 'string' }, description: `${STORAGE_CLASS_NOTE}, for every kind of object` },
  { key: 's3-storage-class-wal', group: 's3', type: { kind: 'string' }, description: `${STORAGE_CLASS_NOTE}, for WAL segments` },
  { key: 's3-storage-class-data', group: 's3', type: { kind: 'string' }, description: `${STORAGE_CLASS_NOTE}, for backup data and streams` },
  { key: 's3-storage-class-meta', group: 's3', type: { kind: 'string' }, description: `${STORAGE_CLASS_NOTE}, for manifests and small metadata` },
  { key: 's3-sse', group: 's3', type: { kind: 'enum', values: ['none', 'sse-s3', 'sse-kms', 'sse-c'] }, default: 'none', description: 'Server-side encryption' },
  { key: 's3-sse-kms-key-id', group: 's3', type: { kind: 'string' }, description: 'KMS key id for s3-sse=sse-kms (default: the account key)' },
  { key: 's3-sse-c-key', group: 's3', type: { kind: 'string' }, secret: true, description: 'Base64 256-bit key for s3-sse=sse-c (needed to read too)' },
  { key: 's3-checksum-mode', group: 's3', type: { kind: 'enum', values: ['when-required', 'when-supported'] }, default: 'when-required', description: 'AWS SDK request/response checksum mode; when-supported breaks streaming uploads on RGW and Swift' },
  

  { key: 'azure-connection-string', group: 'azure', type: { kind: 'string' }, secret: true, description: 'Storage connection string (default: AZURE_STORAGE_CONNECTION_STRING)' },
  { key: 'azure-account', group: 'azure', type: { kind: 'string' }, description: 'Storage account name (with azure-key, azure-sas or DefaultAzureCredential)' },
  { key: 'azure-key', group: 'azure', type: { kind: 'string' }, secret: true, description: 'Storage account key' },
  { key: 'azure-sas', group: 'azure', type: { kind: 'string' }, secret: true, description: 'Shared access signature token' },
  { key: 'azure-endpoint', group: 'azure', type: { kind: 'string' }, description: 'Blob endpoint URL (default https://ACCOUNT.blob.core.windows.net)' },
  { key: 'azure-access-tier', group: 'azure', type: { kind: 'enum', values: ['', 'Hot', 'Cool', 'Cold', 'Archive'] }, description: 'Access tier for new blobs (empty = account default)' },

  { key: 'pg-host', group: 'postgres', type: { kind: 'string' }, description: 'PostgreSQL host or socket directory (default: PGHOST, /var/run/postgresql, localhost)' },
  { key: 'pg-port', group: 'postgres', type: { kind: 'integer', min: 1, max: 65535 }, description: 'PostgreSQL port (default: PGPORT or 5432)' },
  { key: 'pg-user', group: 'postgres', type: { kind: 'string' }, description: 'PostgreSQL user (default: PGUSER or the OS user)' },
  { key: 'pg-database', group: 'postgres', type: { kind: 'string' }, description: 'Database to connect to (default: PGDATABASE or postgres)' },
  { key: 'pg-password', group: 'postgres', type: { kind: 'string' }, secret: true, description: 'Password (prefer ~/.pgpass or PGPASSWORD)' },
  { key: 'pg-bin-dir', group: 'postgres', type: { kind: 'string' }, description: "PostgreSQL server binaries for restore-test (default: pg_config --bindir, /usr/lib/postgresql/<major>/bin or PATH, whichever has the backup's major)" },
  { key: 'restore-test-path', group: 'postgres', type: { kind: 'string' }, description: 'Where restore-test makes its scratch directory (default: the system temp dir)' },
  { key: 'restore-test-user', group: 'postgres', type: { kind: 'string' }, default: 'postgres', description: 'OS user restore-test runs PostgreSQL as when pgark runs as root (otherwise: the current user)' },
  { key: 'pgdata', group: 'postgres', type: { kind: 'string' }, description: 'Data directory of the cluster (default: PGDATA, or asked from the server)' },

  { key: 'part-size', group: 'performance', type: { kind: 'size', min: 1024 }, default: '8MiB', description: 'First part size of multipart uploads (S3 parts, Azure blocks); later parts grow so 10,000 S3 parts reach 5 TiB. S3 needs at least 5MiB' },
  { key: 'process-max', group: 'performance', type: { kind: 'integer', min: 1, max: 64 }, default: 4, description: 'Parallel transfers' },
  { key: 'backup-direct-io', group: 'performance', type: { kind: 'boolean' }, description: 'backup reads relation data files with O_DIRECT (Linux), past the page cache: much less system CPU for data not cached, and the database\'s cached pages are not evicted by data read once. Default: for files read whole (a full backup; new or rewritten files), not for the files an incremental compares page by page (mostly unchanged, often cached pages, which read faster through the cache); on/off = for every file. Falls back to ordinary reads where the filesystem refuses it' },
  { key: 'restore-direct-io', group: 'performance', type: { kind: 'boolean' }, default: true, description: 'restore writes large aligned pieces of data files with O_DIRECT (Linux), past the page cache: much less system CPU, and the host\'s cache is left to the database. Falls back to ordinary writes where the filesystem refuses it; off = everything through the page cache (the restored data then starts out cached)' },
  { key: 'bandwidth-limit', group: 'performance', type: { kind: 'size' }, default: 0, description: 'Transfer limit in bytes per second, per process (0 = none), e.g. 50MiB' },
  { key: 'retry-max', group: 'performance', type: { kind: 'integer', min: 1, max: 50 }, default: 8, description: 'Attempts per storage request (exponential backoff with jitter)' },
  { key: 'request-timeout', group: 'performance', type: { kind: 'duration' }, default: '60s', description: 'A request with no progress for this long is retried' },
  { key: 'connect-timeout', group: 'performance', type: { kind: 'duration' }, default: '5s', description: 'TCP connect timeout to the object store' },

  { key: 'spool-path', group: 'archive', type: { kind: 'string' }, description: 'Local directory for WAL pushed ahead and prefetched (default /var/spool/pgark if writable, else a directory in TMPDIR)' },
  { key: 'archive-push-ahead', group: 'archive', type: { kind: 'integer', min: 0, max: 1000 }, default: 16, description: 'A background process started by wal-push uploads up to this many .ready WAL files beyond the one PostgreSQL asks for, in parallel (process-max), so the calls for them return at once; 0 = each call uploads its own file' },
  { key: 'archive-queue-max', group: 'archive', type: { kind: 'size' }, default: 0, description: 'When the store is unreachable and more WAL than this waits in pg_wal, wal-push drops it (reports success) to keep PostgreSQL from filling its disk. Breaks point-in-time recovery until the next backup. 0 = never drop' },
  { key: 'archive-timeout', group: 'archive', type: { kind: 'duration' }, default: '60s', description: 'How long a backup waits for the WAL it needs to reach the archive' },
  { key: 'wal-block-map', group: 'archive', type: { kind: 'boolean' }, default: true, description: 'wal-push also stores which relation blocks each segment\'s records change (a few KiB to ~100 KiB per segment, ~15 ms of CPU), so that an incremental backup reads only those blocks instead of every page; off = incrementals compare every page\'s LSN' },
  { key: 'wal-prefetch', group: 'archive', type: { kind: 'integer', min: 0, max: 256 }, default: 8, description: 'A background process started by wal-fetch keeps this many segments after the one replay asked for downloaded, verified, in the spool' },

  { key: 'backup-checkpoint-interval', group: 'backup', type: { kind: 'duration' }, default: '60s', description: 'How often a running backup records what it has stored, so that a backup interrupted by a crash or kill is resumed by the next one without uploading it again (0 = never)' },

  { key: 'retain', group: 'retention', type: { kind: 'integer', min: 1, max: 100000 }, description: 'pgark expire keeps the newest N backups (any type)' },
  { key: 'retain-full', group: 'retention', type: { kind: 'integer', min: 1, max: 100000 }, description: 'pgark expire keeps the newest N full backups and every backup taken after the oldest of them' },
  { key: 'retain-window', group: 'retention', type: { kind: 'duration' }, description: 'pgark expire keeps what restores to any point in this recent window, e.g. 14d (the backup before the window included)' },
  { key: 'repack-threshold', group: 'retention', type: { kind: 'integer', min: 0, max: 100 }, default: 50, description: 'pgark expire repacks a pack when at least this percentage of its bytes is no longer referenced by a retained backup (live blobs copied into new packs, the old pack deleted 24 h later); 0 = never repack' },
  { key: 'expire-after-backup', group: 'retention', type: { kind: 'boolean' }, default: false, description: 'Run pgark expire after each successful backup (needs a retain setting)' },
  { key: 'lock-lease', group: 'retention', type: { kind: 'duration' }, default: '2m', description: 'Lease of the repository lock held by backup, verify, restore and expire; refreshed every quarter of it. A crashed holder blocks others for at most this long' },
  { key: 'lock-wait', group: 'retention', type: { kind: 'duration' }, default: '0s', description: 'How long backup, verify, restore and expire wait for the repository lock held by another process (0 = fail at once)' },
  { key: 'lifecycle-transition-class', group: 'retention', type: { kind: 'string' }, description: 'pgark lifecycle: storage class to move WAL and packs to after lifecycle-transition-days (e.g. STANDARD_IA); empty = no transition' },
  { key: 'lifecycle-transition-days', group: 'retention', type: { kind: 'integer', min: 0, max: 36500 }, default: 30, description: 'pgark lifecycle: age in days at which WAL and packs move to lifecycle-transition-class' },
  { key: 'lifecycle-noncurrent-days', group: 'retention', type: { kind: 'integer', min: 1, max: 36500 }, default: 7, description: 'pgark lifecycle: on a versioned bucket, days after which versions that expire deleted are removed for good' },

  { key: 'log-level', group: 'logging', type: { kind: 'enum', values: ['debug', 'info', 'warn', 'error'] }, default: 'info', description: 'Least severe level logged' },
  { key: 'log-format', group: 'logging', type: { kind: 'enum', values: ['auto', 'text', 'json'] }, default: 'auto', description: 'auto: text on a terminal, JSON lines otherwise' },
] as const satisfies readonly SettingSpec[];

export type SettingKey = (typeof SETTINGS)[number]['key'];

export function envNameOf(key: string): string {
  return 'PGARK_' + key.toUpperCase().replaceAll('-', '_');
}

export const SETTINGS_BY_KEY: ReadonlyMap<string, SettingSpec> = new Map(SETTINGS.map((s) => [s.key, s]));
