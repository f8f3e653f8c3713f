import { SOCKET_HWM } from '../../src/tunnel/fast-socket';
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import { logger } from '../../src/core/log';
import { DialError } from '../../src/tunnel/messages';
import {
  CMD, REPLY, SocksProtocolError, encodeUdpDatagram, parseGreeting, parseRequest, parseUdpDatagram, reply, type Address,
} from './socks5';
import type { Counters } from './counters';
import type { FlowOpener, TcpFlow, UdpFlow } from './flows';
import { UdpFlowTable } from '../../src/tunnel/udp-flow-table';
import { unmapIPv4 } from '../../src/core/address';

const log = logger('userd.socks');

const HANDSHAKE_TIMEOUT_MS = 10_000;
/** UDP destinations one association may hold at once; the next replaces the one idle the longest. */
const ASSOCIATION_MAX_FLOWS = 256;
const UDP_IDLE_MS = 60_000;
const MAX_HANDSHAKE_BYTES = 600;

/** A dial the manager's policy refused is the user's to see; other failures are routine. */
function logDialFailure(what: string, dst: string, err: unknown): void {
  const fields = { dst, err: (err as Error).message };
  if (err instanceof DialError && err.code === 'DENIED') log.warn(`${what}: the traffic manager refused it`, fields);
  else log.debug(what, fields);
}

function replyFor(err: unknown): number {
  if (!(err instanceof DialError)) return REPLY.GENERAL_FAILURE;
  switch (err.code) {
    case 'REFUSED':
      return REPLY.CONNECTION_REFUSED;
    case 'UNREACHABLE':
      return REPLY.HOST_UNREACHABLE;
    case 'NAME_ERROR':
      return REPLY.HOST_UNREACHABLE;
    case 'TIMEOUT':
      return REPLY.TTL_EXPIRED;
    case 'DENIED':
      return REPLY.NOT_ALLOWED;
    default:
      return REPLY.GENERAL_FAILURE;
  }
}

/**
 * A SOCKS5 proxy whose every destination is in the cluster: CONNECT opens a
 * TCP flow through the manager (names are resolved there, so
 * `curl --socks5-hostname` reaches `svc.ns`), UDP ASSOCIATE relays datagrams.
 */
export class SocksServer {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  /** Every joined flow's onDone (one function, not a closure per flow). */
  private readonly flowDone = (): void => void this.counters.flowsActive--;

  constructor(
    private readonly flows: FlowOpener,
    private readonly counters: Counters,
  ) {
    this.server = net.createServer({ allowHalfOpen: true, noDelay: true, highWaterMark: SOCKET_HWM }, (sock) => this.accept(sock));
    this.server.on('error', (err) => log.error('SOCKS listener failed', { err: err.message }));
  }

