/**
 * pgark on an unreliable object store, through the fault-injecting proxy in front of Ceph RGW
 * (and Azurite): with 5 % 500s, 5 % 503 SlowDown and 5 % connection resets (before the request
 * is forwarded, after the server answered, in the middle of the answer) a 30 MiB put and get
 * still complete byte-identical; a dead server makes a put fail fast with one clear line;
 * a put that fails or is interrupted (SIGINT, SIGTERM) leaves no multipart upload open and
 * nothing stored; a download whose body is cut resumes with a ranged request.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { PassThrough } from 'node:stream';
import { describe, test, type TestContext } from 'node:test';
import { NODE_BIN, PGARK_BIN, pgark, SAFE_BASE_ENV } from '../support/cli.ts';
import { assertCleanFailure, azureSettings, MiB, s3Settings, sha256 } from '../support/cli-checks.ts';
import { startFaultProxy, type FaultKind, type FaultProxy, type FaultStats, type RequestInfo } from '../support/fault-proxy.ts';
import {
  azureEnv, azureEnvVia, createTestBucket, createTestContainer, listBlobNames, listKeys, listOpenMultipartUploads, listUncommittedBlobs,
  s3Env, s3EnvVia, skipServers, type TestBucket,
} from '../support/objstores.ts';

/** Generous: the test machine is shared and at times many times slower than idle. */
const SLOW = { timeoutMs: 540_000 };
const FAULTS = { errorRate: 0.05, slowDownRate: 0.05, resetRate: 0.05, resetPhases: ['before', 'after-upstream', 'mid-response'] as const };

async function proxyFor(t: TestContext, target: string): Promise<FaultProxy> {
  const proxy = await startFaultProxy({ target });
  t.after(() => proxy.close());
  return proxy;
}

function injectedTotal(stats: FaultStats): number {
  return Object.values(stats.injected).reduce((a, b) => a + b, 0);
}

/**
 * The dice at FAULTS' rates for every request, plus `forced` faults on the first request that
 * matches each rule, so that every run sees each kind of fault at the places that matter
 * whatever the dice say. Records the Range header of every GET.
 */
function faultsWithForced(proxy: FaultProxy, seed: number, forced: { kind: FaultKind; match: (req: RequestInfo) => boolean }[], ranges: string[]) {
  const pending = [...forced];
  proxy.setFaults({
    ...FAULTS,
    resetPhases: [...FAULTS.resetPhases],
    seed,
    filter: (req) => {
      // Known limitation, left out of the dice: when the answer to CreateMultipartUpload is lost
      // (a reset after the server created the upload), the SDK's retry creates a second upload
      // and the first stays open, empty, until a lifecycle rule removes it.
      if (req.method === 'POST' && /[?&]uploads(=|&|$)/.test(req.url)) return false;
      if (req.method === 'GET' && typeof req.headers.range === 'string') ranges.push(`${req.url} ${req.headers.range}`);
      const index = pending.findIndex((rule) => rule.match(req));
      if (index >= 0) proxy.injectNext(pending.splice(index, 1)[0]!.kind);
      return true;
    },
  });
  return pending;
}

/** Azure Put Block of the block with index `n` (pgark's block ids end in the zero-padded index). */
function stageBlock(n: number): (req: RequestInfo) => boolean {
  return (req) => {
    if (req.method !== 'PUT' || !/[?&]comp=block(&|$)/.test(req.url)) return false;
    const id = /[?&]blockid=([^&]+)/.exec(req.url)?.[1];
    return id !== undefined && Buffer.from(decodeURIComponent(id), 'base64').toString('latin1').endsWith(`-${String(n).padStart(6, '0')}`);
  };
}

function faultsOn(proxy: FaultProxy, method: string, pattern: RegExp): number {
  return proxy.log.filter((r) => r.fault !== null && r.method === method && pattern.test(r.url)).length;
}

