import * as grpc from '@grpc/grpc-js';
import { errorMessage, listenFailure } from '../src/core/errors';
import { logger } from '../src/core/log';
import { PROTOCOL, VERSION } from '../src/core/version';
import { managerPackage, SERVER_OPTIONS } from '../src/rpc/services';
import { enlargeServerWindows } from '../src/rpc/windows';
import type { ManagerHandlers } from '../src/gen/rdbg/v1/Manager';
import type { ClusterInfo } from '../src/gen/rdbg/v1/ClusterInfo';
import { ClusterDNS } from './cluster-dns';
import { SessionRegistry } from './sessions';
import { newFlowStats, type FlowStats } from './flow-stats';
import { InterceptRegistry, type AgentAuthorizer } from './intercepts';
import { DataPlane } from './data-plane';
import { DialPolicy } from './dial-policy';
import { versionMismatch } from './version-check';
import { splitHostPort } from '../src/core/address';
import type { KubeMode } from './kube/mode';

const log = logger('manager');

export interface ManagerConfig {
  listen: string; // host:port
  dataListen?: string; // host:port of the data plane (default: the next port after listen's)
  serviceSubnets: string[];
  podSubnets: string[];
  clusterDomain: string;
  namespace: string; // where the manager runs
  namespaces?: string[]; // the cluster's namespaces (standalone: from flags)
  leaseSeconds: number;
  token?: string; // standalone: when set, clients and agents must present it
  /** Destinations beyond the cluster's subnets that clients may reach (--allow-cidr); see dial-policy.ts. */
  allowCidrs?: string[];
  /** Replaces the policy built from the subnets and allowCidrs (tests whose servers listen on loopback). */
  dialPolicy?: DialPolicy;
  /** Kubernetes mode: subnets and namespaces from the apiserver, agents by TokenReview, clients over port-forward only. */
  kube?: KubeMode;
}

export class ManagerServer {
  readonly server = new grpc.Server(SERVER_OPTIONS);
  readonly sessions: SessionRegistry;
  readonly dns: ClusterDNS;
  /** every flow's counters, on the data plane */
  readonly stats: FlowStats = newFlowStats();
  readonly intercepts: InterceptRegistry;
  readonly data: DataPlane;
  readonly dialPolicy: DialPolicy;
  port = 0;

  constructor(readonly config: ManagerConfig) {
    this.sessions = new SessionRegistry(config.leaseSeconds * 1000);
    this.dns = new ClusterDNS(config.clusterDomain, config.kube?.nameservers);
    this.dialPolicy =
      config.dialPolicy ??
      new DialPolicy({
        clusterSubnets: () => {
          const found = config.kube?.discovery;
          return found ? [...found.serviceSubnets, ...found.podSubnets] : [...config.serviceSubnets, ...config.podSubnets];
        },
        allowCidrs: config.allowCidrs,
      });
    this.intercepts = new InterceptRegistry(this.sessions, config.leaseSeconds * 1000);
    this.sessions.on('ended', (id: string) => config.kube?.claims.forget(id));
    this.data = new DataPlane(this.sessions, this.dns, this.stats, this.dialPolicy);
    this.data.broker = this.intercepts;
    this.server.addService(managerPackage().Manager.service, this.handlers());
  }

  clusterInfo(namespace: string): ClusterInfo {
    const found = this.config.kube?.discovery;
    return {
      service_subnets: found ? found.serviceSubnets : this.config.serviceSubnets,
      pod_subnets: found ? found.podSubnets : this.config.podSubnets,
      cluster_domain: this.config.clusterDomain,
      dns_search: this.dns.searchPath(namespace),
      dns_server: this.dns.servers()[0] ?? '',
      manager_namespace: this.config.namespace,
      namespaces: found ? found.namespaces : this.config.namespaces ?? ['default'],
    };
  }