  listen(host: string, port: number): Promise<net.AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host, port, backlog: 4096 }, () => {
        this.server.removeListener('error', reject);
        resolve(this.server.address() as net.AddressInfo);
      });
    });
  }

  close(): void {
    this.server.close();
    for (const s of this.sockets) s.destroy();
  }

  private accept(sock: net.Socket): void {
    this.sockets.add(sock);
    sock.on('close', () => this.sockets.delete(sock));
    sock.on('error', () => undefined);
    let buf: Buffer = Buffer.alloc(0);
    let stage: 'greeting' | 'request' | 'busy' = 'greeting';
    const timer = setTimeout(() => abort('SOCKS handshake timed out'), HANDSHAKE_TIMEOUT_MS);
    const abort = (why: string, code?: number): void => {
      clearTimeout(timer);
      log.debug('SOCKS client rejected', { from: `${sock.remoteAddress}:${sock.remotePort}`, why });
      if (code !== undefined && !sock.destroyed) sock.end(reply(code));
      else sock.destroy();
      sock.removeListener('data', onData);
    };
    const onData = (chunk: Buffer): void => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      if (buf.length > MAX_HANDSHAKE_BYTES) return abort('SOCKS handshake too long');
      try {
        if (stage === 'greeting') {
          const g = parseGreeting(buf);
          if (!g) return;
          buf = buf.subarray(g.length);
          if (!g.methods.includes(0)) {
            sock.end(Buffer.from([5, 0xff]));
            return abort('client offers no method we accept (only "no authentication")');
          }
          sock.write(Buffer.from([5, 0]));
          stage = 'request';
        }
        if (stage === 'request') {
          const r = parseRequest(buf);
          if (!r) return;
          stage = 'busy';
          clearTimeout(timer);
          sock.removeListener('data', onData);
          sock.pause();
          const rest = buf.subarray(r.length);
          if (rest.length) sock.unshift(rest);
          if (r.cmd === CMD.CONNECT) void this.connect(sock, r.addr);
          else if (r.cmd === CMD.UDP_ASSOCIATE) void this.associate(sock);
          else abort(`SOCKS command ${r.cmd} is not supported`, REPLY.COMMAND_NOT_SUPPORTED);
        }
      } catch (err) {
        if (err instanceof SocksProtocolError) {
          abort(err.message, stage === 'request' ? err.reply : undefined);
        } else {
          abort(`internal error: ${(err as Error).message}`, REPLY.GENERAL_FAILURE);
        }
      }
    };
    sock.on('data', onData);
  }

  private async connect(sock: net.Socket, addr: Address): Promise<void> {
    const source = `${sock.remoteAddress}:${sock.remotePort}`;
    let flow: TcpFlow;
    try {
      flow = await this.flows.tcp(addr.host, addr.port, source);
    } catch (err) {
      this.counters.flowsFailed++;
      logDialFailure('SOCKS CONNECT failed', `${addr.host}:${addr.port}`, err);
      if (!sock.destroyed) sock.end(reply(replyFor(err)));
      return;
    }
    if (sock.destroyed) {
      flow.cancel();
      return;
    }
    this.counters.flowsOpened++;
    this.counters.flowsActive++;
    sock.write(reply(REPLY.SUCCEEDED, sock.localAddress, sock.localPort));
    flow.join(sock, this.flowDone);
    sock.resume();
  }

  /** UDP ASSOCIATE: one relay socket per association, one tunnel flow per destination. */
  private async associate(ctrl: net.Socket): Promise<void> {
    const local = ctrl.localAddress ?? '127.0.0.1';
    const udp = dgram.createSocket(net.isIPv6(unmapIPv4(local)) ? 'udp6' : 'udp4');
    // One client socket per association: the same bounded table as the TUN device's, its one source at the limit.
    const flows = new UdpFlowTable<Promise<UdpFlow | undefined>>({
      max: ASSOCIATION_MAX_FLOWS,
      perSource: ASSOCIATION_MAX_FLOWS,
      idleMs: UDP_IDLE_MS,
      onEvict: (f) => void f.then((s) => s?.close()),
    });
    let client: { address: string; port: number } | undefined;
    let closed = false;
    const close = (): void => {
      // Both the relay's error and the control connection's close end the association.
      if (closed) return;
      closed = true;
      udp.close();
      for (const f of flows.values()) void f.then((s) => s?.close());
      flows.clear();
      ctrl.destroy();
    };
    udp.on('error', close);
    ctrl.on('close', close);
    ctrl.on('data', () => undefined); // the control connection carries nothing more
    ctrl.resume();
    udp.on('message', (msg, rinfo) => {
      // Only the client that holds the control connection may use the relay.
      if (unmapIPv4(rinfo.address) !== unmapIPv4(ctrl.remoteAddress ?? '')) return;
      client = { address: rinfo.address, port: rinfo.port };
      let parsed: { addr: Address; data: Buffer };
      try {
        parsed = parseUdpDatagram(msg);
      } catch (err) {
        log.debug('bad SOCKS UDP datagram', { err: (err as Error).message });
        return;
      }
      const { addr, data } = parsed;
      const key = `${addr.host}|${addr.port}`;
      let flow = flows.get(key);
      if (flow) flows.touch(key);
      else {
        const forget = (): void => {
          if (flows.get(key) === flow) flows.delete(key);
        };
        flow = this.flows.udp(addr.host, addr.port, `${rinfo.address}:${rinfo.port}`).then(
          (f) => {
            this.counters.flowsOpened++;
            f.onDatagram((d) => {
              // A datagram may still arrive after the association closed its relay.
              if (!client || closed) return;
              flows.touch(key);
              this.counters.bytesIn += d.length;
              udp.send(encodeUdpDatagram(addr.host, addr.port, d), client.port, client.address, () => undefined);
            });
            f.onClose(forget);
            return f;
          },
          (err: Error) => {
            this.counters.flowsFailed++;
            logDialFailure('SOCKS UDP flow failed', `${addr.host}:${addr.port}`, err);
            forget();
            return undefined;
          },
        );
        flows.add(key, 'client', flow);
      }
      void flow.then((s) => {
        if (!s || closed) return;
        this.counters.bytesOut += data.length;
        s.send(data);
      });
    });
    udp.bind(0, unmapIPv4(local), () => {
      if (closed) return;
      const a = udp.address();
      ctrl.write(reply(REPLY.SUCCEEDED, a.address, a.port));
    });
  }
}
