/**
 * Opens the storage named by the `repo` setting: picks the driver, then wraps it for resumed
 * downloads and the bandwidth limit. Drivers are imported lazily so that a command loads only
 * the SDK it needs (start-up time of `pgark wal-push` matters).
 */
import type { Config } from '../config/load.ts';
import { parseRepoUrl } from './url.ts';
import { ResilientStorage } from './resilient.ts';
import { ThrottledStorage } from './throttle.ts';
import type { S3Settings } from './s3.ts';
import type { RetryPolicy, Storage } from './types.ts';

export function retryPolicyOf(config: Config): RetryPolicy {
  return { maxAttempts: config['retry-max'], requestTimeoutMs: config['request-timeout'], connectTimeoutMs: config['connect-timeout'] };
}

/** The S3 driver's settings for an s3:// location (also used by `pgark lifecycle`). */
export function s3SettingsOf(location: { bucket: string; prefix: string }, config: Config): S3Settings {
  const common = config['s3-storage-class'];
  return {
    bucket: location.bucket,
    prefix: location.prefix,
    region: config['s3-region'],
    endpoint: config['s3-endpoint'],
    forcePathStyle: config['s3-force-path-style'],
    profile: config['s3-profile'],
    accessKeyId: config['s3-access-key-id'],
    secretAccessKey: config['s3-secret-access-key'],
    sessionToken: config['s3-session-token'],
    storageClass: {
      wal: config['s3-storage-class-wal'] ?? common,
      data: config['s3-storage-class-data'] ?? common,
      meta: config['s3-storage-class-meta'] ?? common,
    },
    sse: config['s3-sse'],
    sseKmsKeyId: config['s3-sse-kms-key-id'],
    sseCustomerKey: config['s3-sse-c-key'],
    checksumMode: config['s3-checksum-mode'],
    initialPartSize: config['part-size'],
    uploadConcurrency: config['process-max'],
    retry: retryPolicyOf(config),
  };
}

export async function openStorage(repoUrl: string, config: Config): Promise<Storage> {
  const location = parseRepoUrl(repoUrl);
  const retry = retryPolicyOf(config);
  let driver: Storage;
  switch (location.scheme) {
    case 'file': {
      const { FileStorage } = await import('./file.ts');
      driver = new FileStorage(location.path);
      break;
    }
    case 's3': {
      const { S3Storage } = await import('./s3.ts');
      driver = new S3Storage(s3SettingsOf(location, config));
      break;
    }
    case 'azure': {
      const { createAzureStorage } = await import('./azure.ts');
      driver = await createAzureStorage({
        container: location.container,
        prefix: location.prefix,
        connectionString: config['azure-connection-string'],
        account: config['azure-account'],
        key: config['azure-key'],
        sas: config['azure-sas'],
        endpoint: config['azure-endpoint'],
        accessTier: config['azure-access-tier'] || undefined,
        initialPartSize: config['part-size'],
        uploadConcurrency: config['process-max'],
        retry,
      });
      break;
    }
  }
  let storage: Storage = new ResilientStorage(driver, retry);
  if (config['bandwidth-limit'] > 0) storage = new ThrottledStorage(storage, config['bandwidth-limit']);
  return storage;
}
