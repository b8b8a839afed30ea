/**
 * The object stores of the integration tests, as started by scripts/objstores/start-all.sh
 * (scripts/test.sh, i.e. `npm test`, starts them and exports their env):
 *
 *   Ceph RGW   S3_ENDPOINT AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION
 *   Swift      SWIFT_S3_ENDPOINT SWIFT_S3_ACCESS_KEY_ID SWIFT_S3_SECRET_ACCESS_KEY [SWIFT_S3_REGION]
 *   Azurite    AZURE_STORAGE_CONNECTION_STRING AZURE_STORAGE_ACCOUNT AZURE_STORAGE_KEY AZURE_STORAGE_BLOB_ENDPOINT
 *
 * A missing env is an error that says how to run the tests, unless PGARK_TEST_SKIP_SERVERS=1:
 * then tests written as `test('...', { skip: skipServers() }, ...)` are skipped.
 *
 * Every test makes its own bucket/container (createTestBucket / createTestContainer, unique
 * names) and removes it afterwards (cleanup(), or automatically with the `t` option);
 * PGARK_TEST_KEEP_BUCKETS=1 keeps them for a post-mortem.
 */
import { randomBytes } from 'node:crypto';
import {
  AbortMultipartUploadCommand, CreateBucketCommand, DeleteBucketCommand, DeleteObjectCommand, ListMultipartUploadsCommand,
  ListObjectsV2Command, ListObjectVersionsCommand, S3Client, type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { BlobServiceClient, type ContainerClient, type StoragePipelineOptions } from '@azure/storage-blob';

export type S3ServerName = 'rgw' | 'swift';
export const S3_SERVERS: readonly S3ServerName[] = ['rgw', 'swift'];

export interface S3Env {
  server: S3ServerName;
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
}

export interface AzureEnv {
  connectionString: string;
  account: string;
  key: string;
  /** http://127.0.0.1:PORT/devstoreaccount1 */
  blobEndpoint: string;
}

const HOW_TO_RUN = 'Run the tests with `npm test` (scripts/test.sh starts the object stores and exports their env); ' +
  'for some files only: `npm test -- test/integration/x.test.ts` (PGARK_TEST_SKIP_BUILD=1 skips build and typecheck). ' +
  'Set PGARK_TEST_SKIP_SERVERS=1 to skip the tests that need the servers.';

/** For node:test's `skip` option: a reason when PGARK_TEST_SKIP_SERVERS=1, else false. */
export function skipServers(): string | false {
  return process.env.PGARK_TEST_SKIP_SERVERS === '1' ? 'PGARK_TEST_SKIP_SERVERS=1: no object-store servers' : false;
}

function need(names: string[]): string[] {
  const missing = names.filter((n) => !process.env[n]);
  if (missing.length > 0) throw new Error(`object-store env missing: ${missing.join(', ')}. ${HOW_TO_RUN}`);
  return names.map((n) => process.env[n]!);
}

/** Endpoint and credentials of one S3 server, from the env (throws with instructions if missing). */
export function s3Env(server: S3ServerName): S3Env {
  if (server === 'rgw') {
    const [endpoint, accessKeyId, secretAccessKey] = need(['S3_ENDPOINT', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY']);
    return { server, endpoint: endpoint!, accessKeyId: accessKeyId!, secretAccessKey: secretAccessKey!, region: process.env.AWS_REGION || 'us-east-1' };
  }
  const [endpoint, accessKeyId, secretAccessKey] = need(['SWIFT_S3_ENDPOINT', 'SWIFT_S3_ACCESS_KEY_ID', 'SWIFT_S3_SECRET_ACCESS_KEY']);
  return { server, endpoint: endpoint!, accessKeyId: accessKeyId!, secretAccessKey: secretAccessKey!, region: process.env.SWIFT_S3_REGION || 'us-east-1' };
}

/** Azurite's connection data, from the env (throws with instructions if missing). */
export function azureEnv(): AzureEnv {
  const [connectionString, account, key, blobEndpoint] = need(['AZURE_STORAGE_CONNECTION_STRING', 'AZURE_STORAGE_ACCOUNT', 'AZURE_STORAGE_KEY', 'AZURE_STORAGE_BLOB_ENDPOINT']);
  return { connectionString: connectionString!, account: account!, key: key!, blobEndpoint: blobEndpoint! };
}

/** The same S3 server reached through another base URL (e.g. a fault proxy's). */
export function s3EnvVia(env: S3Env, baseUrl: string): S3Env {
  return { ...env, endpoint: baseUrl };
}

/** The same Azure account reached through another base URL (e.g. a fault proxy's url). */
export function azureEnvVia(env: AzureEnv, baseUrl: string): AzureEnv {
  const blobEndpoint = `${baseUrl.replace(/\/$/, '')}/${env.account}`;
  return {
    ...env,
    blobEndpoint,
    connectionString: `DefaultEndpointsProtocol=http;AccountName=${env.account};AccountKey=${env.key};BlobEndpoint=${blobEndpoint};`,
  };
}

/**
 * An S3 client for a test server: path-style, and checksums only WHEN_REQUIRED (the SDK default
 * sends aws-chunked bodies with trailing CRCs that RGW and Swift reject).
 */
export function s3Client(env: S3Env, overrides: Partial<S3ClientConfig> = {}): S3Client {
  return new S3Client({
    endpoint: env.endpoint,
    region: env.region,
    credentials: { accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey },
    forcePathStyle: true,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    ...overrides,
  });
}

/** A BlobServiceClient for Azurite (shared key from the connection string). */
export function blobServiceClient(env: AzureEnv = azureEnv(), options?: StoragePipelineOptions): BlobServiceClient {
  return BlobServiceClient.fromConnectionString(env.connectionString, options);
}

/** A unique lowercase name valid for S3 buckets and Azure containers (3-63 chars). */
export function uniqueName(prefix = 't'): string {
  const p = prefix.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/-+/g, '-').replace(/^-|-$/g, '').slice(0, 30) || 't';
  return `pgark-${p}-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
}

/** Something with node:test's TestContext.after (a test context or the module-level `after`). */
export interface AfterHook { after(fn: () => unknown): void }

const keep = (): boolean => process.env.PGARK_TEST_KEEP_BUCKETS === '1';

// ---------------------------------------------------------------------------------------------
// S3

export interface TestBucket {
  server: S3ServerName;
  name: string;
  env: S3Env;
  client: S3Client;
  /** abort open multipart uploads, delete every object (and version), delete the bucket */
  cleanup(): Promise<void>;
}

export interface TestBucketOptions {
  /** part of the bucket name, e.g. the test's topic */
  prefix?: string;
  /** register cleanup() with t.after() */
  t?: AfterHook;
  /** client options (e.g. a proxy endpoint is better set with s3EnvVia) */
  client?: Partial<S3ClientConfig>;
}

/** Creates a bucket with a unique name on `server` (name or env). */
export async function createTestBucket(server: S3ServerName | S3Env, opts: TestBucketOptions = {}): Promise<TestBucket> {
  const env = typeof server === 'string' ? s3Env(server) : server;
  const client = s3Client(env, opts.client);
  const name = uniqueName(opts.prefix);
  await client.send(new CreateBucketCommand({ Bucket: name }));
  const bucket: TestBucket = {
    server: env.server, name, env, client,
    cleanup: async () => {
      if (keep()) { console.error(`kept bucket ${name} on ${env.endpoint}`); return; }
      await emptyBucket(client, name);
      await client.send(new DeleteBucketCommand({ Bucket: name }));
    },
  };
  opts.t?.after(() => bucket.cleanup());
  return bucket;
}

export interface OpenUpload { key: string; uploadId: string; initiated?: Date }

/** The multipart uploads started and neither completed nor aborted (all pages). */
export async function listOpenMultipartUploads(client: S3Client, bucket: string, prefix?: string): Promise<OpenUpload[]> {
  const out: OpenUpload[] = [];
  let keyMarker: string | undefined;
  let uploadIdMarker: string | undefined;
  for (;;) {
    const r = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }));
    for (const u of r.Uploads ?? []) out.push({ key: u.Key!, uploadId: u.UploadId!, initiated: u.Initiated });
    if (!r.IsTruncated) return out;
    keyMarker = r.NextKeyMarker;
    uploadIdMarker = r.NextUploadIdMarker;
  }
}

/** All keys (ListObjectsV2, every page), in the server's (lexicographic) order. */
export async function listKeys(client: S3Client, bucket: string, opts: { prefix?: string; pageSize?: number } = {}): Promise<string[]> {
  const out: string[] = [];
  let token: string | undefined;
  for (;;) {
    const r = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: opts.prefix, MaxKeys: opts.pageSize, ContinuationToken: token }));
    for (const o of r.Contents ?? []) out.push(o.Key!);
    if (!r.IsTruncated) return out;
    token = r.NextContinuationToken;
  }
}

async function inParallel<T>(items: T[], limit: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await fn(items[next++]!);
  }));
}

/**
 * Aborts open uploads and deletes every object of a bucket, one DeleteObject each (DeleteObjects
 * needs Content-MD5 on Swift, which the SDK no longer sends).
 */
export async function emptyBucket(client: S3Client, bucket: string): Promise<void> {
  await inParallel(await listOpenMultipartUploads(client, bucket), 8, (u) =>
    client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: u.key, UploadId: u.uploadId })));
  let versions: { Key: string; VersionId?: string }[] | null = null;
  try {
    versions = [];
    let keyMarker: string | undefined;
    let versionIdMarker: string | undefined;
    for (;;) {
      const r = await client.send(new ListObjectVersionsCommand({ Bucket: bucket, KeyMarker: keyMarker, VersionIdMarker: versionIdMarker }));
      for (const v of [...(r.Versions ?? []), ...(r.DeleteMarkers ?? [])]) versions.push({ Key: v.Key!, VersionId: v.VersionId });
      if (!r.IsTruncated) break;
      keyMarker = r.NextKeyMarker;
      versionIdMarker = r.NextVersionIdMarker;
    }
  } catch {
    versions = null; // no versioning API on this server: plain listing
  }
  const items = versions ?? (await listKeys(client, bucket)).map((Key) => ({ Key, VersionId: undefined }));
  await inParallel(items, 16, (v) =>
    client.send(new DeleteObjectCommand({ Bucket: bucket, Key: v.Key, VersionId: v.VersionId === 'null' ? undefined : v.VersionId })));
}

// ---------------------------------------------------------------------------------------------
// Azure

export interface TestContainer {
  name: string;
  env: AzureEnv;
  service: BlobServiceClient;
  client: ContainerClient;
  /** delete the container with everything in it */
  cleanup(): Promise<void>;
}

export interface TestContainerOptions {
  prefix?: string;
  t?: AfterHook;
  /** the account through another env (e.g. azureEnvVia(azureEnv(), proxy.url)) */
  env?: AzureEnv;
  /** pipeline options, e.g. short retry delays: { retryOptions: { retryDelayInMs: 10, maxRetryDelayInMs: 100 } } */
  pipeline?: StoragePipelineOptions;
}

/** Creates a container with a unique name in Azurite. */
export async function createTestContainer(opts: TestContainerOptions = {}): Promise<TestContainer> {
  const env = opts.env ?? azureEnv();
  const service = blobServiceClient(env, opts.pipeline);
  const name = uniqueName(opts.prefix);
  const client = service.getContainerClient(name);
  await client.create();
  const container: TestContainer = {
    name, env, service, client,
    cleanup: async () => {
      if (keep()) { console.error(`kept container ${name} on ${env.blobEndpoint}`); return; }
      await client.deleteIfExists();
    },
  };
  opts.t?.after(() => container.cleanup());
  return container;
}

/** Blob names that exist only as uncommitted blocks (Azure's analogue of open multipart uploads). */
export async function listUncommittedBlobs(container: ContainerClient, prefix?: string): Promise<string[]> {
  const committed = new Set<string>();
  for await (const b of container.listBlobsFlat({ prefix })) committed.add(b.name);
  const out: string[] = [];
  for await (const b of container.listBlobsFlat({ prefix, includeUncommitedBlobs: true })) {
    if (!committed.has(b.name)) out.push(b.name);
  }
  return out;
}

/** All blob names (every page). */
export async function listBlobNames(container: ContainerClient, prefix?: string): Promise<string[]> {
  const out: string[] = [];
  for await (const b of container.listBlobsFlat({ prefix })) out.push(b.name);
  return out;
}
