/**
 * Authenticated requests to the apiserver outside the generated API client:
 * plain HTTPS (probes) and WebSockets (port-forward). Credentials come from
 * kc.applyToHTTPSOptions on every call, so exec-plugin tokens are refreshed
 * and client certificates, bearer tokens and the cluster CA all apply.
 */
import * as https from 'node:https';
import * as net from 'node:net';
import * as tls from 'node:tls';
import WebSocket from 'ws';
import { Codes, RdbgError, errorMessage } from '../core/errors';
import type { Kube } from './config';
import { sameMaterial } from './keep-alive';

/** The apiserver answered a request with an HTTP error (its Status message in `message`). */
export class ApiStatusError extends RdbgError {
  constructor(readonly status: number, readonly reason: string, message: string, readonly url: string) {
    super(status === 403 ? Codes.PERMISSION : Codes.BAD_ARGUMENT, message);
  }
}

/** https.request options for an apiserver path, with the kubeconfig's credentials. */
export async function httpsOptions(kube: Kube, path: string, method = 'GET'): Promise<https.RequestOptions> {
  const url = new URL(kube.server + path);
  const opts: https.RequestOptions = {
    protocol: url.protocol, hostname: url.hostname, port: url.port, path: url.pathname + url.search, method, headers: {},
  };
  await kube.kc.applyToHTTPSOptions(opts);
  return opts;
}

function unreachable(kube: Kube, err: unknown): RdbgError {
  return new RdbgError(Codes.APISERVER_UNREACHABLE, `cannot reach the Kubernetes apiserver at ${kube.server} (context ${kube.context}): ${errorMessage(err)}`,
    'check your network/VPN and that `kubectl get pods` works with the same kubeconfig', { cause: err });
}

/** Reads a Status object's message out of an error body, falling back to the raw text. */
function statusMessage(body: string): { message: string; reason: string } {
  try {
    const s = JSON.parse(body) as { message?: string; reason?: string };
    return { message: s.message ?? body.trim(), reason: s.reason ?? '' };
  } catch {
    return { message: body.trim(), reason: '' };
  }
}

