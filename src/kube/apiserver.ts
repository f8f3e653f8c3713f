/**
 * Authenticated requests to the apiserver outside the generated API client:
 * plain HTTPS (probes) and WebSockets (port-forward). Credentials come from
 * kc.applyToHTTPSOptions on every call, so exec-plugin tokens are refreshed
 * and client certificates, bearer tokens and the cluster CA all apply.
 */
import * as https from 'node:https';
import WebSocket from 'ws';
import { Codes, RdbgError, errorMessage } from '../core/errors';
import type { Kube } from './config';

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
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols, wsOpts);
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
