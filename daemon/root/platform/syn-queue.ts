import koffi from 'koffi';
import { logger } from '../../../src/core/log';
import { libc } from './libc';
import { watchReadable } from './linux';

const log = logger('rootd.nat');

const AF_NETLINK = 16;
const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0o2000000;
const NETLINK_NETFILTER = 12;
const NLMSG_ERROR = 2;
const NLM_F_REQUEST = 1;
const NLM_F_ACK = 4;
const NFNL_SUBSYS_QUEUE = 3;
const NFQNL_MSG_PACKET = 0;
const NFQNL_MSG_VERDICT = 1;
const NFQNL_MSG_CONFIG = 2;
const NFQA_CFG_CMD = 1;
const NFQA_CFG_PARAMS = 2;
const NFQA_CFG_QUEUE_MAXLEN = 3;
const NFQA_CFG_MASK = 4;
const NFQA_CFG_FLAGS = 5;
/** A SYN the queue has no room for goes on unheld (and is dialled once accepted) instead of being dropped. */
const NFQA_CFG_F_FAIL_OPEN = 1;
const SOL_SOCKET = 1;
const SO_RCVBUFFORCE = 33;
const SO_RCVTIMEO = 20;
const SOL_NETLINK = 270;
const NETLINK_NO_ENOBUFS = 5;
/** SYNs the kernel holds for us at once (its default is 1,024; a burst of connections can be more). */
const QUEUE_MAXLEN = 16_384;
/** Room for a burst of queued SYNs in the socket (about 300 bytes each). */
const RCVBUF = 8 * 1024 * 1024;
const NFQNL_CFG_CMD_BIND = 1;
const NFQNL_COPY_PACKET = 2;
const NFQA_PACKET_HDR = 1;
const NFQA_VERDICT_HDR = 2;
const NFQA_PAYLOAD = 10;
const NF_DROP = 0;
const NF_ACCEPT = 1;
/** A SYN's IP and TCP headers, with options, fit in this. */
const COPY_RANGE = 256;
const EAGAIN = 11;


function attr(type: number, value: Buffer): Buffer {
  const len = 4 + value.length;
  const out = Buffer.alloc((len + 3) & ~3);
  out.writeUInt16LE(len, 0);
  out.writeUInt16LE(type, 2);
  value.copy(out, 4);
  return out;
}

/** A netfilter-queue message: nlmsghdr, nfgenmsg (family, version 0, the queue number), attributes. */
function message(type: number, flags: number, seq: number, queue: number, attrs: Buffer[]): Buffer {
  const body = Buffer.concat(attrs);
  const out = Buffer.alloc(16 + 4 + body.length);
  out.writeUInt32LE(out.length, 0);
  out.writeUInt16LE((NFNL_SUBSYS_QUEUE << 8) | type, 4);
  out.writeUInt16LE(flags, 6);
  out.writeUInt32LE(seq, 8);
  out.writeUInt32LE(0, 12);
  out.writeUInt8(0, 16); // AF_UNSPEC
  out.writeUInt8(0, 17); // NFNETLINK_V0
  out.writeUInt16BE(queue, 18);
  body.copy(out, 20);
  return out;
}

/**
 * The kernel's netfilter queue (NFQUEUE), for the SYNs of connections to
 * the cluster: each is held in the kernel until a verdict, so the program's
 * connect() waits while the manager dials, as it would for a pod's SYN-ACK.
 * The netlink messages are the kernel's nfnetlink_queue ABI
 * (linux/netfilter/nfnetlink_queue.h), read on the event loop like the TUN.
 */
export class SynQueue {
  private readonly fd: number;
  private seq = 1;
  private readonly buf = Buffer.allocUnsafe(64 * 1024);
  private watcher?: { destroy(): void };
  private closed = false;

  private constructor(
    readonly queue: number,
    fd: number,
  ) {
    this.fd = fd;
  }

  /**
   * Bind a free queue number from `first` on (`tries` of them); undefined when
   * the kernel has no netfilter queue or every number is taken.
   */
  static open(first: number, tries = 64): SynQueue | undefined {
    for (let q = first; q < first + tries; q++) {
      const fd = libc().socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
      if (fd < 0) {
        log.info('no netfilter queue', { errno: koffi.errno() });
        return undefined;
      }
      const sq = new SynQueue(q, fd);
      const err = sq.configure();
      if (err === 0) return sq;
      libc().close(fd);
      if (err !== -16 /* EBUSY: another program's queue */) {
        log.info('the netfilter queue cannot be bound', { queue: q, errno: -err });
        return undefined;
      }
    }
    return undefined;
  }

