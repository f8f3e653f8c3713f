import * as http2 from 'node:http2';
import * as net from 'node:net';
import { getSystemErrorName } from 'node:util';

/**
 * Buffer this much per flow socket (and HTTP/2 stream) before pushing back:
 * with Node's 16 KB default every 64 KB read stalls the flow on a pause/drain round.
 */
export const SOCKET_HWM = 1024 * 1024;
/** The longest request or reply line either side of a raw connection accepts. */
export const MAX_LINE = 2048;

/**
 * Sockets that read into a buffer of their own (node's `onread`), 256 KiB at
 * a time, instead of a fresh 64 KB buffer per read pushed through a
 * Readable: a relay makes a quarter of the reads and no allocations (no
 * garbage for V8 to collect). The buffer is reused, so a chunk is valid only
 * while its sink runs: a sink writes it and pauses the socket until that
 * write is done, or copies it. Only FAST_READERS_MAX sockets at once get
 * one, from a pool (allocating a buffer per connection cut the connection
 * rate to a third): the rest read as usual, so the buffers cost at most
 * 8 MiB however many flows there are. Both ends of a relay get one: sockets
 * it connects (connectFlowSocket) and sockets it accepts (createFlowServer).
 * Measured through the sandbox (1 GiB, A/B in the same runs): SOCKS5 about
 * 420 -> 950 MB/s, TUN 350 -> 660 MB/s; 1 MiB buffers gave 10-15% more but
 * would allow only 8 of them in the same memory.
 */
const FAST_READ_BYTES = 256 * 1024;
const FAST_READERS_MAX = 32;
let fastReaders = 0;
const fastBuffers: Buffer[] = [];
/**
 * What a socket that gave its buffer back (plainReads) reads into: shared,
 * since such a socket's callback copies each chunk before it returns.
 */
let scratch: Buffer | undefined;

export interface FastRead {
  /** Takes a chunk that is valid only during the call; false pauses the socket. */
  sink?: (chunk: Buffer) => boolean;
  /** Copies of what came while there was no sink. */
  stash: Buffer[];
  /** Called when the stash grows; true: keep reading. */
  wake?: () => boolean;
}

const fastReads = new WeakMap<net.Socket, FastRead>();
const plainSinks = new WeakMap<FastRead, true>();

/** The fast reader of a flow socket, if it got one: its bytes come to `sink`, not 'data' events. */
export function fastReader(sock: unknown): FastRead | undefined {
  return sock instanceof net.Socket ? fastReads.get(sock) : undefined;
}

/**
 * A pooled buffer and the `onread` option that reads into it, or undefined
 * when the pool is used up. `adopt` ties them to the socket made with it.
 */
function takeFastRead(): { onread: object; adopt: (sock: net.Socket) => net.Socket } | undefined {
  if (fastReaders >= FAST_READERS_MAX) return undefined;
  fastReaders++;
  const fr: FastRead = { stash: [] };
  let own: Buffer | undefined = fastBuffers.pop() ?? Buffer.allocUnsafeSlow(FAST_READ_BYTES);
  const release = (): void => {
    if (!own) return;
    fastBuffers.push(own); // nothing reads into it any more
    own = undefined;
    fastReaders--;
  };
  const onread = {
    // Node asks after every read which buffer the next one goes to.
    buffer: (): Buffer => {
      if (plainSinks.has(fr)) release();
      return own ?? (scratch ??= Buffer.allocUnsafeSlow(FAST_READ_BYTES));
    },
    callback: (n: number, buf: Buffer): boolean => {
      const chunk = buf.subarray(0, n);
      if (fr.sink) return fr.sink(chunk);
      fr.stash.push(Buffer.from(chunk));
      // nobody takes the bytes yet: read no more until someone does, unless a reader wants more
      return fr.wake?.() ?? false;
    },
  };
  const adopt = (sock: net.Socket): net.Socket => {
    sock.once('close', release);
    fastReads.set(sock, fr);
    return sock;
  };
  return { onread, adopt };
}

/** Connect a socket that carries a flow: a fast reader while there are free ones (see FAST_READ_BYTES). */
export function connectFlowSocket(opts: net.NetConnectOpts): net.Socket {
  const fast = takeFastRead();
  if (!fast) return net.connect(opts);
  return fast.adopt(net.connect({ ...opts, onread: fast.onread } as net.NetConnectOpts));
}

type AcceptHandle = { onconnection: (err: number, client: unknown) => void };

