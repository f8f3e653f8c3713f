// A daemon's local API: one unix socket that speaks two protocols, told apart
// by the first byte a client sends.
//
//  - gRPC (HTTP/2: every connection opens with "PRI * HTTP/2.0"): the full
//    service, streams included, for the other daemon and any gRPC tool.
//  - JSON lines (a connection that opens with "{"): the unary methods, for
//    the CLI. A fresh CLI process is most of an `rdbg` command's time, and
//    gRPC's client (grpc-js, protobufjs, node:http2) is most of that start;
//    Node's `net` is a small load beside `node:http2` alone.
//
// JSON lines are JSON-RPC 2.0 objects, one per line:
//   {"jsonrpc":"2.0","id":1,"method":"List","params":{...}}
//   {"jsonrpc":"2.0","id":1,"result":{...}}
//   {"jsonrpc":"2.0","id":1,"error":{"code":5,"message":"no intercept of web"}}
// An error's code is the gRPC status code (1-16, outside JSON-RPC's reserved
// range). Both ways, a message goes through the method's protobuf codec: the
// handler gets exactly the request gRPC would have given it (defaults filled,
// unknown fields dropped, a wrong type refused), and the client exactly the
// response a gRPC client would have decoded.
import * as grpc from '@grpc/grpc-js';
import { EventEmitter } from 'node:events';
import { chmodSync, chownSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import { StringDecoder } from 'node:string_decoder';
import { errorMessage } from '../core/errors';
import type { Logger } from '../core/log';

/** A request line longer than this closes its connection: no CLI call comes near it. */
export const MAX_LINE = 1 << 20;

/** The HTTP/2 connection preface's first byte ("PRI * HTTP/2.0"). */
const HTTP2_FIRST = 0x50;
const JSON_FIRST = 0x7b; // "{"

type UnaryHandler = (call: grpc.ServerUnaryCall<object, object>, cb: grpc.sendUnaryData<object>) => void;

export interface LocalApiOptions {
  /** the socket's path; a stale file there is removed first */
  path: string;
  /** the service as the gRPC server serves it (e.g. daemonPackage().UserDaemon.service) */
  service: grpc.ServiceDefinition;
  /** its handlers, as given to server.addService */
  handlers: grpc.UntypedServiceImplementation;
  /** the socket's owner (a root daemon serving the user who connected); it is mode 0600 either way */
  owner?: { uid: number; gid: number };
  /** the daemon's logger for it (`userd.api`, `rootd.api`) */
  log: Logger;
}

export interface LocalApi {
  /** Stops listening and closes every connection (the gRPC server's own are closed by its shutdown). */
  close(): void;
}

/** A unary method's codecs and handler, by the name the JSON side calls it (the proto name: "Status"). */
interface Method {
  handler: UnaryHandler;
  request: (value: unknown) => object;
  response: (value: object) => object;
}

/** Through the codec and back: what the other side of a gRPC call would see, or a throw for a value the message cannot hold. */
function through(serialize: (v: never) => Buffer, deserialize: (b: Buffer) => unknown): (value: unknown) => object {
  return (value) => deserialize(serialize(value as never)) as object;
}

function methodsOf(service: grpc.ServiceDefinition, handlers: grpc.UntypedServiceImplementation): Map<string, Method> {
  const methods = new Map<string, Method>();
  for (const [name, def] of Object.entries(service)) {
    const handler = handlers[name];
    if (def.requestStream || def.responseStream || typeof handler !== 'function') continue;
    methods.set(name, {
      handler: handler as UnaryHandler,
      request: through(def.requestSerialize, def.requestDeserialize),
      response: through(def.responseSerialize, def.responseDeserialize),
    });
  }
  return methods;
}

/**
 * Serves `service` on the unix socket `path`: gRPC connections go to
 * `server` (which must have the service added), JSON lines to the unary
 * handlers directly.
 */
export async function listenLocalApi(server: grpc.Server, opts: LocalApiOptions): Promise<LocalApi> {
  const { log } = opts;
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  const methods = methodsOf(opts.service, opts.handlers);
  const jsonConnections = new Set<net.Socket>();
  const listener = net.createServer((sock) => {
    sock.on('error', (err) => log.debug('local connection failed', { error: errorMessage(err) }));
    sock.once('readable', () => {
      const first = sock.read() as Buffer | null;
      if (!first) return; // closed before a byte: 'readable' came with the end
      if (first[0] === HTTP2_FIRST) {
        sock.unshift(first);
        injector.injectConnection(sock);
      } else if (first[0] === JSON_FIRST) {
        jsonConnections.add(sock);
        sock.once('close', () => jsonConnections.delete(sock));
        serveJsonLines(sock, methods, first);
      } else {
        sock.destroy();
      }
    });
  });
  rmSync(opts.path, { force: true });
  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject);
    listener.listen(opts.path, () => {
      listener.off('error', reject);
      resolve();
    });
  });
  chmodSync(opts.path, 0o600);
  if (opts.owner) chownSync(opts.path, opts.owner.uid, opts.owner.gid);
  listener.on('error', (err) => log.warn('local API listener failed', { error: errorMessage(err) }));
  return {
    close: () => {
      listener.close();
      injector.destroy();
      for (const sock of jsonConnections) sock.end(); // after what is written (a Quit's answer)
    },
  };
}