/** GET /version: proves the apiserver is reachable and our credentials are accepted. */
export async function probeApiserver(kube: Kube, timeoutMs = 10_000): Promise<{ gitVersion: string }> {
  const opts = await httpsOptions(kube, '/version');
  return new Promise((resolve, reject) => {
    const req = https.request({ ...opts, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => { body += c; });
      res.on('end', () => {
        if (res.statusCode === 200) {
          resolve(JSON.parse(body) as { gitVersion: string });
          return;
        }
        const s = statusMessage(body);
        reject(new ApiStatusError(res.statusCode ?? 0, s.reason, `apiserver ${kube.server}: HTTP ${res.statusCode}: ${s.message}`, kube.server));
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err) => reject(unreachable(kube, err)));
    req.end();
  });
}

/**
 * What a new TLS connection to one apiserver can reuse: the parsed
 * credentials (building a SecureContext parses the CA, certificate and key)
 * and the last session ticket, so that the next handshake is a resumption.
 * Port-forwards open a connection per forwarded TCP connection, so this is
 * on the time-to-first-byte of every one of them.
 */
interface TlsReuse {
  material: Array<unknown>;
  context: tls.SecureContext;
  session?: Buffer;
}
const tlsReuse = new WeakMap<Kube, TlsReuse>();

/** A ws createConnection that reuses the SecureContext and session of earlier connections to the same apiserver. */
function reusingTlsConnect(kube: Kube): (opts: tls.ConnectionOptions & { host?: string }) => tls.TLSSocket {
  return (opts) => {
    const material = [opts.ca, opts.cert, opts.key, opts.pfx, opts.passphrase];
    let reuse = tlsReuse.get(kube);
    // Credentials can change (a rotated client certificate): then start over.
    if (!reuse || reuse.material.some((m, i) => !sameMaterial(m, material[i]))) {
      reuse = { material, context: tls.createSecureContext({ ca: opts.ca, cert: opts.cert, key: opts.key, pfx: opts.pfx, passphrase: opts.passphrase }) };
      tlsReuse.set(kube, reuse);
    }
    const entry = reuse;
    // As ws does: no SNI for an IP address (RFC 6066).
    const servername = opts.servername ?? (opts.host && !net.isIP(opts.host) ? opts.host : '');
    const socket = tls.connect({ ...opts, path: undefined, servername, secureContext: entry.context, session: entry.session });
    socket.on('session', (session: Buffer) => { entry.session = session; });
    return socket;
  };
}

export interface WebSocketOptions {
  /** how long the TCP+TLS+upgrade handshake may take */
  handshakeTimeoutMs?: number;
  /**
   * Called with the socket before any event: ws may emit the first messages in
   * the same tick as 'open', before the returned promise's callbacks run.
   */
  onCreate?: (ws: WebSocket) => void;
}

/**
 * Opens a WebSocket to an apiserver path. Resolves when the upgrade succeeds;
 * rejects with ApiStatusError when the apiserver refuses it (403, 404, ...) and
 * with APISERVER_UNREACHABLE when it cannot be reached at all.
 */
export async function openWebSocket(kube: Kube, path: string, protocols: string[], opts: WebSocketOptions = {}): Promise<WebSocket> {
  const url = kube.server.replace(/^http/, 'ws') + path;
  const wsOpts: WebSocket.ClientOptions = {
    // Bulk TCP bytes: compression only costs CPU, and the apiserver ignores it anyway.
    perMessageDeflate: false,
    handshakeTimeout: opts.handshakeTimeoutMs ?? 15_000,
    // Masking defends browsers' shared caches from scripts; this connection is TLS
    // from a trusted client, so an all-zero mask lets ws send the payload without a copy.
    generateMask: (mask: Buffer) => { mask.fill(0); },
    // The kubelet writes at most 32 KiB a message; anything near this is a broken peer.
    maxPayload: 64 * 1024 * 1024,
  };
  await kube.kc.applyToHTTPSOptions(wsOpts);
  // client-node hands a new https.Agent per call, which neither keeps sessions nor parsed
  // credentials; replace it unless it is a proxy's agent.
  if (url.startsWith('wss:') && !kube.kc.getCurrentCluster()?.proxyUrl) {
    delete wsOpts.agent;
    wsOpts.createConnection = reusingTlsConnect(kube) as unknown as WebSocket.ClientOptions['createConnection'];
  }
  // ws takes only RFC 7230 tokens as subprotocols, and Kubernetes' SPDY tunnel is
  // `SPDY/3.1+portforward.k8s.io`: such a list goes in the header as is, and the
  // server's choice is taken (and checked) before ws would refuse it.
  const tokens = protocols.every((p) => /^[!#$%&'*+\-.0-9A-Z^_`|a-z~]+$/.test(p));
  if (!tokens) wsOpts.headers = { ...wsOpts.headers, 'Sec-WebSocket-Protocol': protocols.join(', ') };
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, tokens ? protocols : [], wsOpts);
    if (!tokens) {
      ws.once('upgrade', (res) => {
        const chosen = res.headers['sec-websocket-protocol'];
        delete res.headers['sec-websocket-protocol'];
        if (chosen === undefined || !protocols.includes(chosen)) {
          fail(new Error(`the apiserver chose WebSocket subprotocol "${chosen ?? ''}", not one of ${protocols.join(', ')}`));
          return;
        }
        Object.defineProperty(ws, 'protocol', { value: chosen });
      });
    }
    opts.onCreate?.(ws);
    let settled = false;
    const fail = (err: Error): void => {
      if (settled) return;
      settled = true;
      ws.terminate();
      reject(err);
    };
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => { if (body.length < 65536) body += c; });
      res.on('end', () => {
        const s = statusMessage(body);
        fail(new ApiStatusError(res.statusCode ?? 0, s.reason, s.message || `HTTP ${res.statusCode}`, url));
      });
      res.on('error', (err) => fail(unreachable(kube, err)));
    });
    ws.once('error', (err) => fail(unreachable(kube, err)));
    ws.once('open', () => {
      settled = true;
      resolve(ws);
    });
  });
}
