/** Parsing of repository URLs: file:///path, s3://bucket/prefix, azure://container/prefix. */
import { isAbsolute } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PgarkError } from '../errors.ts';

export type RepoLocation =
  | { scheme: 'file'; path: string }
  | { scheme: 's3'; bucket: string; prefix: string }
  | { scheme: 'azure'; container: string; prefix: string };

const FORMS = 'file:///var/lib/pgark, s3://bucket/prefix or azure://container/prefix';

function urlError(url: string, why: string, hint = `repository URLs look like ${FORMS}`): PgarkError {
  return new PgarkError('REPO_URL', `invalid repository URL "${url}": ${why}`, { hint });
}

/** "a/b/" from "/a//b": no leading slash, one trailing slash, or "" for the root. */
function normalisePrefix(path: string, url: string): string {
  const parts = path.split('/').filter((p) => p !== '');
  if (parts.some((p) => p === '.' || p === '..')) throw urlError(url, 'the prefix may not contain "." or ".." segments');
  return parts.length ? parts.join('/') + '/' : '';
}

export function parseRepoUrl(url: string): RepoLocation {
  const text = url.trim();
  if (isAbsolute(text)) throw urlError(url, 'a bare path is not a URL', `write file://${text}`);
  const match = /^([a-z][a-z0-9+.-]*):\/\/(.*)$/i.exec(text);
  if (!match) throw urlError(url, 'no scheme');
  const scheme = match[1]!.toLowerCase();
  const rest = match[2]!;

  switch (scheme) {
    case 'file': {
      if (!rest.startsWith('/')) throw urlError(url, 'file URLs need an absolute path', 'write file:///absolute/path (three slashes)');
      const path = fileURLToPath('file://' + rest);
      if (path.split('/').includes('..')) throw urlError(url, 'the path may not contain ".."');
      return { scheme: 'file', path: path.replace(/\/+$/, '') || '/' };
    }
    case 's3': {
      const [bucket = '', ...prefixParts] = rest.split('/');
      // The S3 naming rules: 3-63 characters, lower-case letters, digits, dots and hyphens.
      if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) {
        throw urlError(url, `"${bucket}" is not a valid bucket name`, 'bucket names are 3-63 lower-case letters, digits, dots or hyphens');
      }
      return { scheme: 's3', bucket, prefix: normalisePrefix(prefixParts.join('/'), url) };
    }
    case 'azure': {
      const [container = '', ...prefixParts] = rest.split('/');
      if (!/^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$/.test(container)) {
        throw urlError(url, `"${container}" is not a valid container name`, 'container names are 3-63 lower-case letters, digits or single hyphens');
      }
      return { scheme: 'azure', container, prefix: normalisePrefix(prefixParts.join('/'), url) };
    }
    case 'gs':
    case 'gcs':
      throw urlError(url, 'Google Cloud Storage is reached through its S3-compatible API',
        'use s3://bucket/prefix with s3-endpoint=https://storage.googleapis.com and an HMAC key as s3-access-key-id / s3-secret-access-key');
    default:
      throw urlError(url, `unknown scheme "${scheme}"`);
  }
}
