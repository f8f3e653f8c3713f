import { execFileSync } from 'node:child_process';
import { Socket } from 'node:net';
import koffi from 'koffi';
import { libc } from './libc';
import { Codes, RdbgError } from '../../../src/core/errors';
import { logger } from '../../../src/core/log';
import type { Platform, Route, TunDevice, TunReader } from './platform';

const log = logger('rootd.tun');

const O_RDWR = 0x2;
const O_NONBLOCK = 0x800;
const O_CLOEXEC = 0x80000;
const TUNSETIFF = 0x400454ca;
const IFF_TUN = 0x0001;
const IFF_NO_PI = 0x1000;
const POLLIN = 0x1;
const EAGAIN = 11;
const EINTR = 4;
const MAX_PACKET = 65536;
/** Packets drained per readiness wake-up before yielding to the event loop. */
const DRAIN_BATCH = 512;


/**
 * A TUN device read the fast way (architecture.md): a non-blocking fd,
 * readiness from the event loop's own epoll, then draining synchronously
 * until EAGAIN or a batch is done. The readiness wait on a worker thread
 * (koffi async poll) that architecture.md describes cost a thread hop per
 * wake-up, about 85 us per round trip on the TUN path (measured A/B in one
 * sandbox); it remains as the fallback, and `RDBG_TUN_READER=poll` picks it.
 */
class LinuxTun implements TunDevice {
  readonly stats = { read: 0, written: 0, dropped: 0 };
  private closed = false;
  private readonly buf = Buffer.allocUnsafe(MAX_PACKET);
  private readonly pollfd = Buffer.alloc(8);
  private watcher?: Socket;

  constructor(
    readonly name: string,
    private readonly fd: number,
    private readonly reader: TunReader = 'event-loop',
  ) {
    this.pollfd.writeInt32LE(fd, 0);
    this.pollfd.writeInt16LE(POLLIN, 4);
  }

  start(onPacket: (pkt: Buffer) => void): void {
    const c = libc();
    const deliver = (pkt: Buffer): void => {
      this.stats.read++;
      try {
        onPacket(pkt);
      } catch (err) {
        this.stats.dropped++;
        log.warn('packet handler failed', { err: (err as Error).message });
      }
    };
    const drain = (): number => {
      let n = 0;
      for (; n < DRAIN_BATCH; n++) {
        const len = Number(c.read(this.fd, this.buf, MAX_PACKET));
        if (len <= 0) {
          const e = koffi.errno();
          if (len < 0 && e !== EAGAIN && e !== EINTR) log.warn('TUN read failed', { errno: e });
          break;
        }
        deliver(this.buf.subarray(0, len));
      }
      return n;
    };
    if (this.reader !== 'poll') {
      try {
        this.watcher = watchReadable(this.fd, this.buf, (len) => {
          deliver(this.buf.subarray(0, len));
          drain();
        });
        log.info('TUN reader: event loop', { device: this.name });
        return;
      } catch (err) {
        log.warn('TUN reader: falling back to a poll thread', { err: (err as Error).message });
      }
    } else log.info('TUN reader: poll thread (RDBG_TUN_READER=poll)', { device: this.name });
    // While packets keep coming, read them on every turn of the event loop;
    // only an empty queue sends us to the (thread-hopping) readiness wait.
    const again = (): void => {
      if (this.closed) return;
      if (drain() > 0) setImmediate(again);
      else wait();
    };
    const wait = (): void => {
      if (this.closed) return;
      this.pollfd.writeInt16LE(0, 6);
      c.poll.async(this.pollfd, 1, 1000, (err: unknown) => {
        if (this.closed) return;
        if (err) log.error('poll failed', { err: String(err) });
        drain();
        setImmediate(again);
      });
    };
    wait();
  }

  write(pkt: Buffer): boolean {
    if (this.closed) return false;
    const n = Number(libc().write(this.fd, pkt, pkt.length));
    if (n !== pkt.length) {
      this.stats.dropped++;
      return false;
    }
    this.stats.written++;
    return true;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.watcher) this.watcher.destroy(); // closes the fd
    else libc().close(this.fd);
  }
}

/**
 * Reads a non-blocking character device on the event loop's own epoll, as
 * libuv reads a pipe: no thread hop per wake-up. Each read() of a TUN device
 * returns exactly one packet, and libuv hands each read to `onRead` on its
 * own; `onRead` may drain more packets synchronously before it returns.
 * Writes do not go through the handle (a stream would merge queued writes
 * into one writev, i.e. one packet).
 */
/** Read a pollable fd on the event loop into `buffer` (one read per readiness, then `onRead`). */
export function watchReadable(fd: number, buffer: Buffer, onRead: (len: number) => void, what = 'the TUN device'): Socket {
  // pipe_wrap is on Node's process.binding allow-list; uv_pipe_open accepts
  // any pollable fd, and net.Socket's `onread` reads into our buffer.
  const { Pipe, constants } = (process as unknown as { binding(name: string): PipeWrap }).binding('pipe_wrap');
  const handle = new Pipe(constants.SOCKET);
  const err = handle.open(fd);
  if (err) throw new Error(`cannot watch ${what} (uv error ${err})`);
  const sock = new Socket({ handle, readable: true, writable: false, onread: { buffer, callback: (len: number) => (onRead(len), true) } } as never);
  sock.on('error', (e) => log.error(`reading ${what} failed`, { err: e.message }));
  return sock;
}

