/**
 * The agent's test world on 127.0.0.1: a real standalone manager (in process),
 * the traffic agent, an "app" and a "laptop" server that both speak HTTP/1,
 * h2c and WebSocket (and say who they are), a gRPC service on each side, and
 * the FakeLaptop (stand-in for the user daemon) that accepts diverted flows.
 */
import { createHash } from 'node:crypto';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { ManagerServer } from '../../manager/server';
import { setLevel } from '../../src/core/log';
import { TrafficAgent, type AgentOptions } from '../../agent/traffic-agent';
import { sniffProtocol } from '../../agent/protocol-sniff';
import { FakeLaptop } from '../helpers/fake-laptop';
import type { InterceptSpec } from '../../src/gen/rdbg/v1/InterceptSpec';

setLevel((process.env.RDBG_TEST_LOG as 'debug') ?? 'error');

export interface Teardown {
  teardown(fn: () => unknown): void;
}

export const WORKLOAD = 'shop';
export const NAMESPACE = 'default';

export async function startManager(t: Teardown, port = 0): Promise<ManagerServer> {
  const m = new ManagerServer({
    listen: `127.0.0.1:${port}`,
    serviceSubnets: [],
    podSubnets: [],
    clusterDomain: 'cluster.local',
    namespace: 'rdbg',
    leaseSeconds: 15,
    dataListen: '127.0.0.1:0',
  });
  await m.start();
  t.teardown(() => m.stop());
  return m;
}

export async function startAgent(t: Teardown, managerPort: number, appPort: number, extra: Partial<AgentOptions> = {}): Promise<TrafficAgent> {
  const a = new TrafficAgent({
    manager: `127.0.0.1:${managerPort}`,
    workload: WORKLOAD,
    namespace: NAMESPACE,
    appPort,
    listenPort: 0,
    listenHost: '127.0.0.1',
    env: { APP_MODE: 'test' },
    heartbeatMs: 500,
    ...extra,
  });
  await a.start();
  t.teardown(() => a.stop());
  await waitFor(() => a.link.agentId !== '', 5000, 'agent linked');
  return a;
}

export async function startLaptop(t: Teardown, managerPort: number, user = 'dev@laptop'): Promise<FakeLaptop> {
  const l = new FakeLaptop({ manager: `127.0.0.1:${managerPort}`, user });
  await l.arrive();
  t.teardown(() => l.close());
  return l;
}

/** Create an intercept and wait until the agent applies it. */
export async function intercept(laptop: FakeLaptop, agent: TrafficAgent, spec: Partial<InterceptSpec>): Promise<string> {
  const info = await laptop.createIntercept({ workload: WORKLOAD, namespace: NAMESPACE, port: agent.app.port, ...spec });
  await waitFor(() => agent.table.get(info.id) !== undefined, 5000, 'agent saw the intercept');
  return info.id;
}

export async function removeIntercept(laptop: FakeLaptop, agent: TrafficAgent, id: string): Promise<void> {
  await laptop.removeIntercept(id);
  await waitFor(() => agent.table.get(id) === undefined, 5000, 'agent dropped the intercept');
}

export async function waitFor(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function listen(server: net.Server, t: Teardown): Promise<number> {
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port));
    t.teardown(
      () =>
        new Promise<void>((r) => {
          (server as http.Server).closeAllConnections?.();
          server.close(() => r());
          setTimeout(r, 500).unref();
        }),
    );
  });
}

function wsAccept(key: string): string {
  return createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
}

/** One unmasked (server) or masked (client) WebSocket text frame, payload < 126 bytes. */
export function wsFrame(text: string, mask: boolean): Buffer {
  const payload = Buffer.from(text);
  if (!mask) return Buffer.concat([Buffer.from([0x81, payload.length]), payload]);
  const key = Buffer.from([1, 2, 3, 4]);
  const masked = Buffer.from(payload.map((b, i) => b ^ key[i % 4]));
  return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), key, masked]);
}

/** Decode one small WebSocket text frame (masked or not). */
export function wsParse(buf: Buffer): string | undefined {
  if (buf.length < 2) return undefined;
  const len = buf[1] & 0x7f;
  const masked = (buf[1] & 0x80) !== 0;
  const off = masked ? 6 : 2;
  if (buf.length < off + len) return undefined;
  const data = Buffer.from(buf.subarray(off, off + len));
  if (masked) for (let i = 0; i < len; i++) data[i] ^= buf[2 + (i % 4)];
  return data.toString();
}

export interface TestServer {
  name: string;
  port: number;
  /** Requests seen, for checks on what reached which side. */
  seen: string[];
  http1: http.Server;
  h2: http2.Http2Server;
}