describe('retries, failures and interruptions against real servers', { concurrency: true, skip: skipServers() }, () => {
  test('RGW with 5% 500s, 5% SlowDown, 5% resets: 30 MiB put and get are byte-identical', async (t) => {
    const bucket = await createTestBucket('rgw', { prefix: 'faults', t });
    const proxy = await proxyFor(t, bucket.env.endpoint);
    const env = s3Settings(s3EnvVia(bucket.env, proxy.url));
    const args = ['--repo', `s3://${bucket.name}/r`, '--part-size', '5MiB'];
    const data = randomBytes(30 * MiB);
    const ranges: string[] = [];

    const uploadPart = (n: number) => (req: RequestInfo) => req.method === 'PUT' && new RegExp(`[?&]partNumber=${n}&`).test(req.url);
    const left = faultsWithForced(proxy, 7, [
      { kind: 'resetBefore', match: uploadPart(2) },
      { kind: 'error500', match: uploadPart(3) },
      { kind: 'slowDown503', match: uploadPart(4) },
      { kind: 'resetAfterUpstream', match: uploadPart(5) },
      // the upload is complete on the server, but the client never hears it: the retried
      // CompleteMultipartUpload must still succeed
      { kind: 'resetAfterUpstream', match: (req) => req.method === 'POST' && /[?&]uploadId=/.test(req.url) },
      { kind: 'slowDown503', match: (req) => req.method === 'PUT' && /manifest\.json/.test(req.url) },
    ], ranges);
    const put = await pgark(['put', 'big', ...args, '--compression', 'zstd'], { env, stdin: data, ...SLOW });
    assert.equal(put.code, 0, `put through faults: ${put.stderr}`);
    assert.deepEqual(left, [], 'every forced fault happened');
    const putStats = structuredClone(proxy.stats);
    assert.ok(injectedTotal(putStats) >= 6, `faults injected during the put: ${JSON.stringify(putStats.injected)}`);
    assert.ok(faultsOn(proxy, 'PUT', /partNumber=/) >= 4, 'faults hit part uploads');
    assert.deepEqual(await listOpenMultipartUploads(bucket.client, bucket.name), [], 'no upload left open');

    proxy.resetStats();
    const left2 = faultsWithForced(proxy, 11, [
      { kind: 'resetMidResponse', match: (req) => req.method === 'GET' && /\/streams\/big\/data-/.test(req.url) },
      { kind: 'error500', match: (req) => req.method === 'GET' && /manifest\.json/.test(req.url) },
    ], ranges);
    const get = await pgark(['get', 'big', ...args], { env, ...SLOW });
    assert.equal(get.code, 0, `get through faults: ${get.stderr}`);
    assert.deepEqual(left2, []);
    assert.equal(get.stdout.length, data.length);
    assert.equal(sha256(get.stdout), sha256(data), 'byte-identical through the faults');
    assert.ok(injectedTotal(proxy.stats) >= 2, `faults injected during the get: ${JSON.stringify(proxy.stats.injected)}`);
    assert.ok(faultsOn(proxy, 'GET', /\/streams\/big\/data-/) >= 1, 'faults hit the data download');
    assert.ok(ranges.some((r) => /\/streams\/big\/data-.* bytes=[1-9]\d*-$/.test(r)), `the cut download resumed with a ranged request: ${ranges.join('; ')}`);
    assert.equal((await listKeys(bucket.client, bucket.name)).length, 2, 'one data object and one manifest');
  });

  test('Azurite with 5% 500s, 5% ServerBusy, 5% resets: 30 MiB put and get are byte-identical', async (t) => {
    const direct = azureEnv();
    const proxy = await proxyFor(t, new URL(direct.blobEndpoint).origin);
    const container = await createTestContainer({ prefix: 'faults', t });
    const env = azureSettings(azureEnvVia(direct, proxy.url));
    const args = ['--repo', `azure://${container.name}/r`, '--part-size', '5MiB'];
    const data = randomBytes(30 * MiB);
    const ranges: string[] = [];

    const left = faultsWithForced(proxy, 5, [
      { kind: 'resetBefore', match: stageBlock(1) },
      { kind: 'error500', match: stageBlock(2) },
      { kind: 'slowDown503', match: stageBlock(3) },
      { kind: 'resetAfterUpstream', match: (req) => req.method === 'PUT' && /[?&]comp=blocklist/.test(req.url) },
    ], ranges);
    const put = await pgark(['put', 'big', ...args], { env, stdin: data, ...SLOW });
    assert.equal(put.code, 0, `put through faults: ${put.stderr}`);
    assert.deepEqual(left, [], 'every forced fault happened');
    assert.ok(injectedTotal(proxy.stats) >= 4, `faults injected during the put: ${JSON.stringify(proxy.stats.injected)}`);
    assert.ok(faultsOn(proxy, 'PUT', /comp=block/) >= 3, 'faults hit block uploads');

    proxy.resetStats();
    const left2 = faultsWithForced(proxy, 9, [
      { kind: 'resetMidResponse', match: (req) => req.method === 'GET' && /\/streams\/big\/data-/.test(req.url) },
    ], ranges);
    const get = await pgark(['get', 'big', ...args], { env, ...SLOW });
    assert.equal(get.code, 0, `get through faults: ${get.stderr}`);
    assert.deepEqual(left2, []);
    assert.equal(sha256(get.stdout), sha256(data), 'byte-identical through the faults');
    assert.ok(faultsOn(proxy, 'GET', /\/streams\/big\/data-/) >= 1, 'faults hit the data download');
    assert.deepEqual(await listUncommittedBlobs(container.client), [], 'no uncommitted blocks');
    assert.equal((await listBlobNames(container.client)).length, 2);
  });

  for (const how of ['refuse', 'reset'] as const) {
    test(`server down (${how === 'refuse' ? 'connections refused' : 'connections reset'}): put fails fast with one clear line, nothing left`, async (t) => {
      const bucket = await createTestBucket('rgw', { prefix: `down-${how}`, t });
      const proxy = await proxyFor(t, bucket.env.endpoint);
      await proxy.setDown(true, how);
      const started = Date.now();
      const put = await pgark(['put', 'x', '--repo', `s3://${bucket.name}/r`, '--retry-max', '4', '--part-size', '5MiB'], {
        env: s3Settings(s3EnvVia(bucket.env, proxy.url)), stdin: randomBytes(12 * MiB), timeoutMs: 90_000,
      });
      const seconds = (Date.now() - started) / 1000;
      const { error } = assertCleanFailure(put, 'put', /cannot reach http:\/\/127\.0\.0\.1:\d+ .*after 4 attempts/);
      assert.ok(seconds < 60, `failed after ${seconds.toFixed(1)} s (bound: 60 s with --retry-max 4)`);
      t.diagnostic(`${error} (after ${seconds.toFixed(1)} s)`);
      await proxy.setDown(false);
      assert.deepEqual(await listOpenMultipartUploads(bucket.client, bucket.name), []);
      assert.deepEqual(await listKeys(bucket.client, bucket.name), []);
    });
  }

  test('a part upload that keeps failing: one clear line, the multipart upload is aborted, nothing stored', async (t) => {
    const bucket = await createTestBucket('rgw', { prefix: 'part-fails', t });
    const proxy = await proxyFor(t, bucket.env.endpoint);
    proxy.setFaults({ errorRate: 1, filter: (req) => req.method === 'PUT' && /[?&]partNumber=3&/.test(req.url) });
    const put = await pgark(['put', 'x', '--repo', `s3://${bucket.name}/r`, '--retry-max', '3', '--part-size', '5MiB', '--compression', 'none'], {
      env: s3Settings(s3EnvVia(bucket.env, proxy.url)), stdin: randomBytes(22 * MiB), ...SLOW,
    });
    assertCleanFailure(put, 'put', /upload streams\/x\/data-.* failed: InternalError \(HTTP 500\)/);
    assert.equal(proxy.stats.injected.error500, 3, 'three attempts of the failing part (--retry-max 3)');
    assert.ok(proxy.log.some((r) => r.method === 'DELETE' && /[?&]uploadId=/.test(r.url) && r.status === 204), 'AbortMultipartUpload was sent');
    assert.deepEqual(await listOpenMultipartUploads(bucket.client, bucket.name), [], 'no upload left open');
    assert.deepEqual(await listKeys(bucket.client, bucket.name), [], 'no data object, no manifest');
  });

  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    test(`${signal} in the middle of a put aborts the multipart upload and leaves nothing`, async (t) => {
      const bucket = await createTestBucket('rgw', { prefix: signal.toLowerCase(), t });
      const env: Record<string, string | undefined> = { ...process.env, ...SAFE_BASE_ENV, ...s3Settings(bucket.env) };
      const child = spawn(NODE_BIN, [PGARK_BIN, 'put', 'x', '--repo', `s3://${bucket.name}/r`, '--part-size', '5MiB', '--compression', 'none'], {
        env: env as NodeJS.ProcessEnv, stdio: ['pipe', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      child.stdin.on('error', () => {});
      const exited = once(child, 'exit');
      t.after(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); });
      // 12 MiB: two parts go up, the third waits for more input that never comes
      const input = new PassThrough();
      input.pipe(child.stdin);
      input.write(randomBytes(12 * MiB));

      const deadline = Date.now() + 120_000;
      let open = await listOpenMultipartUploads(bucket.client, bucket.name);
      while (open.length === 0 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        open = await listOpenMultipartUploads(bucket.client, bucket.name);
      }
      assert.equal(open.length, 1, `the put has a multipart upload open; stderr: ${stderr}`);
      await waitForParts(bucket, open[0]!.key, open[0]!.uploadId, 2);

      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
      const [code, killedBy] = (await exited) as [number | null, string | null];
      clearTimeout(timer);
      assert.equal(killedBy, null, `exited by itself, not killed; stderr: ${stderr}`);
      assert.equal(code, 130, `exit status 130; stderr: ${stderr}`);
      assertCleanFailure({ code, stdout: Buffer.alloc(0), stderr }, 'put', new RegExp(`^pgark put: error: interrupted by ${signal}$`));
      assert.deepEqual(await listOpenMultipartUploads(bucket.client, bucket.name), [], 'the multipart upload was aborted');
      assert.deepEqual(await listKeys(bucket.client, bucket.name), [], 'nothing stored');
      input.destroy();
    });
  }

  test('a download cut in the middle of its body resumes with a ranged request, byte-identical', async (t) => {
    const bucket = await createTestBucket('rgw', { prefix: 'resume', t });
    const data = randomBytes(12 * MiB);
    const repo = ['--repo', `s3://${bucket.name}/r`];
    const put = await pgark(['put', 's', ...repo, '--compression', 'none'], { env: s3Settings(bucket.env), stdin: data, ...SLOW });
    assert.equal(put.code, 0, put.stderr);

    const proxy = await proxyFor(t, bucket.env.endpoint);
    const ranges: string[] = [];
    let cuts = 0;
    proxy.setFaults({
      filter: (req) => {
        const isData = req.method === 'GET' && /\/streams\/s\/data-/.test(req.url);
        if (isData && typeof req.headers.range === 'string') ranges.push(req.headers.range);
        if (isData && cuts < 3) { cuts++; proxy.injectNext('resetMidResponse'); }
        return isData;
      },
    });
    const get = await pgark(['get', 's', ...repo], { env: s3Settings(s3EnvVia(bucket.env, proxy.url)), ...SLOW });
    assert.equal(get.code, 0, get.stderr);
    assert.equal(proxy.stats.injected.resetMidResponse, 3, 'the body was cut three times');
    assert.equal(ranges.length, 3, `three ranged re-requests: ${ranges.join(', ')}`);
    const starts = ranges.map((r) => Number(/^bytes=(\d+)-$/.exec(r)?.[1]));
    assert.ok(starts.every((s, i) => s > 0 && (i === 0 || s >= starts[i - 1]!)), `each resumes where the last stopped: ${ranges.join(', ')}`);
    assert.ok(proxy.log.some((r) => r.status === 206), 'the server answered a partial content');
    assert.equal(sha256(get.stdout), sha256(data), 'byte-identical');
  });
});

/** Waits until `count` parts of the upload are on the server. */
async function waitForParts(bucket: TestBucket, key: string, uploadId: string, count: number): Promise<void> {
  const { ListPartsCommand } = await import('@aws-sdk/client-s3');
  const deadline = Date.now() + 120_000;
  for (;;) {
    const parts = await bucket.client.send(new ListPartsCommand({ Bucket: bucket.name, Key: key, UploadId: uploadId }));
    if ((parts.Parts ?? []).length >= count) return;
    if (Date.now() > deadline) throw new Error(`only ${(parts.Parts ?? []).length} parts uploaded after 120 s`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
