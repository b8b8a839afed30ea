import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PgarkError } from '../../src/errors.ts';
import { parseRepoUrl } from '../../src/storage/url.ts';

test('valid repository URLs', () => {
  assert.deepEqual(parseRepoUrl('file:///var/lib/pgark/'), { scheme: 'file', path: '/var/lib/pgark' });
  assert.deepEqual(parseRepoUrl('s3://my-bucket'), { scheme: 's3', bucket: 'my-bucket', prefix: '' });
  assert.deepEqual(parseRepoUrl('s3://my-bucket/a//b/'), { scheme: 's3', bucket: 'my-bucket', prefix: 'a/b/' });
  assert.deepEqual(parseRepoUrl('azure://backups/prod/db1'), { scheme: 'azure', container: 'backups', prefix: 'prod/db1/' });
});

for (const [url, pattern] of [
  ['/var/lib/pgark', /a bare path is not a URL/],
  ['file://relative/path', /absolute path/],
  ['s3://Bad_Bucket/x', /not a valid bucket name/],
  ['s3://', /not a valid bucket name/],
  ['azure://a--b/x', /not a valid container name/],
  ['ftp://host/x', /unknown scheme "ftp"/],
  ['gs://bucket', /S3-compatible API/],
  ['s3://bucket/../x', /"\." or "\.\."/],
  ['nonsense', /no scheme/],
] as const) {
  test(`invalid repository URL ${url}`, () => {
    assert.throws(() => parseRepoUrl(url), (error: unknown) => error instanceof PgarkError && error.code === 'REPO_URL' && pattern.test(error.message) && !!error.hint);
  });
}