interface JsonRequest {
  jsonrpc?: unknown;
  id?: unknown;
  method?: unknown;
  params?: unknown;
}

/** The JSON side of one connection: each line one call, answered as it completes (calls on one connection may overlap). */
function serveJsonLines(sock: net.Socket, methods: Map<string, Method>, first: Buffer): void {
  const decoder = new StringDecoder('utf8');
  let pending = '';
  const inflight = new Set<() => void>();
  sock.once('close', () => {
    for (const cancel of inflight) cancel();
  });
  const write = (line: object): void => {
    if (!sock.destroyed) sock.write(JSON.stringify({ jsonrpc: '2.0', ...line }) + '\n');
  };
  const fail = (id: unknown, code: grpc.status, message: string): void => write({ id: id ?? null, error: { code, message } });
  const onData = (chunk: Buffer): void => {
    pending += decoder.write(chunk);
    for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      if (line.trim()) callOne(line);
    }
    if (pending.length > MAX_LINE) {
      fail(null, grpc.status.RESOURCE_EXHAUSTED, `a request line of over ${MAX_LINE} bytes`);
      sock.end();
      sock.off('data', onData);
    }
  };
  const callOne = (line: string): void => {
    let req: JsonRequest;
    try {
      req = JSON.parse(line) as JsonRequest;
    } catch (err) {
      return fail(null, grpc.status.INVALID_ARGUMENT, `not JSON: ${errorMessage(err)}`);
    }
    if (typeof req !== 'object' || req === null || Array.isArray(req)) return fail(null, grpc.status.INVALID_ARGUMENT, 'a request is one JSON object');
    const method = typeof req.method === 'string' ? methods.get(req.method) : undefined;
    if (!method) return fail(req.id, grpc.status.UNIMPLEMENTED, `no unary method "${String(req.method)}" here (streams are served over gRPC)`);
    let request: object;
    try {
      request = method.request(req.params ?? {});
    } catch (err) {
      return fail(req.id, grpc.status.INVALID_ARGUMENT, `params of ${req.method as string}: ${errorMessage(err)}`);
    }
    const call = unaryCall(sock, req.method as string, request);
    let answered = false;
    const answer: grpc.sendUnaryData<object> = (err, value) => {
      if (answered) return;
      answered = true;
      inflight.delete(call.cancel);
      if (err) {
        const e = err as Partial<grpc.ServiceError>;
        return fail(req.id, typeof e.code === 'number' ? e.code : grpc.status.UNKNOWN, e.details || e.message || 'unknown error');
      }
      try {
        write({ id: req.id ?? null, result: method.response(value ?? {}) });
      } catch (e) {
        fail(req.id, grpc.status.INTERNAL, `the answer to ${req.method as string} could not be encoded: ${errorMessage(e)}`);
      }
    };
    inflight.add(call.cancel);
    try {
      method.handler(call.call, answer);
    } catch (err) {
      answer({ code: grpc.status.INTERNAL, details: errorMessage(err) }, null);
    }
  };
  sock.on('data', onData);
  onData(first);
}

/** The call object a unary handler reads: the request, no metadata, and 'cancelled' when the client goes before the answer. */
function unaryCall(sock: net.Socket, method: string, request: object): { call: grpc.ServerUnaryCall<object, object>; cancel: () => void } {
  const events = new EventEmitter();
  const call = Object.assign(events, {
    request,
    cancelled: false,
    metadata: new grpc.Metadata(),
    getPeer: () => 'unix:local',
    getDeadline: () => Infinity,
    getPath: () => method,
    getHost: () => 'localhost',
    sendMetadata: () => undefined,
    getAuthContext: () => ({}),
  }) as unknown as grpc.ServerUnaryCall<object, object>;
  const cancel = (): void => {
    (call as { cancelled: boolean }).cancelled = true;
    events.emit('cancelled', 'the client went away');
  };
  return { call, cancel };
}
