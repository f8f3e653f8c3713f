import { SOCKET_HWM } from '../src/tunnel/h2-flows';
import * as net from 'node:net';
import type * as grpc from '@grpc/grpc-js';
import { errorMessage } from '../src/core/errors';
import { logger } from '../src/core/log';
import { pipeFlow } from '../src/tunnel/flow-pipe';
import { dialCodeForErrno, type TunnelMessage, type TunnelMessage__Output, type TunnelStream } from '../src/tunnel/messages';
import type { Open__Output } from '../src/gen/rdbg/v1/Open';
import type { DialResult } from '../src/gen/rdbg/v1/DialResult';
import type { ClusterDNS } from './cluster-dns';
import type { DialPolicy } from './dial-policy';
import type { SessionRegistry } from './sessions';
import { describeErrno } from './errno';
import { runUdpFlow } from './udp-flow';
import type { TunnelStats } from './tunnel-stats';

export { describeErrno };

const log = logger('manager.tunnel');

const OPEN_TIMEOUT_MS = 10_000;
const DIAL_TIMEOUT_MS = 10_000;

export type TunnelCall = grpc.ServerDuplexStream<TunnelMessage__Output, TunnelMessage>;

/** Flows that do not dial out: diverted flows between an agent and a client. */
export interface DivertBroker {
  fromAgent(open: Open__Output, call: TunnelStream): void;
  fromClient(open: Open__Output, call: TunnelStream): void;
}

export type { TunnelStats };

/** One Tunnel call: wait for `open`, dial the destination, then carry the flow. */
export class TunnelHandler {
  readonly stats: TunnelStats = { bytesIn: 0, bytesOut: 0, flowsOpened: 0, flowsFailed: 0, flowsActive: 0 };
  broker?: DivertBroker;
  /** Kubernetes mode: why a client (not an agent) may not open flows from this call's peer, if it may not. */
  clientGuard?: (call: TunnelCall) => string | undefined;

  constructor(
    private readonly sessions: SessionRegistry,
    private readonly dns: ClusterDNS,
    private readonly policy: DialPolicy,
  ) {}

  handle(call: TunnelCall): void {
    const stream = call as unknown as TunnelStream;
    // A peer that vanishes produces an error on the call; the flow's own handlers deal with it.
    call.on('error', (err) => log.debug('tunnel call error', { err: errorMessage(err) }));
    const timer = setTimeout(() => reject(stream, 'FAILED', 'no open message within 10 seconds'), OPEN_TIMEOUT_MS);
    stream.once('data', (msg) => {
      clearTimeout(timer);
      if (msg.msg !== 'open' || !msg.open) {
        reject(stream, 'FAILED', `the first message of a flow must be "open", got "${msg.msg ?? 'empty'}"`);
        return;
      }
      const open = msg.open;
      try {
        if (open.intercept_id) return this.requireBroker(stream)?.fromAgent(open, stream);
        const refused = this.clientGuard?.(call);
        if (refused) return reject(stream, 'DENIED', refused);
        if (!this.sessions.get(open.session_id)) {
          reject(stream, 'DENIED', 'no such session (it expired, or the manager restarted): reconnect');
          return;
        }
        if (open.accept_flow_id) return this.requireBroker(stream)?.fromClient(open, stream);
        // An exception while a flow opens ends that flow only.
        const failed = (err: unknown): void => {
          log.error('flow failed on an internal error', { err: (err as Error)?.stack ?? String(err) });
          reject(stream, 'FAILED', `internal error: ${errorMessage(err)}`);
        };
        if (open.protocol === 'UDP') return void this.openUdp(open, stream).catch(failed);
        if (open.protocol === 'TCP') return void this.openTcp(open, stream).catch(failed);
        reject(stream, 'FAILED', `unknown protocol "${String(open.protocol)}"`);
      } catch (err) {
        reject(stream, 'FAILED', `bad open message: ${errorMessage(err)}`);
      }
    });
  }

