/**
 * S3 and S3-compatible stores (AWS, Ceph RGW, Swift s3api, MinIO, GCS's XML API) through the
 * AWS SDK v3. Facts this driver is built around (measured on RGW 16, Swift 2.30, s3rver):
 * - The SDK's default checksum mode sends streaming uploads as aws-chunked with a trailing
 *   CRC32, which RGW and Swift reject and some servers store verbatim: default WHEN_REQUIRED,
 *   and integrity comes from Content-MD5 on every request with a body.
 * - RGW returns an empty ETag from CompleteMultipartUpload: the object is HEADed instead.
 * - Swift wants Content-MD5 on DeleteObjects (the SDK sends only a CRC32 now).
 * - lib-storage's Upload uses one fixed part size, which caps a stream of unknown length at
 *   10,000 parts × that size; parts here grow (parts.ts), so the multipart protocol is driven
 *   directly with the client's commands.
 */
import { createHash } from 'node:crypto';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectsCommand,
  GetBucketLifecycleConfigurationCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutBucketLifecycleConfigurationCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type LifecycleRule,
  type S3ClientConfig,
  type StorageClass,
} from '@aws-sdk/client-s3';
import { PgarkError } from '../errors.ts';
import { log } from '../util/log.ts';
import { storageRequests } from './metrics.ts';
import { forEachPart, partSizeFor, readParts, type PartSchedule } from './parts.ts';
import type { ByteRange, ObjectInfo, ObjectKind, PutOptions, RetryPolicy, Storage } from './types.ts';

export interface S3Settings {
  bucket: string;
  prefix: string;
  region?: string;
  endpoint?: string;
  forcePathStyle?: boolean;
  profile?: string;
  accessKeyId?: string;
  secretAccessKey?: string;
  sessionToken?: string;
  storageClass: Partial<Record<ObjectKind, string>>;
  sse: 'none' | 'sse-s3' | 'sse-kms' | 'sse-c';
  sseKmsKeyId?: string;
  /** Base64 of a 32-byte key. */
  sseCustomerKey?: string;
  checksumMode: 'when-required' | 'when-supported';
  initialPartSize: number;
  uploadConcurrency: number;
  retry: RetryPolicy;
}

const S3_LIMITS = { maxParts: 10_000, maxPartSize: 5 * 1024 ** 3 };

/** SDK errors carry the HTTP status and the S3 error code in different places. */
interface SdkError {
  name?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
  $retryable?: unknown;
}

function md5Base64(data: Buffer | string): string {
  return createHash('md5').update(data).digest('base64');
}

export class S3Storage implements Storage {
  readonly description: string;
  private readonly client: S3Client;
  private readonly settings: S3Settings;
  private readonly schedule: PartSchedule;
  private readonly sseHeaders: Record<string, string | Buffer>;
  private readonly sseReadHeaders: Record<string, string | Buffer>;

