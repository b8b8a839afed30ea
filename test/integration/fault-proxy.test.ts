// The fault-injecting proxy against a tiny local HTTP server (no S3 here): pass-through is
// byte-identical and streamed, each fault kind happens at about its rate, seeds are repeatable.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import type net from 'node:net';
import { after, before, test } from 'node:test';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.ts';

const MiB = 1024 * 1024;

/** deterministic bytes: block i of 32 bytes is sha256(i) */
function bytes(n: number): Buffer {
  const out = Buffer.alloc(n);
  for (let off = 0, i = 0; off < n; off += 32, i++) createHash('sha256').update(String(i)).digest().copy(out, off);
  return out;
}
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

interface Upload { url: string; bytes: number; sha256: string; complete: boolean }
const uploads: Upload[] = [];
let firstUploadChunk: (() => void) | null = null;
let upstream: http.Server;
let upstreamUrl: string;
const big = bytes(20 * MiB);

before(async () => {
  upstream = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (req.method === 'PUT' || req.method === 'POST') {
      const h = createHash('sha256');
      const u: Upload = { url: req.url ?? '', bytes: 0, sha256: '', complete: false };
      uploads.push(u);
      req.on('data', (c: Buffer) => { h.update(c); u.bytes += c.length; firstUploadChunk?.(); firstUploadChunk = null; });
      req.on('end', () => {
        u.complete = true;
        u.sha256 = h.digest('hex');
        const body = JSON.stringify({ bytes: u.bytes, sha256: u.sha256 });
        res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
        res.end(body);
      });
      return;
    }
    if (url.pathname === '/echo-headers') {
      const body = JSON.stringify(req.rawHeaders);
      res.writeHead(200, ['Content-Type', 'application/json', 'X-Dup', 'a', 'X-Dup', 'b', 'X-MixedCase', 'yes', 'Content-Length', String(Buffer.byteLength(body))]);
      res.end(body);
      return;
    }
    const m = /^\/(bytes|chunked)\/(\d+)$/.exec(url.pathname);
    if (m) {
      const n = Number(m[2]);
      const data = n === big.length ? big : bytes(n);
      if (m[1] === 'bytes') res.setHeader('Content-Length', n);
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', ETag: `"${sha(data).slice(0, 32)}"` });
      // several writes, as a real server streaming a body would
      for (let off = 0; off < n; off += 256 * 1024) res.write(data.subarray(off, Math.min(n, off + 256 * 1024)));
      res.end();
      return;
    }
    res.writeHead(404, { 'Content-Length': 0 });
    res.end();
  });
  upstream.keepAliveTimeout = 65_000;
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  upstreamUrl = `http://127.0.0.1:${(upstream.address() as net.AddressInfo).port}`;
});
after(() => { upstream.closeAllConnections(); upstream.close(); });

interface Result { status?: number; body?: Buffer; headers?: http.IncomingHttpHeaders; rawHeaders?: string[]; error?: string }

/** one request; errors (resets, truncated bodies) are returned, not thrown */
function request(base: string, agent: http.Agent, method: string, path: string, body?: Buffer | ((req: http.ClientRequest) => void), headers: http.OutgoingHttpHeaders = {}): Promise<Result> {
  return new Promise((resolve) => {
    const req = http.request(`${base}${path}`, { method, agent, headers: { ...(Buffer.isBuffer(body) ? { 'Content-Length': body.length } : {}), ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        if (!res.complete) resolve({ status: res.statusCode, error: 'truncated' });
        else resolve({ status: res.statusCode, body: Buffer.concat(chunks), headers: res.headers, rawHeaders: res.rawHeaders });
      });
      res.on('error', (e: NodeJS.ErrnoException) => resolve({ status: res.statusCode, error: e.code ?? e.message }));
      res.on('aborted', () => resolve({ status: res.statusCode, error: 'aborted' }));
    });
    req.on('error', (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message }));
    if (typeof body === 'function') body(req);
    else req.end(body);
  });
}

