import * as grpc from '@grpc/grpc-js';
import * as net from 'node:net';
import { logger } from '../../src/core/log';
import type { DataPlaneClient } from '../../src/tunnel/client';
import { SOCKET_HWM } from '../../src/tunnel/fast-socket';
import { splice } from '../../src/tunnel/splice';
import type { DivertRequest__Output } from '../../src/gen/rdbg/v1/DivertRequest';
import type { Counters } from './counters';
import type { ManagerLink } from './manager-link';
import type { Mounts } from './mounts';

const log = logger('userd.divert');

/**
 * The laptop end of intercepts: watches the manager for diverted flows and
 * joins each to a fresh connection to the local process (127.0.0.1:PORT).
 */
export class DivertAcceptor {
  private watch?: grpc.ClientReadableStream<DivertRequest__Output>;
  private closed = false;

  constructor(
    private readonly link: ManagerLink,
    private readonly counters: Counters,
    private readonly dataPlane: () => DataPlaneClient | undefined = () => undefined,
    private readonly mounts?: Mounts,
  ) {
    link.on('session', () => this.start());
  }

  start(): void {
    if (this.closed) return;
    this.watch?.cancel();
    const session = this.link.sessionId;
    const watch = this.link.client.watchDiversions({ session_id: session });
    this.watch = watch;
    watch.on('data', (req: DivertRequest__Output) => this.accept(req));
    watch.on('error', (err: grpc.ServiceError) => {
      if (err.code === grpc.status.CANCELLED || this.closed) return;
      log.debug('diversion watch ended', { err: err.details });
      // Retry while this session lasts; a new session starts a new watch.
      setTimeout(() => {
        if (this.link.sessionId === session && this.link.state === 'CONNECTED' && this.watch === watch) this.start();
      }, 1000);
    });
  }

  private accept(req: DivertRequest__Output): void {
    const dp = this.dataPlane();
    if (dp && req.kind === 'files') return this.acceptFiles(req, dp);
    if (dp) return this.acceptOn(req, dp);
    log.warn('a diverted flow came while there is no data plane', { flow: req.flow_id });
  }

  /** Over the data plane: dial the local process first, then answer with the result. */
  private acceptOn(req: DivertRequest__Output, dp: DataPlaneClient): void {
    const host = req.local_host || '127.0.0.1';
    const sock = net.connect({ host, port: req.local_port, allowHalfOpen: true, noDelay: true, highWaterMark: SOCKET_HWM } as net.NetConnectOpts);
    sock.once('error', (err: NodeJS.ErrnoException) => {
      const why = err.code === 'ECONNREFUSED' ? 'connection refused (is the local process listening?)' : `${err.code ?? err.message}`;
      log.info('local process unreachable for a diverted flow', { target: `${host}:${req.local_port}`, err: err.code });
      dp.accept(req.flow_id, err.code === 'ECONNREFUSED' ? 'REFUSED' : 'FAILED', `could not reach ${host}:${req.local_port}: ${why}`).then(
        (s) => s.close(),
        () => undefined,
      );
    });
    sock.once('connect', () => {
      sock.removeAllListeners('error');
      sock.on('error', () => undefined);
      dp.accept(req.flow_id, 'OK').then(
        (stream) => {
          this.counters.divertedFlows++;
          sock.removeAllListeners('error');
          splice(sock, stream, { counters: this.counters });
        },
        (err: Error) => {
          log.debug('diverted flow could not be accepted', { err: err.message });
          sock.destroy();
        },
      );
    });
  }

  /** An agent's files for a mount: to the mount that waits for them, or refused. */
  private acceptFiles(req: DivertRequest__Output, dp: DataPlaneClient): void {
    const m = this.mounts;
    if (!m?.wants(req.intercept_id)) {
      dp.accept(req.flow_id, 'REFUSED', 'this laptop mounts no files of this intercept now').then((s) => s.close(), () => undefined);
      return;
    }
    dp.accept(req.flow_id, 'OK').then(
      (stream) => m.take(req.intercept_id, req.pod, stream),
      (err: Error) => log.debug('files flow could not be accepted', { err: err.message }),
    );
  }

  close(): void {
    this.closed = true;
    this.watch?.cancel();
  }
}