  constructor(settings: S3Settings) {
    this.settings = settings;
    this.description = `s3://${settings.bucket}/${settings.prefix}${settings.endpoint ? ` at ${settings.endpoint}` : ''}`;
    this.schedule = { initialPartSize: settings.initialPartSize, maxPartSize: S3_LIMITS.maxPartSize, maxParts: S3_LIMITS.maxParts };

    const checksum = settings.checksumMode === 'when-supported' ? 'WHEN_SUPPORTED' : 'WHEN_REQUIRED';
    const agentOptions = { keepAlive: true, maxSockets: Math.max(8, settings.uploadConcurrency * 2) };
    const config: S3ClientConfig = {
      region: settings.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
      endpoint: settings.endpoint,
      forcePathStyle: settings.forcePathStyle ?? settings.endpoint !== undefined,
      requestChecksumCalculation: checksum,
      responseChecksumValidation: checksum,
      maxAttempts: settings.retry.maxAttempts,
      retryMode: 'standard', // exponential backoff with full jitter; retries 5xx, SlowDown, timeouts, resets
      requestHandler: {
        connectionTimeout: settings.retry.connectTimeoutMs,
        requestTimeout: settings.retry.requestTimeoutMs,
        httpAgent: new HttpAgent(agentOptions),
        httpsAgent: new HttpsAgent(agentOptions),
      },
    };
    if (settings.profile) config.profile = settings.profile;
    if (settings.accessKeyId || settings.secretAccessKey) {
      if (!settings.accessKeyId || !settings.secretAccessKey) {
        throw new PgarkError('CONFIG', 's3-access-key-id and s3-secret-access-key must be set together', {
          hint: 'or set neither and use the standard AWS credential chain (AWS_ACCESS_KEY_ID, a profile, a role)',
        });
      }
      config.credentials = { accessKeyId: settings.accessKeyId, secretAccessKey: settings.secretAccessKey, sessionToken: settings.sessionToken };
    }
    this.client = new S3Client(config);
    this.client.middlewareStack.add(
      (next, context) => async (args) => {
        storageRequests.count++;
        // Swift's s3api (and RGW for lifecycle) insist on Content-MD5 for these.
        const request = args.request as { headers?: Record<string, string>; body?: unknown };
        if ((context.commandName === 'DeleteObjectsCommand' || context.commandName === 'PutBucketLifecycleConfigurationCommand') && request.headers && typeof request.body === 'string') {
          request.headers['content-md5'] = md5Base64(request.body);
        }
        return next(args);
      },
      { step: 'build', name: 'pgarkDeleteObjectsContentMd5' },
    );

    this.sseHeaders = {};
    this.sseReadHeaders = {};
    switch (settings.sse) {
      case 'sse-s3':
        this.sseHeaders = { ServerSideEncryption: 'AES256' };
        break;
      case 'sse-kms':
        this.sseHeaders = { ServerSideEncryption: 'aws:kms', ...(settings.sseKmsKeyId ? { SSEKMSKeyId: settings.sseKmsKeyId } : {}) };
        break;
      case 'sse-c': {
        const key = Buffer.from(settings.sseCustomerKey ?? '', 'base64');
        if (key.length !== 32) {
          throw new PgarkError('CONFIG', 's3-sse-c-key must be the base64 encoding of 32 random bytes', { hint: 'make one with: openssl rand -base64 32' });
        }
        // The SDK base64-encodes the key and adds its MD5 header itself.
        this.sseHeaders = { SSECustomerAlgorithm: 'AES256', SSECustomerKey: key as unknown as string };
        this.sseReadHeaders = this.sseHeaders;
        break;
      }
      case 'none':
        break;
    }
  }

  private keyOf(key: string): string {
    return this.settings.prefix + key;
  }

  private storageClassOf(kind: ObjectKind): { StorageClass?: StorageClass } {
    const storageClass = this.settings.storageClass[kind];
    return storageClass ? { StorageClass: storageClass as StorageClass } : {};
  }

  /** Maps an SDK error to a PgarkError a user can act on. Never includes credentials. */
  private wrap(error: unknown, action: string, key?: string): PgarkError {
    if (error instanceof PgarkError) return error;
    const e = error as SdkError;
    const status = e.$metadata?.httpStatusCode;
    const name = e.name ?? e.code ?? 'Error';
    const what = key ? `${action} ${key} in ${this.description}` : `${action} ${this.description}`;
    if (name === 'AbortError') return new PgarkError('STORAGE', `${what}: aborted`, { cause: error });
    if (name === 'NoSuchKey' || name === 'NotFound' || (status === 404 && name !== 'NoSuchBucket')) {
      return new PgarkError('NOT_FOUND', `${key ?? 'object'} not found in ${this.description}`, { cause: error });
    }
    if (name === 'NoSuchBucket') {
      return new PgarkError('STORAGE', `bucket "${this.settings.bucket}" does not exist (${this.description})`, {
        hint: 'create the bucket first, or fix the bucket name in the repo URL',
        cause: error,
      });
    }
    if (name === 'CredentialsProviderError' || /credential/i.test(e.message ?? '') && status === undefined) {
      return new PgarkError('AUTH', `no S3 credentials found for ${this.description}`, {
        hint: 'set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, s3-access-key-id/s3-secret-access-key, s3-profile, or run with an instance or web-identity role',
        cause: error,
      });
    }
    if (status === 403 || name === 'AccessDenied' || name === 'InvalidAccessKeyId' || name === 'SignatureDoesNotMatch') {
      return new PgarkError('AUTH', `access denied: ${what} (${name})`, {
        hint: 'check the credentials and the bucket policy; the key needs s3:GetObject, s3:PutObject, s3:ListBucket and s3:DeleteObject on the prefix',
        cause: error,
      });
    }
    const networkCode = (e as { code?: string }).code ?? name;
    if (status === undefined && /ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|ENETUNREACH|ETIMEDOUT|ECONNRESET|EPIPE|TimeoutError|EAI_AGAIN|socket hang up/i.test(`${networkCode} ${e.message ?? ''}`)) {
      return new PgarkError('UNREACHABLE', `cannot reach ${this.settings.endpoint ?? 'S3'} to ${action}${key ? ' ' + key : ''} after ${this.settings.retry.maxAttempts} attempts (${networkCode})`, {
        hint: 'check s3-endpoint, the network and that the object store is up',
        cause: error,
      });
    }
    const sseHint = /customer provided keys|SSECustomer/i.test(e.message ?? '')
      ? 'the object is encrypted with SSE-C: set s3-sse=sse-c and the same s3-sse-c-key it was written with'
      : undefined;
    return new PgarkError('STORAGE', `${what} failed: ${name}${status ? ` (HTTP ${status})` : ''}${e.message && e.message !== name ? `: ${e.message}` : ''}`, { cause: error, hint: sseHint });
  }

