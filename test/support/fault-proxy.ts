/**
 * A fault-injecting HTTP reverse proxy for retry tests: put it between a client (pgark's S3 or
 * Azure code) and a real server on loopback, point the client at `proxy.url`, and choose faults.
 *
 * - Requests are forwarded as sent: method, path and query, headers (Host included: the client
 *   signs the Host it sends, i.e. the proxy's, and SigV4 / SharedKey servers verify that same
 *   value), bodies streamed both ways without buffering. Only hop-by-hop headers (Connection,
 *   Keep-Alive, Proxy-Connection, Upgrade, Expect) are dropped.
 * - Faults, drawn per request from a seeded PRNG (deterministic for a given request order):
 *     errorRate      500 InternalError (S3 XML body; the request body is read first)
 *     slowDownRate   503 SlowDown (S3 XML body; x-ms-error-code ServerBusy for Azure clients)
 *     resetRate      TCP reset of the client connection, in one of the `resetPhases`:
 *                    'before'         nothing forwarded (an upload is cut off while sending)
 *                    'after-upstream' forwarded, the server answered, the answer is dropped
 *                                     (the write happened but the client cannot know)
 *                    'mid-response'   the status line, headers and some body bytes, then reset
 *     latencyMs      delay before each request is handled
 *   injectNext(kind, n) forces the next n eligible requests to fail that way (before the dice).
 *   `filter` limits faults to some requests (e.g. only part uploads).
 * - setDown(true) makes the server look dead: 'refuse' (default) closes the listening socket so
 *   connects get ECONNREFUSED; 'reset' accepts and resets every connection. Open connections are
 *   reset either way. setDown(false) listens again on the same port.
 */
import { once } from 'node:events';
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type net from 'node:net';
import { pipeline } from 'node:stream';
import { prng } from './random.ts';

export type ResetPhase = 'before' | 'after-upstream' | 'mid-response';
export type FaultKind = 'error500' | 'slowDown503' | 'resetBefore' | 'resetAfterUpstream' | 'resetMidResponse';

export interface RequestInfo { method: string; url: string; headers: IncomingHttpHeaders }

export interface Faults {
  /** share of requests answered 500 InternalError (0..1) */
  errorRate?: number;
  /** share of requests answered 503 SlowDown */
  slowDownRate?: number;
  /** share of requests whose client connection is reset */
  resetRate?: number;
  /** where a reset happens, picked uniformly among these (default: all three) */
  resetPhases?: ResetPhase[];
  /** delay before handling each request */
  latencyMs?: number;
  /** PRNG seed (default 1); setFaults with a seed restarts the sequence */
  seed?: number;
  /** only requests for which this returns true get faults (and consume random draws) */
  filter?: (req: RequestInfo) => boolean;
}

export interface RequestRecord { seq: number; method: string; url: string; fault: FaultKind | null; status?: number }

export interface FaultStats {
  /** HTTP requests received */
  requests: number;
  /** requests passed on to the target */
  forwarded: number;
  injected: Record<FaultKind, number>;
  /** connections reset while down in 'reset' mode */
  refusedConnections: number;
  /** requests that failed because the target could not be reached (answered 502) */
  upstreamErrors: number;
}

export interface FaultProxy {
  /** http://127.0.0.1:PORT */
  readonly url: string;
  readonly port: number;
  readonly stats: FaultStats;
  /** one record per request, in arrival order (the last 10,000) */
  readonly log: RequestRecord[];
  /** replace the fault settings */
  setFaults(f: Faults): void;
  /** the next `count` eligible requests get this fault, whatever the rates */
  injectNext(kind: FaultKind, count?: number): void;
  setDown(down: boolean, how?: 'refuse' | 'reset'): Promise<void>;
  resetStats(): void;
  close(): Promise<void>;
}

export interface FaultProxyOptions {
  /** e.g. http://127.0.0.1:17480 (http only) */
  target: string;
  faults?: Faults;
  /** port to listen on (default: any free one) */
  port?: number;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'upgrade', 'expect', 'te', 'trailer']);

function filterRaw(raw: string[], extraDrop: string[] = []): string[] {
  const drop = new Set([...HOP_BY_HOP, ...extraDrop]);
  // headers named in Connection: are hop-by-hop too
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.toLowerCase() === 'connection') for (const n of raw[i + 1]!.split(',')) drop.add(n.trim().toLowerCase());
  }
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if (!drop.has(raw[i]!.toLowerCase())) out.push(raw[i]!, raw[i + 1]!);
  return out;
}