  async start(): Promise<number> {
    // Discovery first: a manager that cannot read the cluster says so before it takes clients.
    await this.config.kube?.start();
    const creds = grpc.ServerCredentials.createInsecure();
    this.port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync(this.config.listen, creds, (err, port) => (err ? reject(listenFailure('--listen', this.config.listen, err)) : resolve(port))),
    );
    enlargeServerWindows(this.server);
    const { host, port } = splitHostPort(this.config.listen, '--listen');
    // Next to the gRPC port; an ephemeral gRPC port (0) gets an ephemeral data port (its +1 may be taken).
    const data = this.config.dataListen ? splitHostPort(this.config.dataListen, '--data-listen') : { host, port: port === 0 ? 0 : this.port + 1 };
    await this.data.listen(data.host, data.port).catch((err: unknown) => {
      this.server.forceShutdown();
      throw listenFailure('--data-listen', `${data.host}:${data.port}`, err, this.config.dataListen ? '' : "the port after --listen's");
    });
    log.info('traffic manager listening', {
      address: this.config.listen,
      port: this.port,
      dataPort: this.data.port,
      version: VERSION,
      mode: this.config.kube ? 'kubernetes' : 'standalone',
      serviceSubnets: this.clusterInfo(this.config.namespace).service_subnets,
      podSubnets: this.clusterInfo(this.config.namespace).pod_subnets,
      allowCidrs: this.dialPolicy.allowCidrs,
      dns: this.dns.servers(),
    });
    return this.port;
  }

  async stop(): Promise<void> {
    this.config.kube?.stop();
    this.sessions.close();
    this.intercepts.close();
    this.data.close();
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, 2000);
      this.server.tryShutdown(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  private checkToken(token: string | undefined): boolean {
    return !this.config.token || token === this.config.token;
  }

  private handlers(): ManagerHandlers {
    const kube = this.config.kube;
    const all = this.baseHandlers();
    if (!kube) return all;
    // Kubernetes mode: every client call must come over port-forward (a loopback peer).
    const guarded = { ...all };
    for (const name of CLIENT_CALLS) guarded[name] = guardClient(all[name], (call) => kube.clientRefusal(call)) as never;
    return guarded;
  }

  private agentAuthorizer(): AgentAuthorizer {
    const kube = this.config.kube;
    if (kube) return (info) => kube.authorizeAgent(info);
    return (info) =>
      Promise.resolve(this.checkToken(info.token) ? undefined : { code: grpc.status.UNAUTHENTICATED, details: 'the traffic manager requires a valid agent token' });
  }

  private baseHandlers(): ManagerHandlers {
    const manager = { version: VERSION, protocol: PROTOCOL };
    const noSession = (cb: grpc.sendUnaryData<never>): void =>
      cb({ code: grpc.status.NOT_FOUND, details: 'no such session (it expired, or the manager restarted): reconnect' });
    return {
      Version: (_call, cb) => cb(null, manager),
      Arrive: (call, cb) => {
        const r = call.request;
        if (!this.checkToken(r.token)) {
          cb({ code: grpc.status.UNAUTHENTICATED, details: 'the traffic manager requires a valid token' });
          return;
        }
        const mismatch = versionMismatch({ version: r.client_version, protocol: r.protocol }, 'client');
        if (mismatch) {
          cb({ code: grpc.status.FAILED_PRECONDITION, details: mismatch });
          return;
        }
        const resumed = r.resume_session_id ? this.sessions.resume(r.resume_session_id, r.user || 'unknown', r.hostname) : undefined;
        const s =
          resumed ??
          this.sessions.arrive({
            user: r.user || 'unknown',
            hostname: r.hostname,
            namespace: r.namespace || 'default',
            clientVersion: r.client_version,
          });
        cb(null, {
          session_id: s.id,
          resumed: !!resumed,
          manager,
          lease_seconds: this.config.leaseSeconds,
          cluster: this.clusterInfo(s.namespace),
          data_port: this.data.port,
        });
      },
      Heartbeat: (call, cb) => {
        if (!this.sessions.heartbeat(call.request.session_id)) return noSession(cb);
        cb(null, { ok: true });
      },
      Depart: (call, cb) => {
        this.sessions.depart(call.request.session_id);
        cb(null, {});
      },
      GetClusterInfo: (call, cb) => {
        const s = this.sessions.get(call.request.session_id);
        if (!s) return noSession(cb);
        cb(null, this.clusterInfo(s.namespace));
      },
      LookupDNS: (call, cb) => {
        const r = call.request;
        const s = this.sessions.get(r.session_id);
        if (!s) return noSession(cb);
        if (!r.name || r.name.length > 253) {
          cb({ code: grpc.status.INVALID_ARGUMENT, details: `invalid DNS name "${r.name.slice(0, 64)}"` });
          return;
        }
        this.dns.lookup(r.name, r.qtype, s.namespace).then(
          (res) => cb(null, res),
          (err) => cb({ code: grpc.status.INTERNAL, details: errorMessage(err) }),
        );
      },
      ...this.intercepts.clientHandlers(this.config.kube && ((...a) => this.config.kube!.checkClaim(...a))),
      ...this.intercepts.agentHandlers(this.agentAuthorizer(), () => this.data.port),
    };
  }
}

/** The RPCs only clients make. */
const CLIENT_CALLS = [
  'Arrive', 'Heartbeat', 'Depart', 'GetClusterInfo', 'LookupDNS', 'CreateIntercept', 'RemoveIntercept', 'ListIntercepts', 'WatchDiversions',
] as const;

type AnyCall = { getPeer(): string; emit?: (e: string, v: unknown) => boolean };

/** Wraps a unary or server-streaming handler so that it refuses calls `refusal` objects to. */
function guardClient<H>(handler: H, refusal: (call: AnyCall) => string | undefined): H {
  return ((call: AnyCall, cb?: grpc.sendUnaryData<unknown>) => {
    const why = refusal(call);
    if (!why) return (handler as (c: AnyCall, cb?: grpc.sendUnaryData<unknown>) => void)(call, cb);
    const err = { code: grpc.status.PERMISSION_DENIED, details: why };
    if (cb) cb(err);
    else call.emit?.('error', err);
  }) as H;
}