  async put(key: string, body: Readable | Buffer, options: PutOptions): Promise<{ size: number }> {
    try {
      if (Buffer.isBuffer(body) && body.length <= this.schedule.initialPartSize) {
        await this.putSingle(key, body, options);
        return { size: body.length };
      }
      const source = Buffer.isBuffer(body) ? Readable.from([body]) : body;
      return await this.putMultipart(key, source, options);
    } catch (error) {
      throw this.wrap(error, 'upload', key);
    }
  }

  private async putSingle(key: string, body: Buffer, options: PutOptions): Promise<void> {
    await this.client.send(
      new PutObjectCommand({
        Bucket: this.settings.bucket,
        Key: this.keyOf(key),
        Body: body,
        ContentLength: body.length,
        ContentMD5: md5Base64(body),
        ...this.storageClassOf(options.kind),
        ...this.sseHeaders,
      }),
      { abortSignal: options.signal },
    );
  }

  private async putMultipart(key: string, source: Readable, options: PutOptions): Promise<{ size: number }> {
    const parts = readParts(source, (index) => partSizeFor(index, this.schedule));
    const first = await parts.next();
    const firstPart = first.done ? Buffer.alloc(0) : first.value;
    if (firstPart.length < this.schedule.initialPartSize) {
      // The whole stream fit in less than one part: a single PutObject is cheaper.
      await parts.return(undefined);
      await this.putSingle(key, firstPart, options);
      return { size: firstPart.length };
    }

    const { UploadId: uploadId } = await this.client.send(
      new CreateMultipartUploadCommand({
        Bucket: this.settings.bucket,
        Key: this.keyOf(key),
        ...this.storageClassOf(options.kind),
        ...this.sseHeaders,
      }),
      { abortSignal: options.signal },
    );
    if (!uploadId) throw new PgarkError('STORAGE', `${this.description} returned no UploadId for ${key}`);

    let size = 0;
    try {
      async function* allParts(): AsyncGenerator<Buffer> {
        yield firstPart;
        yield* parts;
      }
      const etags = await forEachPart(
        allParts(),
        {
          concurrency: this.settings.uploadConcurrency,
          maxBytesInFlight: this.settings.uploadConcurrency * this.schedule.initialPartSize,
          signal: options.signal,
        },
        async (part, index) => {
          size += part.length;
          const result = await this.client.send(
            new UploadPartCommand({
              Bucket: this.settings.bucket,
              Key: this.keyOf(key),
              UploadId: uploadId,
              PartNumber: index + 1,
              Body: part,
              ContentLength: part.length,
              ContentMD5: md5Base64(part),
              ...this.sseReadHeaders,
            }),
            { abortSignal: options.signal },
          );
          if (!result.ETag) throw new PgarkError('STORAGE', `${this.description} returned no ETag for part ${index + 1} of ${key}`);
          return result.ETag;
        },
      );
      if (etags.length > S3_LIMITS.maxParts) throw new PgarkError('STORAGE', `${key}: more than ${S3_LIMITS.maxParts} parts`);
      await this.client.send(
        new CompleteMultipartUploadCommand({
          Bucket: this.settings.bucket,
          Key: this.keyOf(key),
          UploadId: uploadId,
          MultipartUpload: { Parts: etags.map((ETag, index) => ({ ETag, PartNumber: index + 1 })) },
        }),
      );
    } catch (error) {
      await this.abortUpload(key, uploadId);
      throw error;
    }
    // RGW answers CompleteMultipartUpload with an empty ETag; HEAD tells the truth.
    const stored = await this.head(key);
    if (!stored || stored.size !== size) {
      throw new PgarkError('STORAGE', `${key}: stored size ${stored?.size ?? 'none'} differs from the ${size} bytes uploaded`);
    }
    return { size };
  }