async function withProxy(faults: Parameters<typeof startFaultProxy>[0]['faults'], fn: (p: FaultProxy, agent: http.Agent) => Promise<void>): Promise<void> {
  const proxy = await startFaultProxy({ target: upstreamUrl, faults });
  const agent = new http.Agent({ keepAlive: true });
  try { await fn(proxy, agent); } finally { agent.destroy(); await proxy.close(); }
}

test('pass-through: 20 MiB up and down byte-identical, headers kept (Host included), bodies streamed', async () => {
  await withProxy({}, async (proxy, agent) => {
    uploads.length = 0;
    // upload in two steps: the upstream must see the first bytes before the client sends the rest
    const seen = new Promise<void>((r) => { firstUploadChunk = r; });
    const up = await request(proxy.url, agent, 'PUT', '/obj?partNumber=1', (req) => {
      req.setHeader('Content-Length', big.length);
      req.write(big.subarray(0, MiB));
      const t = setTimeout(() => req.destroy(new Error('upstream saw nothing: the proxy buffers the request body')), 5000);
      void seen.then(() => { clearTimeout(t); req.end(big.subarray(MiB)); });
    });
    assert.equal(up.error, undefined);
    assert.equal(up.status, 200);
    assert.deepEqual(JSON.parse(up.body!.toString()), { bytes: big.length, sha256: sha(big) });
    assert.equal(uploads.length, 1);
    assert.equal(uploads[0]!.url, '/obj?partNumber=1');

    for (const kind of ['bytes', 'chunked']) {
      const down = await request(proxy.url, agent, 'GET', `/${kind}/${big.length}`);
      assert.equal(down.status, 200);
      assert.equal(down.body!.length, big.length, kind);
      assert.equal(sha(down.body!), sha(big), kind);
      if (kind === 'bytes') assert.equal(down.headers!['content-length'], String(big.length));
      else assert.equal(down.headers!['transfer-encoding'], 'chunked');
    }
    const head = await request(proxy.url, agent, 'HEAD', '/bytes/1000');
    assert.deepEqual([head.status, head.headers!['content-length'], head.body!.length], [200, '1000', 0]);

    const echo = await request(proxy.url, agent, 'GET', '/echo-headers', undefined, { 'X-Amz-Date': '20260101T000000Z', 'x-lower': 'v' });
    const sent = JSON.parse(echo.body!.toString()) as string[];
    const pairs = Object.fromEntries(Array.from({ length: sent.length / 2 }, (_, i) => [sent[2 * i]!, sent[2 * i + 1]!]));
    assert.equal(pairs.Host, `127.0.0.1:${proxy.port}`, 'the Host the client sent (and signed) reaches the server');
    assert.equal(pairs['X-Amz-Date'], '20260101T000000Z', 'header name case kept');
    assert.equal(pairs['x-lower'], 'v');
    assert.deepEqual(echo.rawHeaders!.filter((_, i, a) => i % 2 === 1 && a[i - 1] === 'X-Dup'), ['a', 'b'], 'duplicate response headers kept');
    assert.ok(echo.rawHeaders!.includes('X-MixedCase'));
    assert.equal(proxy.stats.forwarded, proxy.stats.requests);
    assert.deepEqual(Object.values(proxy.stats.injected), [0, 0, 0, 0, 0]);
  });
});

