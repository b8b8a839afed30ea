/**
 * Azure Blob Storage (and Azurite) through @azure/storage-blob. Block blobs: small objects in
 * one Put Blob; streams as staged blocks of growing size (parts.ts) committed at the end, so
 * the blob appears only complete. Staged blocks that are never committed are discarded by
 * the service after a week; nothing else is left behind by a failed upload.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import {
  BlobServiceClient,
  StorageRetryPolicyType,
  StorageSharedKeyCredential,
  type BlockBlobTier,
  type ContainerClient,
  type StoragePipelineOptions,
} from '@azure/storage-blob';
import { PgarkError } from '../errors.ts';
import { forEachPart, partSizeFor, readParts, type PartSchedule } from './parts.ts';
import type { ByteRange, ObjectInfo, PutOptions, RetryPolicy, Storage } from './types.ts';

export interface AzureSettings {
  container: string;
  prefix: string;
  connectionString?: string;
  account?: string;
  key?: string;
  sas?: string;
  endpoint?: string;
  accessTier?: string;
  initialPartSize: number;
  uploadConcurrency: number;
  retry: RetryPolicy;
}

const AZURE_LIMITS = { maxParts: 50_000, maxPartSize: 4000 * 1024 * 1024 };

interface RestErrorLike {
  name?: string;
  code?: string;
  statusCode?: number;
  message?: string;
}

export async function createAzureStorage(settings: AzureSettings): Promise<AzureStorage> {
  const pipelineOptions: StoragePipelineOptions = {
    retryOptions: {
      retryPolicyType: StorageRetryPolicyType.EXPONENTIAL,
      maxTries: settings.retry.maxAttempts,
      // A try covers the whole request body: allow large blocks on slow links.
      tryTimeoutInMs: Math.max(settings.retry.requestTimeoutMs, 600_000),
      retryDelayInMs: 200,
      maxRetryDelayInMs: 20_000,
    },
    userAgentOptions: { userAgentPrefix: 'pgark' },
  };
  const connectionString = settings.connectionString ?? (settings.account ? undefined : process.env.AZURE_STORAGE_CONNECTION_STRING);
  let service: BlobServiceClient;
  let where: string;
  if (connectionString) {
    try {
      service = BlobServiceClient.fromConnectionString(connectionString, pipelineOptions);
    } catch {
      // The SDK's message may quote the string, which holds the account key: never show it.
      throw new PgarkError('CONFIG', 'azure-connection-string is not a valid Azure Storage connection string', {
        hint: 'copy it from the portal: "DefaultEndpointsProtocol=https;AccountName=...;AccountKey=...;EndpointSuffix=core.windows.net"',
      });
    }
    where = service.url;
  } else {
    const account = settings.account ?? process.env.AZURE_STORAGE_ACCOUNT;
    if (!account) {
      throw new PgarkError('AUTH', 'no Azure credentials: neither a connection string nor an account is configured', {
        hint: 'set azure-connection-string (or AZURE_STORAGE_CONNECTION_STRING), or azure-account with azure-key, azure-sas or an Entra ID identity',
      });
    }
    const endpoint = (settings.endpoint ?? `https://${account}.blob.core.windows.net`).replace(/\/+$/, '');
    where = endpoint;
    const key = settings.key ?? process.env.AZURE_STORAGE_KEY;
    if (key) {
      service = new BlobServiceClient(endpoint, new StorageSharedKeyCredential(account, key), pipelineOptions);
    } else if (settings.sas) {
      service = new BlobServiceClient(`${endpoint}?${settings.sas.replace(/^\?/, '')}`, undefined, pipelineOptions);
    } else {
      // Loaded only when needed: @azure/identity is large.
      const { DefaultAzureCredential } = await import('@azure/identity');
      service = new BlobServiceClient(endpoint, new DefaultAzureCredential(), pipelineOptions);
    }
  }
  return new AzureStorage(service.getContainerClient(settings.container), settings, where.split('?')[0]!);
}

export class AzureStorage implements Storage {
  readonly description: string;
  private readonly container: ContainerClient;
  private readonly settings: AzureSettings;
  private readonly schedule: PartSchedule;

  constructor(container: ContainerClient, settings: AzureSettings, endpoint: string) {
    this.container = container;
    this.settings = settings;
    this.description = `azure://${settings.container}/${settings.prefix} at ${endpoint}`;
    this.schedule = { initialPartSize: settings.initialPartSize, maxPartSize: AZURE_LIMITS.maxPartSize, maxParts: AZURE_LIMITS.maxParts };
  }

  private blobOf(key: string) {
    return this.container.getBlockBlobClient(this.settings.prefix + key);
  }

  private tier(): { tier?: BlockBlobTier } {
    return this.settings.accessTier ? { tier: this.settings.accessTier as BlockBlobTier } : {};
  }

  private wrap(error: unknown, action: string, key?: string): PgarkError {
    if (error instanceof PgarkError) return error;
    const e = error as RestErrorLike;
    const what = key ? `${action} ${key} in ${this.description}` : `${action} ${this.description}`;
    if (e.statusCode === 404 && e.code === 'ContainerNotFound') {
      return new PgarkError('STORAGE', `container "${this.settings.container}" does not exist (${this.description})`, {
        hint: 'create the container first, or fix its name in the repo URL',
        cause: error,
      });
    }
    if (e.statusCode === 404 || e.code === 'BlobNotFound') return new PgarkError('NOT_FOUND', `${key ?? 'object'} not found in ${this.description}`, { cause: error });
    if (e.statusCode === 403 || e.statusCode === 401 || e.code === 'AuthenticationFailed' || e.name === 'CredentialUnavailableError' || e.name === 'AuthenticationError') {
      return new PgarkError('AUTH', `access denied: ${what} (${e.code ?? e.name ?? e.statusCode})`, {
        hint: 'check the account key, SAS (permissions and expiry) or the identity\'s role assignment (Storage Blob Data Contributor)',
        cause: error,
      });
    }
    if (e.statusCode === undefined && /ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|ETIMEDOUT|ECONNRESET|EAI_AGAIN|socket hang up|timeout/i.test(`${e.code} ${e.message}`)) {
      return new PgarkError('UNREACHABLE', `cannot reach ${this.description} to ${action}${key ? ' ' + key : ''} after ${this.settings.retry.maxAttempts} attempts (${e.code ?? e.name})`, {
        hint: 'check the endpoint, the network and that the storage account is reachable',
        cause: error,
      });
    }
    if (e.name === 'AbortError') return new PgarkError('STORAGE', `${what}: aborted`, { cause: error });
    return new PgarkError('STORAGE', `${what} failed: ${e.code ?? e.name ?? 'error'}${e.statusCode ? ` (HTTP ${e.statusCode})` : ''}`, { cause: error });
  }

  async put(key: string, body: Readable | Buffer, options: PutOptions): Promise<{ size: number }> {
    const blob = this.blobOf(key);
    try {
      if (Buffer.isBuffer(body) && body.length <= this.schedule.initialPartSize) {
        await blob.upload(body, body.length, { ...this.tier(), blobHTTPHeaders: { blobContentMD5: md5(body) }, abortSignal: options.signal });
        return { size: body.length };
      }
      const source = Buffer.isBuffer(body) ? Readable.from([body]) : body;
      // Block ids must all have the same length within a blob; a random upload tag keeps
      // two concurrent uploads of the same key from mixing blocks.
      const uploadTag = randomBytes(6).toString('hex');
      let size = 0;
      const blockIds = await forEachPart(
        readParts(source, (index) => partSizeFor(index, this.schedule)),
        {
          concurrency: this.settings.uploadConcurrency,
          maxBytesInFlight: this.settings.uploadConcurrency * this.schedule.initialPartSize,
          signal: options.signal,
        },
        async (part, index) => {
          if (index >= AZURE_LIMITS.maxParts) throw new PgarkError('STORAGE', `${key}: more than ${AZURE_LIMITS.maxParts} blocks`);
          size += part.length;
          const blockId = Buffer.from(`${uploadTag}-${String(index).padStart(6, '0')}`).toString('base64');
          await blob.stageBlock(blockId, part, part.length, { transactionalContentMD5: md5(part), abortSignal: options.signal });
          return blockId;
        },
      );
      await blob.commitBlockList(blockIds, { ...this.tier(), abortSignal: options.signal });
      return { size };
    } catch (error) {
      throw this.wrap(error, 'upload', key);
    }
  }

  async get(key: string, range?: ByteRange): Promise<Readable> {
    try {
      const count = range?.end !== undefined ? range.end - range.start + 1 : undefined;
      const response = await this.blobOf(key).download(range?.start ?? 0, count);
      const body = response.readableStreamBody;
      if (!body) throw new PgarkError('STORAGE', `${this.description} returned no body for ${key}`);
      return body as Readable;
    } catch (error) {
      throw this.wrap(error, 'download', key);
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    try {
      const properties = await this.blobOf(key).getProperties();
      return { key, size: properties.contentLength ?? 0, lastModified: properties.lastModified ?? new Date(0) };
    } catch (error) {
      const wrapped = this.wrap(error, 'inspect', key);
      if (wrapped.code === 'NOT_FOUND') return undefined;
      throw wrapped;
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    try {
      for await (const blob of this.container.listBlobsFlat({ prefix: this.settings.prefix + prefix })) {
        yield {
          key: blob.name.slice(this.settings.prefix.length),
          size: blob.properties.contentLength ?? 0,
          lastModified: blob.properties.lastModified ?? new Date(0),
        };
      }
    } catch (error) {
      throw this.wrap(error, 'list', prefix || '/');
    }
  }

  async delete(keys: readonly string[]): Promise<void> {
    for (const key of keys) {
      try {
        await this.blobOf(key).deleteIfExists();
      } catch (error) {
        throw this.wrap(error, 'delete', key);
      }
    }
  }

  async close(): Promise<void> {}
}

function md5(data: Buffer): Uint8Array {
  return createHash('md5').update(data).digest();
}