  private async abortUpload(key: string, uploadId: string): Promise<void> {
    try {
      // No abort signal here: cleaning up must happen even when the put was aborted.
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.settings.bucket, Key: this.keyOf(key), UploadId: uploadId }));
    } catch (error) {
      log.warn('could not abort a multipart upload; a bucket lifecycle rule (AbortIncompleteMultipartUpload) removes it later', {
        key,
        error: (error as Error).name,
      });
    }
  }

  async get(key: string, range?: ByteRange): Promise<Readable> {
    try {
      const result = await this.client.send(
        new GetObjectCommand({
          Bucket: this.settings.bucket,
          Key: this.keyOf(key),
          Range: range ? `bytes=${range.start}-${range.end ?? ''}` : undefined,
          ...this.sseReadHeaders,
        }),
      );
      return result.Body as Readable;
    } catch (error) {
      throw this.wrap(error, 'download', key);
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    try {
      const result = await this.client.send(new HeadObjectCommand({ Bucket: this.settings.bucket, Key: this.keyOf(key), ...this.sseReadHeaders }));
      return { key, size: result.ContentLength ?? 0, lastModified: result.LastModified ?? new Date(0) };
    } catch (error) {
      const wrapped = this.wrap(error, 'inspect', key);
      if (wrapped.code === 'NOT_FOUND') return undefined;
      throw wrapped;
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let continuationToken: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.settings.bucket, Prefix: this.keyOf(prefix), ContinuationToken: continuationToken }),
        );
      } catch (error) {
        throw this.wrap(error, 'list', prefix || '/');
      }
      for (const object of page.Contents ?? []) {
        if (!object.Key) continue;
        yield { key: object.Key.slice(this.settings.prefix.length), size: object.Size ?? 0, lastModified: object.LastModified ?? new Date(0) };
      }
      continuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (continuationToken);
  }

  async delete(keys: readonly string[]): Promise<void> {
    for (let offset = 0; offset < keys.length; offset += 1000) {
      const batch = keys.slice(offset, offset + 1000);
      try {
        const result = await this.client.send(
          new DeleteObjectsCommand({
            Bucket: this.settings.bucket,
            Delete: { Objects: batch.map((key) => ({ Key: this.keyOf(key) })), Quiet: true },
          }),
        );
        const failed = (result.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey');
        if (failed.length > 0) {
          throw new PgarkError('STORAGE', `could not delete ${failed.length} object(s) in ${this.description}, first: ${failed[0]!.Key} (${failed[0]!.Code})`);
        }
      } catch (error) {
        throw this.wrap(error, 'delete objects in', undefined);
      }
    }
  }

  async abortStaleUploads(olderThan: Date): Promise<number> {
    let aborted = 0;
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(new ListMultipartUploadsCommand({ Bucket: this.settings.bucket, Prefix: this.settings.prefix, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }));
      } catch (error) {
        throw this.wrap(error, 'list multipart uploads in');
      }
      for (const upload of page.Uploads ?? []) {
        if (!upload.Key || !upload.UploadId || !upload.Initiated || upload.Initiated >= olderThan) continue;
        await this.abortUpload(upload.Key.slice(this.settings.prefix.length), upload.UploadId);
        aborted++;
      }
      keyMarker = page.IsTruncated ? page.NextKeyMarker : undefined;
      uploadIdMarker = page.IsTruncated ? page.NextUploadIdMarker : undefined;
    } while (keyMarker);
    return aborted;
  }

  /** The bucket's lifecycle rules ([] when it has none). */
  async getLifecycleRules(): Promise<LifecycleRule[]> {
    try {
      const result = await this.client.send(new GetBucketLifecycleConfigurationCommand({ Bucket: this.settings.bucket }));
      return result.Rules ?? [];
    } catch (error) {
      if ((error as SdkError).name === 'NoSuchLifecycleConfiguration') return [];
      throw this.wrap(error, 'read the lifecycle configuration of');
    }
  }

  /** Replaces the bucket's lifecycle configuration (every rule: callers merge). */
  async putLifecycleRules(rules: LifecycleRule[]): Promise<void> {
    try {
      await this.client.send(new PutBucketLifecycleConfigurationCommand({ Bucket: this.settings.bucket, LifecycleConfiguration: { Rules: rules } }));
    } catch (error) {
      throw this.wrap(error, 'set the lifecycle configuration of');
    }
  }

  /** Multipart uploads still open under the repository prefix (used by tests and `check`). */
  async listOpenUploads(): Promise<string[]> {
    const result = await this.client.send(new ListMultipartUploadsCommand({ Bucket: this.settings.bucket, Prefix: this.settings.prefix }));
    return (result.Uploads ?? []).map((u) => u.Key ?? '');
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}