  private requireBroker(stream: TunnelStream): DivertBroker | undefined {
    if (!this.broker) reject(stream, 'FAILED', 'this manager does not carry intercepts');
    return this.broker;
  }

  private validTarget(open: Open__Output, stream: TunnelStream): boolean {
    if (!open.host || open.host.length > 253 || !Number.isInteger(open.port) || open.port < 1 || open.port > 65535) {
      reject(stream, 'FAILED', `invalid destination "${open.host}:${open.port}"`);
      return false;
    }
    return true;
  }

  private async resolve(open: Open__Output, stream: TunnelStream): Promise<string | undefined> {
    if (net.isIP(open.host)) return this.allowed(open, open.host, stream);
    const ns = this.sessions.get(open.session_id)?.namespace || 'default';
    let addrs: string[] = [];
    try {
      addrs = await this.dns.addresses(open.host, ns);
    } catch (err) {
      log.debug('resolve failed', { host: open.host, err: errorMessage(err) });
    }
    if (addrs.length === 0) {
      reject(stream, 'NAME_ERROR', `no such host "${open.host}" in the cluster`, 'ENOTFOUND');
      return undefined;
    }
    return this.allowed(open, addrs[0], stream);
  }

  /** The address when the dial policy lets the flow dial it; else the flow is refused. */
  private allowed(open: Open__Output, address: string, stream: TunnelStream): string | undefined {
    const refused = this.policy.refusal(address, open.port);
    if (!refused) return address;
    this.stats.flowsFailed++;
    log.info('dial refused', { session: open.session_id, host: open.host, why: refused });
    reject(stream, 'DENIED', refused, '', address);
    return undefined;
  }

  private async openTcp(open: Open__Output, stream: TunnelStream): Promise<void> {
    if (!this.validTarget(open, stream)) return;
    stream.pause();
    const address = await this.resolve(open, stream);
    if (!address) return;
    const sock = net.connect({ host: address, port: open.port, allowHalfOpen: true, noDelay: true, highWaterMark: SOCKET_HWM } as net.NetConnectOpts);
    sock.setTimeout(DIAL_TIMEOUT_MS);
    const onDialError = (err: NodeJS.ErrnoException): void => {
      sock.destroy();
      this.stats.flowsFailed++;
      const code = dialCodeForErrno(err.code);
      reject(stream, code, `${address}:${open.port}: ${describeErrno(err)}`, err.code, address);
    };
    sock.once('timeout', () => onDialError(Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' })));
    sock.once('error', onDialError);
    // The client may give up (cancel) while we dial.
    const onCancel = (): void => {
      sock.destroy();
    };
    stream.on('error', onCancel);
    sock.once('connect', () => {
      sock.removeListener('error', onDialError);
      stream.removeListener('error', onCancel as never);
      sock.removeAllListeners('timeout');
      sock.setTimeout(0);
      sock.setKeepAlive(true, 30_000);
      this.stats.flowsOpened++;
      this.stats.flowsActive++;
      stream.write({ dial: { code: 'OK', address } });
      pipeFlow(sock, stream, {
        counters: this.stats,
        onDone: (err) => {
          this.stats.flowsActive--;
          if (err) log.debug('flow ended', { dst: `${address}:${open.port}`, err });
        },
      });
      stream.resume();
    });
  }

  private async openUdp(open: Open__Output, stream: TunnelStream): Promise<void> {
    if (!this.validTarget(open, stream)) return;
    const address = await this.resolve(open, stream);
    if (!address) return;
    runUdpFlow(address, open.port, stream, this.stats);
  }
}

export function reject(stream: TunnelStream, code: NonNullable<DialResult['code']>, message: string, errno?: string, address?: string): void {
  try {
    stream.write({ dial: { code, message, errno: errno ?? '', address: address ?? '' } });
    stream.end();
  } catch {
    // the peer is already gone
  }
}