/**
 * A server that answers HTTP/1, h2c and WebSocket on one port and says its
 * name. GET /big?n=N streams N bytes; /slow?ms=M waits; /status/C answers C;
 * any body is echoed back; the response carries x-served-by and the
 * request's x-user; HTTP/1 chunked responses end with a trailer.
 */
export async function startServer(t: Teardown, name: string): Promise<TestServer> {
  const seen: string[] = [];
  const handle = (method: string, url: string, headers: Record<string, unknown>, body: Buffer, respond: (status: number, h: Record<string, string>, b: Buffer | null, big?: number) => void): void => {
    seen.push(`${method} ${url}`);
    const u = new URL(url, 'http://x');
    const common = { 'x-served-by': name, 'x-user': String(headers['x-user'] ?? '') };
    if (u.pathname === '/big') return respond(200, { ...common, 'content-type': 'application/octet-stream' }, null, Number(u.searchParams.get('n')));
    if (u.pathname.startsWith('/status/')) return respond(Number(u.pathname.slice(8)), common, Buffer.from(`${name} status\n`));
    const text = `${name} ${method} ${url}${body.length ? ' body=' + body.toString() : ''}\n`;
    const wait = Number(u.searchParams.get('ms') ?? '0');
    const send = (): void => respond(200, { ...common, 'content-type': 'text/plain' }, Buffer.from(text));
    if (u.pathname === '/slow') setTimeout(send, wait);
    else send();
  };

  const http1 = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () =>
      handle(req.method ?? '', req.url ?? '', req.headers, Buffer.concat(chunks), (status, h, b, big) => {
        if (big !== undefined) {
          res.writeHead(status, { ...h, 'content-length': big });
          writeBig(res, big);
          return;
        }
        if (req.url?.startsWith('/trailer')) {
          res.writeHead(status, { ...h, trailer: 'x-checksum' });
          res.write(b);
          res.addTrailers({ 'x-checksum': `${name}-sum` });
          res.end();
          return;
        }
        res.writeHead(status, { ...h, 'content-length': b!.length });
        res.end(b);
      }),
    );
  });
  http1.keepAliveTimeout = 30_000;
  http1.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    seen.push(`UPGRADE ${req.url}`);
    socket.on('error', () => undefined);
    if ((req.headers.upgrade ?? '').toLowerCase() !== 'websocket') {
      socket.end('HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${wsAccept(String(req.headers['sec-websocket-key']))}\r\nx-served-by: ${name}\r\n\r\n`,
    );
    socket.write(wsFrame(`hello from ${name}`, false));
    let buf = head;
    socket.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      const text = wsParse(buf);
      if (text !== undefined) {
        buf = Buffer.alloc(0);
        socket.write(wsFrame(`${name} echo ${text}`, false));
      }
    });
  });
  http1.on('connect', (req: http.IncomingMessage, socket: net.Socket) => {
    seen.push(`CONNECT ${req.url}`);
    socket.on('error', () => undefined);
    socket.write(`HTTP/1.1 200 Connection Established\r\nx-served-by: ${name}\r\n\r\n`);
    socket.on('data', (c: Buffer) => socket.write(`${name}:` + c.toString()));
  });

  const h2 = http2.createServer();
  h2.on('stream', (stream, headers) => {
    stream.on('error', () => undefined);
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () =>
      handle(String(headers[':method']), String(headers[':path']), headers, Buffer.concat(chunks), (status, h, b, big) => {
        if (stream.destroyed) return;
        stream.respond({ ':status': status, ...h });
        if (big !== undefined) writeBig(stream, big);
        else stream.end(b);
      }),
    );
  });
  h2.on('sessionError', () => undefined);

  const front = net.createServer((sock) => {
    sock.on('error', () => undefined);
    void sniffProtocol(sock, 300).then((s) => {
      if (s.head.length) sock.unshift(s.head);
      if (s.protocol === 'h2') h2.emit('connection', sock);
      else {
        sock.resume();
        http1.emit('connection', sock);
      }
    });
  });
  const port = await listen(front, t);
  t.teardown(() => {
    http1.closeAllConnections();
    h2.close();
  });
  return { name, port, seen, http1, h2 };
}

const BLOCK = Buffer.alloc(64 * 1024, 0x61);

function writeBig(out: NodeJS.WritableStream & { destroyed?: boolean }, n: number): void {
  let left = n;
  const push = (): void => {
    while (left > 0) {
      const k = Math.min(left, BLOCK.length);
      left -= k;
      if (!out.write(k === BLOCK.length ? BLOCK : BLOCK.subarray(0, k))) {
        out.once('drain', push);
        return;
      }
    }
    out.end();
  };
  push();
}

/**
 * A raw TCP echo server that prefixes what it returns with its name, and
 * records what it received. With `greeting` it speaks first.
 */
