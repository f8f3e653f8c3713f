/**
 * One TCP connection to a pod port through the apiserver's pods/portforward
 * subresource, as a Duplex: the v4 path, a WebSocket per connection. rdbg
 * prefers SPDY tunnelled over one WebSocket per pod (spdy-portforward.ts) and
 * uses this where the apiserver does not offer it.
 *
 * Protocol: WebSocket subprotocol `v4.channel.k8s.io`, which the apiserver
 * passes through to the kubelet/CRI streaming server, whose WebSocket frame
 * decoder costs the runtime about twice the CPU of the SPDY path
 * (bench/kube-forward.ts). Every message starts with a channel byte: 0 =
 * data, 1 = error for the one port we ask for. The server's first message on
 * each channel starts with the port number (2 bytes, little endian), which we
 * skip.
 *
 * Half-close: the protocol has no way to say "no more data" on one channel
 * (the v5 CLOSE signal exists for exec only), so the pod never sees our EOF.
 * After the local side ends, the connection stays open while the pod keeps
 * sending and is closed once the pod has been quiet for `halfCloseLingerMs`
 * (or closes first). kubectl over SPDY does no better: the runtime tears the
 * pod connection down about 1 s after the client's half-close. In the other
 * direction the pod's FIN arrives as the end of the stream, after all data.
 */
import { Duplex } from 'node:stream';
import type WebSocket from 'ws';
import { Codes, RdbgError, errorMessage } from '../core/errors';
import { ApiStatusError, openWebSocket } from './apiserver';
import type { Kube } from './config';

export const PORT_FORWARD_PROTOCOL = 'v4.channel.k8s.io';

const DATA = 0;
const ERROR = 1;
const DATA_HEADER = Buffer.from([DATA]);
/**
 * The largest message we send. The runtime's reader grows a buffer per message
 * (and refuses 32 MiB); 64 KiB, one socket read, measured best (bench/kube-forward.ts).
 */
const MAX_FRAME = 64 * 1024;
/** Above this many bytes queued in ws, writes wait for the socket to take them. */
const SEND_HIGH_WATER = 1024 * 1024;

export interface PortForwardTarget {
  namespace: string;
  pod: string;
  port: number;
}

export interface PortForwardOptions {
  handshakeTimeoutMs?: number;
  /** after the local side ends: close once the pod has sent nothing for this long (default 1000 ms) */
  halfCloseLingerMs?: number;
}

/** Opens a v4 port-forward connection; rejects with a clear RdbgError when the apiserver refuses it. */
export async function openPortForward(kube: Kube, target: PortForwardTarget, opts: PortForwardOptions = {}): Promise<PortForwardStream> {
  const { ws, early } = await openPortForwardSocket(kube, target, [PORT_FORWARD_PROTOCOL], opts);
  return new PortForwardStream(ws, target, opts.halfCloseLingerMs ?? 1000, early);
}

/**
 * The WebSocket to the pod's portforward subresource, with whatever the
 * server sent along with the upgrade (port prefixes, even data).
 */
export async function openPortForwardSocket(kube: Kube, target: PortForwardTarget, protocols: string[], opts: PortForwardOptions = {}): Promise<{ ws: WebSocket; early: Buffer[] }> {
  // `ports` is for v4 (the SPDY path names the port per stream); harmless for SPDY.
  const path = `/api/v1/namespaces/${encodeURIComponent(target.namespace)}/pods/${encodeURIComponent(target.pod)}/portforward?ports=${target.port}`;
  const early: Buffer[] = [];
  const keep = (data: Buffer): void => { early.push(data); };
  let ws: WebSocket;
  try {
    ws = await openWebSocket(kube, path, protocols, {
      handshakeTimeoutMs: opts.handshakeTimeoutMs,
      onCreate: (socket) => socket.on('message', keep),
    });
  } catch (err) {
    throw refusal(kube, target, err);
  }
  ws.off('message', keep);
  return { ws, early };
}

/** Turns an apiserver refusal into what the user must know (RBAC verb, gone pod). */
function refusal(kube: Kube, t: PortForwardTarget, err: unknown): unknown {
  if (!(err instanceof ApiStatusError)) return err;
  const where = `pod ${t.namespace}/${t.pod}`;
  if (err.status === 403) {
    return new RdbgError(Codes.PERMISSION,
      `not allowed to port-forward to ${where}: the user of context "${kube.context}" lacks "get" and "create" on "pods/portforward" in namespace "${t.namespace}" (a WebSocket port-forward needs both)`,
      `ask your cluster admin for them (check with: kubectl auth can-i get pods/portforward -n ${t.namespace}; and the same with create)`, { cause: err });
  }
  if (err.status === 404) {
    return new RdbgError(Codes.POD_NOT_FOUND, `${where} does not exist (any more): ${err.message}`, undefined, { cause: err });
  }
  if (err.status === 401) {
    return new RdbgError(Codes.PERMISSION, `the apiserver ${kube.server} did not accept the credentials of context "${kube.context}": ${err.message}`,
      'refresh your login (e.g. run `kubectl get pods` once)', { cause: err });
  }
  return new RdbgError(Codes.PORT_FORWARD, `port-forward to ${where} port ${t.port} refused: HTTP ${err.status}: ${err.message}`, undefined, { cause: err });
}