/**
 * A TCP server whose accepted sockets carry flows: each is a fast reader
 * while there are free ones (see FAST_READ_BYTES), and goes to `onSocket`
 * (there is no 'connection' event). net.Server cannot give the sockets it
 * accepts an `onread` buffer, so once listening its handle's accept callback
 * is ours: Node's own, without maxConnections and connection counting.
 */
export function createFlowServer(opts: net.ServerOpts, onSocket: (sock: net.Socket) => void): net.Server {
  const server = net.createServer(opts);
  server.on('listening', () => {
    const handle = (server as unknown as { _handle: AcceptHandle })._handle;
    handle.onconnection = (err, client) => {
      if (err) return void server.emit('error', Object.assign(new Error(`accept failed: ${getSystemErrorName(err)}`), { code: getSystemErrorName(err) }));
      const fast = takeFastRead();
      const sock = new net.Socket({ handle: client, allowHalfOpen: opts.allowHalfOpen, readable: true, writable: true, highWaterMark: opts.highWaterMark, onread: fast?.onread } as net.SocketConstructorOpts);
      if (opts.noDelay) sock.setNoDelay(true);
      onSocket(fast ? fast.adopt(sock) : sock);
    };
  });
  return server;
}

/**
 * Make a flow socket read as any socket does, with 'data' events (a copy per
 * read), for a connection that turned out not to be a flow. Its pooled
 * buffer goes back after its next read. What the stash held is unshifted.
 */
export function plainReads(sock: net.Socket): void {
  const fr = fastReads.get(sock);
  if (!fr) return;
  fastReads.delete(sock);
  plainSinks.set(fr, true);
  fr.wake = undefined;
  const stash = fr.stash.splice(0);
  if (stash.length) sock.unshift(Buffer.concat(stash));
  fr.sink = (chunk) => sock.push(Buffer.from(chunk));
}

/**
 * Read one newline-terminated line from a paused or fresh socket. Bytes after
 * the newline are put back (unshift, or a fast reader's stash), so they reach
 * whoever reads next.
 */
export function readLine(sock: net.Socket, head: Buffer, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const fr = fastReads.get(sock);
    let buf = head;
    let settled = false;
    const done = (err?: Error, line?: string): void => {
      settled = true;
      clearTimeout(timer);
      if (fr) fr.wake = undefined;
      sock.removeListener('data', onData);
      sock.removeListener('end', onEnd);
      sock.removeListener('error', onError);
      sock.removeListener('close', onEnd);
      sock.pause();
      if (err) reject(err);
      else resolve(line!);
    };
    const check = (): void => {
      const nl = buf.indexOf(0x0a);
      if (nl === -1) {
        if (buf.length > MAX_LINE) done(new Error(`no newline in the first ${MAX_LINE} bytes`));
        return;
      }
      // Stop reading first: an unshift while flowing would hand the rest straight back to onData.
      done(undefined, buf.subarray(0, nl).toString('latin1'));
      const rest = buf.subarray(nl + 1);
      if (!rest.length) return;
      if (fr) fr.stash.unshift(Buffer.from(rest));
      else sock.unshift(rest);
    };
    const onData = (d: Buffer): void => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      check();
    };
    const onEnd = (): void => done(new Error('the connection closed before a whole line came'));
    const onError = (err: Error): void => done(err);
    const timer = setTimeout(() => done(new Error(`no line within ${timeoutMs / 1000} s`)), timeoutMs);
    // A fast reader's bytes come to its stash instead of 'data' events.
    const take = (): void => {
      const got = fr!.stash.splice(0);
      if (got.length) onData(Buffer.concat(got));
    };
    if (fr) {
      fr.wake = () => {
        take();
        return !settled;
      };
      take();
    }
    if (!settled) check();
    if (settled) return;
    if (!fr) sock.on('data', onData);
    sock.once('end', onEnd);
    sock.once('close', onEnd);
    sock.once('error', onError);
    sock.resume();
  });
}


/**
 * Http2Stream has no highWaterMark option, and its 16 KB default makes every
 * 64 KB chunk a pause/drain round trip. Its stream state is Node's public
 * Writable/Readable machinery, so raising the mark there is safe.
 */
export function widenStreamBuffer(stream: http2.Http2Stream): void {
  const st = stream as unknown as { _writableState?: { highWaterMark: number }; _readableState?: { highWaterMark: number } };
  if (st._writableState) st._writableState.highWaterMark = SOCKET_HWM;
  if (st._readableState) st._readableState.highWaterMark = SOCKET_HWM;
}