export async function startEcho(t: Teardown, name: string, greeting?: string): Promise<{ port: number; received: string[]; accepted: () => number }> {
  const received: string[] = [];
  let accepted = 0;
  const s = net.createServer({ allowHalfOpen: true }, (sock) => {
    accepted++;
    sock.on('error', () => undefined);
    if (greeting) sock.write(greeting);
    sock.on('data', (c: Buffer) => {
      received.push(c.toString('latin1'));
      sock.write(`${name}:` + c.toString('latin1'));
    });
    sock.on('end', () => sock.end());
  });
  return { port: await listen(s, t), received, accepted: () => accepted };
}

// ---- gRPC: a JSON-serialized service, no .proto needed.

const json = {
  requestSerialize: (v: unknown) => Buffer.from(JSON.stringify(v)),
  requestDeserialize: (b: Buffer) => JSON.parse(b.toString()) as Record<string, unknown>,
  responseSerialize: (v: unknown) => Buffer.from(JSON.stringify(v)),
  responseDeserialize: (b: Buffer) => JSON.parse(b.toString()) as Record<string, unknown>,
};

export const ECHO_SERVICE: grpc.ServiceDefinition = {
  Unary: { path: '/test.Echo/Unary', requestStream: false, responseStream: false, ...json },
  Stream: { path: '/test.Echo/Stream', requestStream: false, responseStream: true, ...json },
  Slow: { path: '/test.Echo/Slow', requestStream: false, responseStream: false, ...json },
};

export type Msg = Record<string, unknown>;

/**
 * gRPC Echo: Unary answers {who, text}; {fail: CODE} fails with that code;
 * Stream sends n messages; Slow answers after {ms} and records calls cancelled before.
 */
export async function startGrpc(t: Teardown, name: string): Promise<{ port: number; cancelled: string[] }> {
  const server = new grpc.Server();
  const cancelled: string[] = [];
  const trailer = (): grpc.Metadata => {
    const md = new grpc.Metadata();
    md.set('x-served-by', name);
    return md;
  };
  server.addService(ECHO_SERVICE, {
    Unary: (call: grpc.ServerUnaryCall<Msg, Msg>, cb: grpc.sendUnaryData<Msg>) => {
      const req = call.request;
      const user = call.metadata.get('x-user')[0] ?? '';
      if (req.fail) {
        cb({ code: Number(req.fail), details: `${name} refuses: ${String(req.text)}`, metadata: trailer() });
        return;
      }
      cb(null, { who: name, text: req.text, user }, trailer());
    },
    Stream: (call: grpc.ServerWritableStream<Msg, Msg>) => {
      const n = Number(call.request.n ?? 3);
      const header = new grpc.Metadata();
      header.set('x-header-from', name);
      call.sendMetadata(header);
      for (let i = 0; i < n; i++) call.write({ who: name, i });
      if (call.request.fail) call.emit('error', { code: Number(call.request.fail), details: `${name} stream failed`, metadata: trailer() });
      else call.end(trailer());
    },
    Slow: (call: grpc.ServerUnaryCall<Msg, Msg>, cb: grpc.sendUnaryData<Msg>) => {
      const timer = setTimeout(() => cb(null, { who: name }), Number(call.request.ms ?? 0));
      call.on('cancelled', () => {
        clearTimeout(timer);
        cancelled.push(String(call.request.text));
      });
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  t.teardown(() => server.forceShutdown());
  return { port, cancelled };
}

export function grpcClient(t: Teardown, port: number): grpc.Client & Record<string, (...args: unknown[]) => unknown> {
  const Ctor = grpc.makeGenericClientConstructor(ECHO_SERVICE, 'Echo');
  const c = new Ctor(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  t.teardown(() => c.close());
  return c as unknown as grpc.Client & Record<string, (...args: unknown[]) => unknown>;
}

// ---- raw HTTP/1 helpers

/** Send raw bytes on one connection and collect everything until `done(text)` says enough (or the socket ends). */
export function rawExchange(port: number, payload: string | Buffer, done: (text: string) => boolean, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`raw exchange timed out; got: ${JSON.stringify(buf.slice(0, 500))}`));
    }, timeoutMs);
    sock.on('data', (c: Buffer) => {
      buf += c.toString('latin1');
      if (done(buf)) {
        clearTimeout(timer);
        sock.destroy();
        resolve(buf);
      }
    });
    sock.on('error', () => undefined);
    sock.on('close', () => {
      clearTimeout(timer);
      resolve(buf);
    });
    sock.write(payload);
  });
}

/** A tiny HTTP/1 GET over an http.Agent (keep-alive), returning status, headers and body. */
export function get(port: number, path: string, headers: Record<string, string> = {}, agent?: http.Agent): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string; socket: net.Socket }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, headers, agent: agent ?? false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, socket: req.socket as net.Socket }));
    });
    req.setTimeout(10_000, () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end();
  });
}