/** Summarises the kubelet's error text (which names netns paths and sandbox ids) for a user. */
export function describeForwardError(t: PortForwardTarget, text: string): string {
  const where = `port-forward to pod ${t.namespace}/${t.pod} port ${t.port}`;
  if (/connection refused/i.test(text)) return `${where}: connection refused (nothing listens on port ${t.port} in the pod)`;
  if (/no such container|not found|not running/i.test(text)) return `${where}: the pod is not running (${text.trim()})`;
  return `${where} failed: ${text.trim()}`;
}

export class PortForwardStream extends Duplex {
  bytesIn = 0;
  bytesOut = 0;
  /** the kubelet's raw error text, when the error channel spoke */
  remoteError = '';

  private readonly skip = [2, 2];
  private lingerTimer?: NodeJS.Timeout;
  private lastInput = Date.now();

  constructor(private readonly ws: WebSocket, readonly target: PortForwardTarget, private readonly lingerMs: number, early: Buffer[] = []) {
    super({ allowHalfOpen: true, readableHighWaterMark: 256 * 1024, writableHighWaterMark: 256 * 1024 });
    for (const data of early) this.onMessage(data);
    ws.on('message', (data: Buffer) => this.onMessage(data));
    ws.on('close', () => this.onClose());
    ws.on('error', (err) => this.destroy(new RdbgError(Codes.PORT_FORWARD,
      `port-forward to pod ${target.namespace}/${target.pod} port ${target.port}: ${errorMessage(err)}`, undefined, { cause: err })));
  }

  private onMessage(data: Buffer): void {
    if (data.length === 0) return;
    const channel = data[0];
    let payload = data.subarray(1);
    if (channel > ERROR) return;
    if (this.skip[channel] > 0) {
      const n = Math.min(this.skip[channel], payload.length);
      this.skip[channel] -= n;
      payload = payload.subarray(n);
    }
    if (payload.length === 0) return;
    if (channel === ERROR) {
      this.remoteError += payload.toString('utf8');
      const err = new RdbgError(Codes.PORT_FORWARD, describeForwardError(this.target, this.remoteError));
      this.destroy(Object.assign(err, { detail: this.remoteError }));
      return;
    }
    this.bytesIn += payload.length;
    this.lastInput = Date.now();
    if (!this.push(payload)) this.ws.pause();
  }

  private onClose(): void {
    clearTimeout(this.lingerTimer);
    if (this.destroyed) return;
    // Everything the pod sent has been emitted before 'close': this is its FIN.
    this.push(null);
  }

  override _read(): void {
    if (this.ws.isPaused) this.ws.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.send([chunk], cb);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (err?: Error | null) => void): void {
    this.send(chunks.map((c) => c.chunk), cb);
  }

  /** Frames chunks into as few messages as MAX_FRAME allows; calls back once ws can take more. */
  private send(chunks: Buffer[], cb: (err?: Error | null) => void): void {
    if (this.ws.readyState !== this.ws.OPEN) {
      cb(Object.assign(new Error(`port-forward to pod ${this.target.namespace}/${this.target.pod} is closed`), { code: 'EPIPE' }));
      return;
    }
    const total = chunks.reduce((n, c) => n + c.length, 0);
    let frame: Buffer[] = [DATA_HEADER];
    let size = 0;
    let sent = 0;
    let waiting = false;
    for (const chunk of chunks) {
      for (let off = 0; off < chunk.length;) {
        const n = Math.min(chunk.length - off, MAX_FRAME - size);
        frame.push(n === chunk.length ? chunk : chunk.subarray(off, off + n));
        size += n;
        off += n;
        sent += n;
        if (size < MAX_FRAME && sent < total) continue;
        // The last message's callback releases the writer when ws had too much queued.
        const last = sent === total;
        this.ws.send(Buffer.concat(frame, size + 1), { binary: true }, last ? (err) => { if (waiting) cb(err); } : undefined);
        this.bytesOut += size;
        frame = [DATA_HEADER];
        size = 0;
      }
    }
    if (this.ws.bufferedAmount > SEND_HIGH_WATER && total > 0) waiting = true;
    else cb();
  }

  override _final(cb: (err?: Error | null) => void): void {
    // No half-close on the wire (see the file comment): linger while the pod talks.
    const check = (): void => {
      const quiet = Date.now() - this.lastInput;
      if (this.ws.isPaused || this.readableLength > 0 || quiet < this.lingerMs) {
        this.lingerTimer = setTimeout(check, Math.max(10, this.lingerMs - quiet));
        return;
      }
      this.ws.close(1000);
    };
    if (this.readableEnded || this.ws.readyState !== this.ws.OPEN) this.ws.close(1000);
    else this.lingerTimer = setTimeout(check, this.lingerMs);
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    clearTimeout(this.lingerTimer);
    if (err) this.ws.terminate();
    else if (this.ws.readyState === this.ws.OPEN) this.ws.close(1000);
    cb(err);
  }
}
