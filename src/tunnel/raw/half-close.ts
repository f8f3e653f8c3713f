import * as net from 'node:net';
import { splitHostPort } from '../../core/address';
import { logger } from '../../core/log';
import { MAX_LINE } from '../fast-socket';
import { KEEPALIVE_MS, formatReply, parseReply } from './flow';

const log = logger('tunnel.half-close');

/**
 * Raw flows' half-closes, sent beside them on one connection of their own to
 * the manager's data port (see SpliceOptions.halfCloseB in ../splice.ts):
 *
 *   client:  RDBG-HALFCLOSE/1 <session>\n            then per half-close:  <flow id> <bytes sent>\n
 *   manager: <dial code> - <message>\n (as a flow's)  then per line, in order: K <flow id>\n (taken) or N <flow id>\n
 *
 * A half-close on the HTTP/2 data plane (POST /rdbg.v1/half-close) costs a
 * stream in both processes, about 40 us of CPU per flow on the laptop and 25
 * in the manager: a tenth of what a short connection costs there. Here it is
 * one short line each way, and the lines of a whole loop turn go in one write.
 * The HTTP/2 request stays as the fallback (a manager without this channel
 * answers its first line as a malformed flow request), and a FIN after that.
 */
export const HALF_CLOSE_MAGIC = 'RDBG-HALFCLOSE/1';
/** How long the manager may take to answer before the connection is given up. */
const ANSWER_TIMEOUT_MS = 10_000;
/** After the connection failed, half-closes go another way for this long before it is tried again. */
const RETRY_AFTER_MS = 1_000;

const FLOW_ID = /^\d{1,15}$/;

interface Pending {
  flow: string;
  at: number;
  resolve: (taken: boolean | undefined) => void;
}

/** One connection of the channel, with the half-closes waiting for its answers (in order). */
interface Conn {
  sock: net.Socket;
  pending: Pending[];
  /** lines not yet written: those of one loop turn go out in one write */
  out: string;
}

/** The laptop's end: one connection, opened on first use and again after it drops. */
export class HalfCloseChannel {
  private conn?: Conn;
  /** the manager does not know this channel (an older one): stop trying until renew() */
  private unsupported = false;
  private retryAt = 0;
  private closed = false;

  constructor(
    private readonly address: string, // host:port of the data port
    private readonly session: () => string,
    private readonly now: () => number = Date.now,
  ) {}

  /** The manager's answer (true: it will end the flow's destination), or undefined when this channel cannot carry it. */
  halfClose(flow: string, bytes: number): Promise<boolean | undefined> {
    if (this.closed || this.unsupported || !FLOW_ID.test(flow) || !Number.isSafeInteger(bytes) || bytes < 0) return Promise.resolve(undefined);
    const conn = this.conn ?? this.open();
    if (!conn) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      conn.pending.push({ flow, at: this.now(), resolve });
      this.send(conn, `${flow} ${bytes}\n`);
    });
  }

  /** The manager behind the address may have changed: the next half-close opens a new connection. */
  renew(): void {
    this.unsupported = false;
    this.retryAt = 0;
    this.drop();
  }

  close(): void {
    this.closed = true;
    this.drop();
  }

  get waiting(): number {
    return this.conn?.pending.length ?? 0;
  }

  /** Its half-closes come back undecided when it has closed (see open). */
  private drop(): void {
    this.conn?.sock.destroy();
    this.conn = undefined;
  }

  private open(): Conn | undefined {
    const session = this.session();
    if (!session || this.now() < this.retryAt) return undefined;
    let sock: net.Socket;
    try {
      const { host, port } = splitHostPort(this.address, 'the data address');
      sock = net.connect({ host, port, noDelay: true });
    } catch {
      return undefined;
    }
    const conn: Conn = { sock, pending: [], out: '' };
    this.conn = conn;
    sock.setKeepAlive(true, KEEPALIVE_MS);
    sock.setEncoding('latin1');
    let greeted = false;
    let buf = '';
    sock.on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) !== -1) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (!greeted) {
          greeted = true;
          const r = parseReply(line);
          if (r.code !== 'OK') {
            log.debug('the manager does not take half-closes on a connection of their own', { code: r.code, message: r.message });
            if (this.conn === conn) this.unsupported = true;
            return void sock.destroy();
          }
          continue;
        }
        const p = conn.pending[0];
        const [answer, flow] = line.split(' ');
        if (!p || flow !== p.flow || (answer !== 'K' && answer !== 'N')) {
          log.warn('unexpected half-close answer', { line: line.slice(0, 60) });
          return void sock.destroy();
        }
        conn.pending.shift();
        p.resolve(answer === 'K');
      }
      if (buf.length > MAX_LINE) sock.destroy();
    });
    sock.on('error', (err) => log.debug('half-close connection failed', { err: err.message }));
    // A manager that stops answering (a frozen port-forward) gives the half-closes back to another way.
    const sweep = setInterval(() => {
      if (conn.pending.length && this.now() - conn.pending[0].at > ANSWER_TIMEOUT_MS) sock.destroy();
    }, ANSWER_TIMEOUT_MS / 4);
    sweep.unref();
    sock.on('close', () => {
      clearInterval(sweep);
      if (this.conn === conn) {
        this.conn = undefined;
        if (!greeted) this.retryAt = this.now() + RETRY_AFTER_MS;
      }
      for (const p of conn.pending.splice(0)) p.resolve(undefined);
    });
    this.send(conn, `${HALF_CLOSE_MAGIC} ${session}\n`);
    return conn;
  }

  /** Lines written in one loop turn go out in one write. */
  private send(conn: Conn, line: string): void {
    const first = !conn.out;
    conn.out += line;
    if (!first) return;
    setImmediate(() => {
      const out = conn.out;
      conn.out = '';
      if (!conn.sock.destroyed) conn.sock.write(out, 'latin1');
    });
  }
}

/**
 * The manager's end, once the first line named a live session: answers each
 * line with `take`'s verdict (undefined: taken; else why not, for the log).
 * A malformed line closes this connection only: its half-closes then go
 * another way.
 */
export function serveHalfCloses(sock: net.Socket, take: (flow: string, bytes: string) => string | undefined): void {
  sock.write(formatReply('OK', '', ''));
  sock.setKeepAlive(true, KEEPALIVE_MS);
  sock.setEncoding('latin1');
  let buf = '';
  sock.on('data', (d: string) => {
    buf += d;
    let out = '';
    let nl: number;
    while ((nl = buf.indexOf('\n')) !== -1) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      const [flow, bytes, extra] = line.split(' ');
      if (extra !== undefined || !FLOW_ID.test(flow ?? '') || !/^\d{1,15}$/.test(bytes ?? '')) {
        log.debug('malformed half-close line: closing its connection', { line: line.slice(0, 60) });
        if (out) sock.write(out);
        return void sock.destroy();
      }
      const refused = take(flow, bytes);
      if (refused) log.debug('half-close refused', { flow, refused });
      out += `${refused ? 'N' : 'K'} ${flow}\n`;
    }
    if (buf.length > MAX_LINE) return void sock.destroy();
    if (out) sock.write(out);
  });
  sock.resume();
}