test('each fault kind happens at about its rate on GETs, and the client sees it', async () => {
  const N = 800; // sequential, so the seed fixes which request gets which fault
  await withProxy({ errorRate: 0.1, slowDownRate: 0.05, resetRate: 0.15, seed: 42 }, async (proxy, agent) => {
    const seen = { ok: 0, e500: 0, e503: 0, reset: 0, other: 0 };
    for (let i = 0; i < N; i++) {
      const r = await request(proxy.url, agent, 'GET', '/bytes/4000');
      if (r.error) seen.reset++;
      else if (r.status === 200 && r.body!.length === 4000) seen.ok++;
      else if (r.status === 500 && /<Code>InternalError<\/Code>/.test(r.body!.toString())) seen.e500++;
      else if (r.status === 503 && /<Code>SlowDown<\/Code>/.test(r.body!.toString())) seen.e503++;
      else seen.other++;
    }
    const inj = proxy.stats.injected;
    assert.equal(proxy.stats.requests, N);
    assert.equal(seen.other, 0);
    assert.equal(seen.e500, inj.error500);
    assert.equal(seen.e503, inj.slowDown503);
    assert.equal(seen.reset, inj.resetBefore + inj.resetAfterUpstream + inj.resetMidResponse);
    const near = (count: number, rate: number, what: string) =>
      assert.ok(Math.abs(count / N - rate) < 4 * Math.sqrt((rate * (1 - rate)) / N) + 0.005, `${what}: ${count}/${N}, expected about ${rate}`);
    near(inj.error500, 0.1, '500');
    near(inj.slowDown503, 0.05, '503');
    near(seen.reset, 0.15, 'resets');
    for (const k of ['resetBefore', 'resetAfterUpstream', 'resetMidResponse'] as const) near(inj[k], 0.05, k);
    near(seen.ok, 0.7, 'passed');
  });
});

test('faults on uploads: what reached the server matches the fault phase', async () => {
  const N = 300;
  const body = bytes(64 * 1024);
  await withProxy({ errorRate: 0.1, resetRate: 0.3, seed: 7 }, async (proxy, agent) => {
    uploads.length = 0;
    let ok = 0;
    for (let i = 0; i < N; i++) {
      const r = await request(proxy.url, agent, 'PUT', `/up/${i}`, body);
      if (!r.error && r.status === 200) {
        ok++;
        assert.equal(JSON.parse(r.body!.toString()).sha256, sha(body));
      }
    }
    const inj = proxy.stats.injected;
    for (const k of ['error500', 'resetBefore', 'resetAfterUpstream', 'resetMidResponse'] as const) assert.ok(inj[k] > 10, `${k} happened (${inj[k]})`);
    assert.equal(ok, N - inj.error500 - inj.resetBefore - inj.resetAfterUpstream - inj.resetMidResponse);
    // 500s and 'before' resets never reach the server; the other resets come after a complete upload
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(proxy.stats.forwarded, N - inj.error500 - inj.resetBefore);
    assert.equal(uploads.filter((u) => u.complete && u.sha256 === sha(body)).length, proxy.stats.forwarded);
    assert.equal(uploads.length, proxy.stats.forwarded);
    const byFault = new Map(proxy.log.map((r) => [r.url, r.fault]));
    for (const u of uploads) assert.ok([null, 'resetAfterUpstream', 'resetMidResponse'].includes(byFault.get(u.url) ?? null), u.url);
  });
});

test('mid-response resets deliver some bytes, then the connection breaks', async () => {
  await withProxy({ resetRate: 1, resetPhases: ['mid-response'], seed: 3 }, async (proxy, agent) => {
    for (const path of ['/bytes/100000', '/chunked/100000', '/bytes/1']) {
      const got: number[] = [];
      for (let i = 0; i < 20; i++) {
        const r = await new Promise<{ n: number; error?: string }>((resolve) => {
          let n = 0;
          const req = http.get(`${proxy.url}${path}`, { agent }, (res) => {
            res.on('data', (c: Buffer) => { n += c.length; });
            res.on('end', () => resolve({ n, error: res.complete ? undefined : 'incomplete' }));
            res.on('error', (e: NodeJS.ErrnoException) => resolve({ n, error: e.code }));
          });
          req.on('error', (e: NodeJS.ErrnoException) => resolve({ n, error: e.code }));
        });
        assert.ok(r.error, `${path}: the client must see a failure`);
        got.push(r.n);
      }
      if (path !== '/bytes/1') assert.ok(got.some((n) => n > 0 && n < 100000), `${path}: partial bodies seen (${got.join(' ')})`);
    }
    assert.equal(proxy.stats.injected.resetMidResponse, 60);
  });
});