  /** Bind the queue and ask for the packets' first bytes; 0 or the kernel's -errno. Runs on the blocking socket, before the watch. */
  private configure(): number {
    const addr = Buffer.alloc(12);
    addr.writeUInt16LE(AF_NETLINK, 0);
    if (libc().bind(this.fd, addr, addr.length) !== 0) return -koffi.errno();
    // A burst of SYNs larger than the socket's buffer is then dropped (the programs retransmit), not an error that ends the reads.
    const int = (v: number): Buffer => Buffer.from(new Int32Array([v]).buffer);
    libc().setsockopt(this.fd, SOL_SOCKET, SO_RCVBUFFORCE, int(RCVBUF), 4);
    libc().setsockopt(this.fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, int(1), 4);
    // The configuration's acknowledgements are read blocking: never longer than this.
    const timeout = Buffer.alloc(16);
    timeout.writeBigInt64LE(2n, 0);
    libc().setsockopt(this.fd, SOL_SOCKET, SO_RCVTIMEO, timeout, timeout.length);
    const u32 = (v: number): Buffer => {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(v, 0);
      return b;
    };
    const cmd = Buffer.alloc(4);
    cmd.writeUInt8(NFQNL_CFG_CMD_BIND, 0);
    const params = Buffer.alloc(5);
    params.writeUInt32BE(COPY_RANGE, 0);
    params.writeUInt8(NFQNL_COPY_PACKET, 4);
    for (const a of [attr(NFQA_CFG_CMD, cmd), attr(NFQA_CFG_PARAMS, params), attr(NFQA_CFG_QUEUE_MAXLEN, u32(QUEUE_MAXLEN))]) {
      const err = this.request(message(NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, this.seq++, this.queue, [a]));
      if (err !== 0) return err;
    }
    // Fail-open came later than the rest (Linux 3.6): without it a full queue drops SYNs, which the programs retransmit.
    this.request(message(NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, this.seq++, this.queue, [attr(NFQA_CFG_FLAGS, u32(NFQA_CFG_F_FAIL_OPEN)), attr(NFQA_CFG_MASK, u32(NFQA_CFG_F_FAIL_OPEN))]));
    return 0;
  }

  /** Send and read the kernel's acknowledgement of this message (blocking, at most 2 s): 0 or -errno. */
  private request(msg: Buffer): number {
    const seq = msg.readUInt32LE(8);
    if (Number(libc().write(this.fd, msg, msg.length)) !== msg.length) return -koffi.errno();
    // Anything else that comes first (a packet of a queue number a crashed daemon's rules still name) is skipped.
    for (let i = 0; i < 64; i++) {
      const n = Number(libc().read(this.fd, this.buf, this.buf.length));
      if (n < 20) return -(koffi.errno() || 5);
      if (this.buf.readUInt16LE(4) === NLMSG_ERROR && this.buf.readUInt32LE(8) === seq) return this.buf.readInt32LE(16);
    }
    return -5;
  }

  /**
   * Deliver each queued packet (its id and its first COPY_RANGE bytes, valid
   * during the call); `onLost` if the reads end other than by close().
   */
  start(onPacket: (id: number, packet: Buffer) => void, onLost: () => void): void {
    // The watch reads from here on: the socket becomes non-blocking under libuv.
    const w = watchReadable(this.fd, this.buf, (len) => this.parse(len, onPacket), 'the netfilter queue');
    w.on('close', () => {
      if (!this.closed) {
        this.closed = true;
        onLost();
      }
    });
    this.watcher = w;
  }

  private parse(len: number, onPacket: (id: number, packet: Buffer) => void): void {
    let off = 0;
    while (off + 16 <= len) {
      const msgLen = this.buf.readUInt32LE(off);
      if (msgLen < 16 || off + msgLen > len) break;
      const type = this.buf.readUInt16LE(off + 4);
      if (type === ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET)) {
        let id = -1;
        let payload: Buffer | undefined;
        for (let a = off + 20; a + 4 <= off + msgLen; ) {
          const aLen = this.buf.readUInt16LE(a);
          const aType = this.buf.readUInt16LE(a + 2) & 0x3fff;
          if (aLen < 4) break;
          if (aType === NFQA_PACKET_HDR && aLen >= 8) id = this.buf.readUInt32BE(a + 4);
          else if (aType === NFQA_PAYLOAD) payload = this.buf.subarray(a + 4, a + aLen);
          a += (aLen + 3) & ~3;
        }
        if (id >= 0 && payload) {
          try {
            onPacket(id, payload);
          } catch (err) {
            log.warn('SYN handler failed', { err: (err as Error).message });
            this.verdict(id, true);
          }
        }
      }
      off += (msgLen + 3) & ~3;
    }
  }

  /** Let the packet go on (accept), or drop it. */
  verdict(id: number, accept: boolean): void {
    if (this.closed) return;
    const v = Buffer.alloc(8);
    v.writeUInt32BE(accept ? NF_ACCEPT : NF_DROP, 0);
    v.writeUInt32BE(id, 4);
    const msg = message(NFQNL_MSG_VERDICT, NLM_F_REQUEST, this.seq++, this.queue, [attr(NFQA_VERDICT_HDR, v)]);
    if (Number(libc().write(this.fd, msg, msg.length)) !== msg.length) {
      const e = koffi.errno();
      // The kernel's netlink buffer: a packet that gets no verdict stays queued until the queue closes.
      if (e !== EAGAIN) log.warn('netfilter queue verdict failed', { errno: e });
    }
  }

  /** Closing the socket unbinds the queue; the rule's --queue-bypass then lets SYNs through. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.watcher) this.watcher.destroy();
    else libc().close(this.fd);
  }
}
