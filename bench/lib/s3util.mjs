// bench/lib/s3util.mjs — small S3 helpers for the benchmark scripts (one Node process instead of several
// `aws` CLI start-ups, which cost seconds each on a loaded machine). Uses the project's @aws-sdk/client-s3.
//   node s3util.mjs size  s3://bucket/prefix/       total bytes and object count under the prefix ("BYTES COUNT")
//   node s3util.mjs rm    s3://bucket/prefix/       delete everything under the prefix (and abort open uploads)
//   node s3util.mjs mb    bucket                    create the bucket if missing
//   node s3util.mjs parts s3://bucket/key           multipart layout: "multipart: N parts; sizes ..." from
//                                                    HEAD ?partNumber= (first, around the 900th, last)
// Bundled into $BENCH_HOME/bin/s3util.mjs by lib/services.sh (starts in a fraction of the unbundled SDK's time).
// Env: S3_URL (endpoint), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION.
import { createHash } from 'node:crypto';
import {
  S3Client, ListObjectsV2Command, DeleteObjectsCommand, HeadObjectCommand, CreateBucketCommand, HeadBucketCommand,
  ListMultipartUploadsCommand, AbortMultipartUploadCommand,
} from '@aws-sdk/client-s3';

const client = new S3Client({
  endpoint: process.env.S3_URL, region: process.env.AWS_REGION ?? 'us-east-1', forcePathStyle: true,
  requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED',
});
client.middlewareStack.add((next, context) => async (args) => {
  if (context.commandName === 'DeleteObjectsCommand' && typeof args.request.body === 'string') {
    args.request.headers['content-md5'] = createHash('md5').update(args.request.body).digest('base64');
  }
  return next(args);
}, { step: 'build', name: 'benchDeleteMd5' });

function parse(url) {
  const m = /^s3:\/\/([^/]+)\/?(.*)$/.exec(url ?? '');
  if (!m) throw new Error(`not an s3:// URL: ${url}`);
  return { Bucket: m[1], key: m[2] };
}
async function* list(Bucket, Prefix) {
  let ContinuationToken;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket, Prefix, ContinuationToken }));
    yield* page.Contents ?? [];
    ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (ContinuationToken);
}

const [cmd, arg] = process.argv.slice(2);
switch (cmd) {
  case 'size': {
    const { Bucket, key } = parse(arg);
    let bytes = 0, count = 0;
    for await (const o of list(Bucket, key)) { bytes += o.Size ?? 0; count++; }
    console.log(`${bytes} ${count}`);
    break;
  }
  case 'rm': {
    const { Bucket, key } = parse(arg);
    let batch = [];
    const flush = async () => {
      if (batch.length) await client.send(new DeleteObjectsCommand({ Bucket, Delete: { Objects: batch, Quiet: true } }));
      batch = [];
    };
    for await (const o of list(Bucket, key)) { batch.push({ Key: o.Key }); if (batch.length === 1000) await flush(); }
    await flush();
    const uploads = await client.send(new ListMultipartUploadsCommand({ Bucket, Prefix: key }));
    for (const u of uploads.Uploads ?? []) await client.send(new AbortMultipartUploadCommand({ Bucket, Key: u.Key, UploadId: u.UploadId }));
    break;
  }
  case 'mb': {
    try { await client.send(new HeadBucketCommand({ Bucket: arg })); } catch { await client.send(new CreateBucketCommand({ Bucket: arg })); }
    break;
  }
  case 'parts': {
    const { Bucket, key: Key } = parse(arg);
    const whole = await client.send(new HeadObjectCommand({ Bucket, Key }));
    const etag = (whole.ETag ?? '').replaceAll('"', '');
    const n = Number(/-(\d+)$/.exec(etag)?.[1] ?? 0);
    if (!n) { console.log(`single PUT (${whole.ContentLength} bytes)`); break; }
    const want = [...new Set([1, 2, 899, 900, 901, 902, n - 1, n].filter((p) => p >= 1 && p <= n))];
    const sizes = [];
    for (const p of want) {
      try { sizes.push(`part${p}=${(await client.send(new HeadObjectCommand({ Bucket, Key, PartNumber: p }))).ContentLength}`); }
      catch (e) { sizes.push(`part${p}=? (${e.name})`); }
    }
    console.log(`multipart: ${n} parts, ${whole.ContentLength} bytes; ${sizes.join(' ')}`);
    break;
  }
  default:
    console.error('usage: s3util.mjs size|rm|mb|parts ARG'); process.exit(2);
}