test('same seed, same faults; another seed, other faults', async () => {
  const run = async (seed: number) => {
    let seq = '';
    await withProxy({ errorRate: 0.2, slowDownRate: 0.2, resetRate: 0.2, seed }, async (proxy, agent) => {
      for (let i = 0; i < 60; i++) await request(proxy.url, agent, 'GET', '/bytes/10');
      seq = proxy.log.map((r) => r.fault ?? '-').join(',');
    });
    return seq;
  };
  const a = await run(11);
  assert.equal(await run(11), a);
  assert.notEqual(await run(12), a);
});

test('latency, injectNext, filter, setFaults', async () => {
  await withProxy({ latencyMs: 60 }, async (proxy, agent) => {
    const t0 = performance.now();
    for (let i = 0; i < 5; i++) assert.equal((await request(proxy.url, agent, 'GET', '/bytes/10')).status, 200);
    assert.ok(performance.now() - t0 >= 5 * 60 - 5);

    proxy.setFaults({});
    proxy.injectNext('slowDown503', 2);
    assert.equal((await request(proxy.url, agent, 'GET', '/bytes/10')).status, 503);
    assert.equal((await request(proxy.url, agent, 'GET', '/bytes/10')).status, 503);
    assert.equal((await request(proxy.url, agent, 'GET', '/bytes/10')).status, 200);
    proxy.injectNext('resetBefore');
    assert.ok((await request(proxy.url, agent, 'GET', '/bytes/10')).error);

    // only uploads get faults
    proxy.setFaults({ errorRate: 1, filter: (r) => r.method === 'PUT' });
    assert.equal((await request(proxy.url, agent, 'GET', '/bytes/10')).status, 200);
    assert.equal((await request(proxy.url, agent, 'PUT', '/f', Buffer.from('x'))).status, 500);
    assert.throws(() => proxy.setFaults({ errorRate: 0.6, resetRate: 0.6 }), /> 1/);
  });
});

test('setDown: refused or reset connections, then back on the same port', async () => {
  await withProxy({}, async (proxy, agent) => {
    assert.equal((await request(proxy.url, agent, 'GET', '/bytes/10')).status, 200);
    await proxy.setDown(true);
    // a kept-alive connection of the agent was reset: reusing it fails with ECONNRESET, as with a
    // real server going away; new connections are refused
    const fresh = new http.Agent();
    assert.equal((await request(proxy.url, fresh, 'GET', '/bytes/10')).error, 'ECONNREFUSED');
    await proxy.setDown(false);
    assert.equal((await request(proxy.url, agent, 'GET', '/bytes/10')).status, 200);
    await proxy.setDown(true, 'reset');
    const r = await request(proxy.url, new http.Agent(), 'GET', '/bytes/10');
    assert.match(r.error ?? '', /ECONNRESET|socket hang up/);
    assert.ok(proxy.stats.refusedConnections >= 1);
    await proxy.setDown(false);
    assert.equal((await request(proxy.url, agent, 'GET', '/bytes/10')).status, 200);
  });
});

test('an unreachable target gives 502', async () => {
  const dead = http.createServer();
  dead.listen(0, '127.0.0.1');
  await once(dead, 'listening');
  const port = (dead.address() as net.AddressInfo).port;
  dead.close();
  const proxy = await startFaultProxy({ target: `http://127.0.0.1:${port}` });
  try {
    const r = await request(proxy.url, new http.Agent(), 'GET', '/x');
    assert.equal(r.status, 502);
    assert.equal(proxy.stats.upstreamErrors, 1);
  } finally { await proxy.close(); }
});

test('random bytes survive as well (no text assumptions)', async () => {
  await withProxy({}, async (proxy, agent) => {
    const data = randomBytes(3 * MiB + 17);
    const r = await request(proxy.url, agent, 'POST', '/rand', data);
    assert.equal(JSON.parse(r.body!.toString()).sha256, sha(data));
  });
});