function errorXml(code: string, message: string, requestId: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message><RequestId>${requestId}</RequestId></Error>`;
}

function emptyInjected(): Record<FaultKind, number> {
  return { error500: 0, slowDown503: 0, resetBefore: 0, resetAfterUpstream: 0, resetMidResponse: 0 };
}

function resetSocket(socket: net.Socket | null | undefined): void {
  if (!socket || socket.destroyed) return;
  try { socket.resetAndDestroy(); } catch { socket.destroy(); }
}

export async function startFaultProxy(opts: FaultProxyOptions): Promise<FaultProxy> {
  const target = new URL(opts.target);
  if (target.protocol !== 'http:') throw new Error(`fault proxy: only http targets (${opts.target})`);
  const targetHost = target.hostname;
  const targetPort = Number(target.port || 80);
  const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });

  let faults: Faults = {};
  let rand = prng(1);
  const forced: FaultKind[] = [];
  let down: false | 'refuse' | 'reset' = false;
  let seq = 0;
  const stats: FaultStats = { requests: 0, forwarded: 0, injected: emptyInjected(), refusedConnections: 0, upstreamErrors: 0 };
  const log: RequestRecord[] = [];
  const sockets = new Set<net.Socket>();

  const setFaults = (f: Faults): void => {
    const sum = (f.errorRate ?? 0) + (f.slowDownRate ?? 0) + (f.resetRate ?? 0);
    if (sum > 1 + 1e-9) throw new Error(`fault proxy: errorRate + slowDownRate + resetRate = ${sum} > 1`);
    if (f.resetPhases && f.resetPhases.length === 0) throw new Error('fault proxy: resetPhases is empty');
    faults = { ...f };
    rand = prng(f.seed ?? 1);
  };
  setFaults(opts.faults ?? {});

  /** three draws per eligible request, always, so that a seed gives the same sequence */
  const pick = (info: RequestInfo): { kind: FaultKind | null; r: number } => {
    if (faults.filter && !faults.filter(info)) return { kind: null, r: 0 };
    const r1 = rand(); const r2 = rand(); const r3 = rand();
    const f = forced.shift();
    if (f) return { kind: f, r: r3 };
    const e = faults.errorRate ?? 0; const s = faults.slowDownRate ?? 0; const z = faults.resetRate ?? 0;
    if (r1 < e) return { kind: 'error500', r: r3 };
    if (r1 < e + s) return { kind: 'slowDown503', r: r3 };
    if (r1 < e + s + z) {
      const phases = faults.resetPhases ?? ['before', 'after-upstream', 'mid-response'];
      const phase = phases[Math.min(phases.length - 1, Math.floor(r2 * phases.length))]!;
      return { kind: phase === 'before' ? 'resetBefore' : phase === 'after-upstream' ? 'resetAfterUpstream' : 'resetMidResponse', r: r3 };
    }
    return { kind: null, r: r3 };
  };

  const record = (rec: RequestRecord): void => {
    log.push(rec);
    if (log.length > 10_000) log.splice(0, log.length - 10_000);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    stats.requests++;
    const info: RequestInfo = { method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers };
    const { kind, r } = pick(info);
    const rec: RequestRecord = { seq: ++seq, method: info.method, url: info.url, fault: kind };
    record(rec);
    res.on('finish', () => { rec.status = res.statusCode; });
    if (faults.latencyMs) {
      await new Promise((resolve) => setTimeout(resolve, faults.latencyMs));
      if (req.socket.destroyed) return;
    }
    if (kind) stats.injected[kind]++;

    if (kind === 'resetBefore') { resetSocket(req.socket); return; }
    if (kind === 'error500' || kind === 'slowDown503') {
      req.resume(); // read and discard the body, as a server would before answering
      if (!req.complete) await once(req, 'end').catch(() => {});
      if (req.socket.destroyed) return;
      const rid = `fault-proxy-${rec.seq}`;
      const body = kind === 'error500'
        ? errorXml('InternalError', 'We encountered an internal error. Please try again.', rid)
        : errorXml('SlowDown', 'Please reduce your request rate.', rid);
      res.writeHead(kind === 'error500' ? 500 : 503, {
        'Content-Type': 'application/xml',
        'Content-Length': Buffer.byteLength(body),
        'x-amz-request-id': rid,
        'x-ms-request-id': rid,
        'x-ms-error-code': kind === 'error500' ? 'InternalError' : 'ServerBusy',
      });
      res.end(body);
      return;
    }

    stats.forwarded++;
    const upReq = http.request({
      host: targetHost, port: targetPort, method: info.method, path: info.url, agent,
      headers: filterRaw(req.rawHeaders) as unknown as http.OutgoingHttpHeaders, // raw [k, v, ...]: case, order, duplicates, Host kept
      setHost: false,
    });
    pipeline(req, upReq, () => { /* errors surface on upReq / the client socket */ });
    upReq.on('error', (err) => {
      if (res.headersSent || req.socket.destroyed) { resetSocket(req.socket); return; }
      stats.upstreamErrors++;
      const body = `fault proxy: upstream ${opts.target} failed: ${err.message}\n`;
      res.writeHead(502, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body), Connection: 'close' });
      res.end(body);
    });
    upReq.on('response', (upRes) => {
      if (kind === 'resetAfterUpstream') {
        upRes.resume();
        rec.status = upRes.statusCode;
        resetSocket(req.socket);
        return;
      }
      if (kind === 'resetMidResponse') { cutResponse(req, upRes, r, rec); return; }
      res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, filterRaw(upRes.rawHeaders) as unknown as http.OutgoingHttpHeaders);
      pipeline(upRes, res, (err) => { if (err) resetSocket(req.socket); });
    });
    res.on('close', () => { if (!res.writableFinished) upReq.destroy(); });
  };

  /**
   * Sends the upstream status line, headers and the first `cut` body bytes straight to the
   * client socket, then resets it. cut is in [1, length-1] for a known length >= 2, else in
   * [1, 64 KiB] (an answer shorter than that gets all its bytes but still no clean end).
   */
  const cutResponse = (req: IncomingMessage, upRes: IncomingMessage, r: number, rec: RequestRecord): void => {
    const socket = req.socket;
    rec.status = upRes.statusCode;
    const len = Number(upRes.headers['content-length']);
    const bodyless = req.method === 'HEAD' || upRes.statusCode === 204 || upRes.statusCode === 304;
    const cut = bodyless ? 0 : Number.isFinite(len) ? (len >= 2 ? 1 + Math.floor(r * (len - 1)) : 0) : 1 + Math.floor(r * 65536);
    const headers = filterRaw(upRes.rawHeaders, ['transfer-encoding']);
    let head = `HTTP/1.1 ${upRes.statusCode} ${upRes.statusMessage ?? ''}\r\n`;
    for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
    if (!Number.isFinite(len)) head += 'Connection: close\r\n';
    head += '\r\n';
    const parts: Buffer[] = [Buffer.from(head, 'latin1')];
    let have = 0;
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      upRes.destroy();
      if (socket.destroyed) return;
      socket.write(Buffer.concat(parts), () => resetSocket(socket));
    };
    if (cut === 0) { upRes.resume(); finish(); return; }
    upRes.on('data', (chunk: Buffer) => {
      if (done) return;
      const take = Math.min(chunk.length, cut - have);
      parts.push(chunk.subarray(0, take));
      have += take;
      if (have >= cut) finish();
    });
    upRes.on('end', finish);
    upRes.on('error', finish);
  };

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) { res.writeHead(500, { 'Content-Type': 'text/plain' }); res.end(`fault proxy bug: ${String(err)}\n`); } else resetSocket(req.socket);
    });
  });
  server.requestTimeout = 0; // long uploads through the proxy must not hit Node's 300 s default
  server.keepAliveTimeout = 65_000; // do not close idle kept-alive connections sooner than real servers
  server.on('connection', (socket: net.Socket) => {
    if (down === 'reset') { stats.refusedConnections++; resetSocket(socket); return; }
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  server.on('clientError', (_err, socket) => { socket.destroy(); });

  const listen = (port: number): Promise<number> => new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve((server.address() as net.AddressInfo).port);
    });
  });
  const port = await listen(opts.port ?? 0);

  const resetAll = (): void => { for (const s of sockets) resetSocket(s); sockets.clear(); };

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    stats,
    log,
    setFaults,
    injectNext(kind: FaultKind, count = 1) { for (let i = 0; i < count; i++) forced.push(kind); },
    async setDown(d: boolean, how: 'refuse' | 'reset' = 'refuse') {
      const wasListening = down !== 'refuse';
      if (d) {
        resetAll();
        if (how === 'refuse' && wasListening) await new Promise<void>((resolve) => server.close(() => resolve()));
        down = how;
      } else {
        if (!wasListening) await listen(port);
        down = false;
      }
    },
    resetStats() {
      stats.requests = 0; stats.forwarded = 0; stats.refusedConnections = 0; stats.upstreamErrors = 0;
      for (const k of Object.keys(stats.injected) as FaultKind[]) stats.injected[k] = 0;
      log.length = 0;
    },
    async close() {
      resetAll();
      agent.destroy();
      if (down !== 'refuse') await new Promise<void>((resolve) => server.close(() => resolve()));
      down = 'refuse';
    },
  };
}