interface PipeWrap {
  Pipe: new (type: number) => { open(fd: number): number };
  constants: { SOCKET: number };
}

function ip(args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Several `ip` commands in one process (`ip -batch -`); the words are rdbg's own (device names, CIDRs), never quoted. */
function ipBatch(commands: string[][]): void {
  for (const words of commands) {
    if (words.some((w) => !/^[\w.:/-]+$/.test(w))) throw new Error(`not a word for ip -batch: ${words.join(' ')}`);
  }
  execFileSync('ip', ['-batch', '-'], { input: commands.map((c) => c.join(' ')).join('\n') + '\n', encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
}

const EPERM = 1;
const ENOENT = 2;
const ENXIO = 6;
const EACCES = 13;
const EBUSY = 16;
const ENODEV = 19;
const EINVAL = 22;

/** Why the TUN device could not be had, and what to do about it. */
function tunFailure(name: string, step: 'open' | 'create', errno: number): RdbgError {
  if (errno === EBUSY) {
    return new RdbgError(Codes.TUN_DEVICE, `the TUN device ${name} is in use by another session on this machine`,
      'give this session its own device and subnet: rdbg connect --tun-name rdbg1 --tun-cidr 169.254.84.0/24 (or "rdbg quit" the other session)');
  }
  if (errno === EPERM || errno === EACCES) {
    return new RdbgError(Codes.TUN_DEVICE, `creating the TUN device ${name} was refused: it needs root (CAP_NET_ADMIN)`,
      'run "rdbg connect" as a user who may sudo the root daemon (README: the sudo rule), or use "rdbg connect --socks PORT"');
  }
  if (step === 'open' && (errno === ENOENT || errno === ENODEV || errno === ENXIO)) {
    return new RdbgError(Codes.TUN_DEVICE, 'this machine has no TUN driver (/dev/net/tun)', 'load it ("sudo modprobe tun"), or use "rdbg connect --socks PORT"');
  }
  if (errno === EINVAL) return new RdbgError(Codes.TUN_DEVICE, `the TUN device name ${name} is not accepted by the kernel`, 'give --tun-name a name of at most 15 letters and digits');
  return new RdbgError(Codes.TUN_DEVICE, `cannot ${step === 'open' ? 'open /dev/net/tun' : `create the TUN device ${name}`} (errno ${errno})`);
}

export const linuxPlatform: Platform = {
  openTun(name, reader) {
    const fd = libc().open('/dev/net/tun', O_RDWR | O_NONBLOCK | O_CLOEXEC) as number;
    if (fd < 0) throw tunFailure(name, 'open', koffi.errno());
    const ifr = Buffer.alloc(40);
    ifr.write(name.slice(0, 15), 0, 'ascii');
    ifr.writeUInt16LE(IFF_TUN | IFF_NO_PI, 16);
    if ((libc().ioctl(fd, TUNSETIFF, ifr) as number) < 0) {
      const e = koffi.errno();
      libc().close(fd);
      throw tunFailure(name, 'create', e);
    }
    return new LinuxTun(ifr.toString('ascii', 0, 16).replace(/\0.*$/, ''), fd, reader);
  },
  configureTun(name, { addresses, mtu, txqueuelen, routes }) {
    // One `ip -batch` process (each `ip` is some 4 ms of a connect); it stops at the first command that fails, and says which.
    // (A batch line takes no options such as -6: ip reads the family from the address.)
    ipBatch([
      ['link', 'set', 'dev', name, 'mtu', String(mtu), 'txqueuelen', String(txqueuelen)],
      ...addresses.map((a) => ['addr', 'add', a, 'dev', name]),
      ['link', 'set', 'dev', name, 'up'],
      ...routes.map((r) => ['route', 'add', r, 'dev', name]),
    ]);
  },
  addRoute(cidr, dev, via) {
    ip([cidr.includes(':') ? '-6' : '-4', 'route', 'add', cidr, ...(via ? ['via', via] : []), 'dev', dev]);
  },
  deleteRoute(cidr, dev) {
    ip([cidr.includes(':') ? '-6' : '-4', 'route', 'del', cidr, ...(dev ? ['dev', dev] : [])]);
  },
  routes() {
    const out: Route[] = [];
    for (const fam of ['-4', '-6']) {
      const parsed = JSON.parse(ip(['-j', fam, 'route', 'show']) || '[]') as { dst: string; dev: string; gateway?: string }[];
      for (const r of parsed) out.push({ dst: r.dst, dev: r.dev, via: r.gateway });
    }
    return out;
  },
  routeTo(addr) {
    try {
      const r = JSON.parse(ip(['-j', 'route', 'get', addr]))[0] as { dev: string; gateway?: string };
      return { dst: addr, dev: r.dev, via: r.gateway };
    } catch {
      return undefined;
    }
  },
  linkExists(name) {
    try {
      ip(['link', 'show', 'dev', name]);
      return true;
    } catch {
      return false;
    }
  },
  deleteLink(name) {
    ip(['link', 'del', 'dev', name]);
  },
};
