/**
 * A stand-in for the user daemon on a developer's laptop, for the agent's
 * tests: it talks to a real traffic manager through the real Manager gRPC API
 * (Arrive, Heartbeat, CreateIntercept, WatchDiversions), and for each
 * DivertRequest dials the local server and answers on the data plane's
 * `accept` (H2FlowClient), joined with splice. The real user daemon (daemon/user) replaces it end to end.
 */
import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { describeErrno } from '../../manager/errno';
import { PROTOCOL, VERSION } from '../../src/core/version';
import { CHANNEL_OPTIONS, managerPackage, type ManagerClient } from '../../src/rpc/services';
import { H2FlowClient } from '../../src/tunnel/h2/client';
import { H } from '../../src/tunnel/h2/protocol';
import { splice } from '../../src/tunnel/splice';
import { dialCodeForErrno } from '../../src/tunnel/messages';
import type { DivertRequest__Output } from '../../src/gen/rdbg/v1/DivertRequest';
import type { InterceptInfo__Output } from '../../src/gen/rdbg/v1/InterceptInfo';
import type { InterceptSpec } from '../../src/gen/rdbg/v1/InterceptSpec';

export interface FakeLaptopOptions {
  manager: string; // host:port
  user?: string;
  namespace?: string;
}

export class FakeLaptop {
  readonly client: ManagerClient;
  sessionId = '';
  /** Diverted flows accepted, and how many of them dialled the local server. */
  readonly stats = { diversions: 0, dialled: 0, refused: 0 };
  private watch?: grpc.ClientReadableStream<DivertRequest__Output>;
  private heartbeat?: NodeJS.Timeout;
  private readonly flows = new Set<{ sock: net.Socket }>();
  private data?: H2FlowClient;

  constructor(private readonly opts: FakeLaptopOptions) {
    this.client = new (managerPackage().Manager)(opts.manager, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  }

  async arrive(): Promise<void> {
    const s = await new Promise<{ session_id: string; data_port: number }>((resolve, reject) =>
      this.client.Arrive(
        { client_version: VERSION, protocol: PROTOCOL, user: this.opts.user ?? 'dev@laptop', hostname: 'laptop', namespace: this.opts.namespace ?? 'default' },
        { deadline: Date.now() + 5000 },
        (err, res) => (err || !res ? reject(err) : resolve(res)),
      ),
    );
    this.sessionId = s.session_id;
    if (s.data_port) {
      const host = this.opts.manager.replace(/:\d+$/, '');
      this.data = new H2FlowClient(`${host}:${s.data_port}`, () => ({ [H.session]: this.sessionId }));
    }
    this.heartbeat = setInterval(() => this.client.Heartbeat({ session_id: this.sessionId }, () => undefined), 1000);
    this.heartbeat.unref();
    this.watchDiversions();
  }

  /** Accept diverted flows (again, after stopWatching). */
  watchDiversions(): void {
    this.watch = this.client.WatchDiversions({ session_id: this.sessionId });
    this.watch.on('data', (d: DivertRequest__Output) => this.accept(d));
    this.watch.on('error', () => undefined);
  }

  /** As if the laptop's daemon went away: no diversion watch, and its open flows are gone. */
  async stopWatching(): Promise<void> {
    this.watch?.cancel();
    this.watch = undefined;
    for (const f of this.flows) f.sock.destroy();
    await new Promise((r) => setTimeout(r, 200));
  }

  createIntercept(spec: InterceptSpec): Promise<InterceptInfo__Output> {
    return new Promise((resolve, reject) =>
      this.client.CreateIntercept({ session_id: this.sessionId, spec }, { deadline: Date.now() + 5000 }, (err, res) =>
        err || !res ? reject(err) : resolve(res),
      ),
    );
  }

  removeIntercept(id: string): Promise<void> {
    return new Promise((resolve, reject) =>
      this.client.RemoveIntercept({ session_id: this.sessionId, id }, { deadline: Date.now() + 5000 }, (err) => (err ? reject(err) : resolve())),
    );
  }

  listIntercepts(): Promise<InterceptInfo__Output[]> {
    return new Promise((resolve, reject) =>
      this.client.ListIntercepts({ session_id: this.sessionId }, { deadline: Date.now() + 5000 }, (err, res) =>
        err || !res ? reject(err) : resolve(res.intercepts),
      ),
    );
  }

  private accept(d: DivertRequest__Output): void {
    this.stats.diversions++;
    if (this.data) this.acceptH2(d, this.data);
  }

  private acceptH2(d: DivertRequest__Output, data: H2FlowClient): void {
    const host = d.local_host || '127.0.0.1';
    const sock = net.connect({ host, port: d.local_port, allowHalfOpen: true, noDelay: true });
    sock.once('error', (err: NodeJS.ErrnoException) => {
      this.stats.refused++;
      data.accept(d.flow_id, dialCodeForErrno(err.code), describeErrno(err)).then(
        (stream) => stream.end(),
        () => undefined,
      );
    });
    sock.once('connect', () => {
      this.stats.dialled++;
      sock.removeAllListeners('error');
      sock.pause();
      data.accept(d.flow_id, 'OK').then(
        (stream) => {
          const flow = { sock };
          this.flows.add(flow);
          stream.on('error', () => undefined);
          splice(sock, stream, { onDone: () => this.flows.delete(flow) });
          sock.resume();
        },
        () => sock.destroy(),
      );
    });
  }

  async close(): Promise<void> {
    clearInterval(this.heartbeat);
    this.data?.close();
    this.watch?.cancel();
    for (const f of this.flows) f.sock.destroy();
    if (this.sessionId) {
      await new Promise<void>((resolve) => this.client.Depart({ session_id: this.sessionId }, { deadline: Date.now() + 1000 }, () => resolve()));
    }
    this.client.close();
  }
}
