import * as grpc from '@grpc/grpc-js';
import { routeGrpcLogs } from '../../src/rpc/grpc-log';
import { rmSync, writeFileSync } from 'node:fs';
import { Codes, RdbgError, errorMessage } from '../../src/core/errors';
import { raiseFileLimit } from '../../src/core/rlimit';
import { startGcPacer } from '../../src/core/gc-pacer';
import { startProfile, stopProfile } from '../../src/core/profile';
import { readConfig, type UserConfig } from '../../src/core/config';
import { logger, setLevel, setTrace, toggleDebugOnSignal } from '../../src/core/log';
import { daemonPidPath, daemonSocketPath } from '../../src/core/paths';
import { VERSION } from '../../src/core/version';
import { joinHostPort, splitHostPort } from '../../src/core/address';
import { parse } from '../../src/cli/args';
import { COMMANDS } from '../../src/cli/spec';
import { daemonPackage } from '../../src/rpc/services';
import { PREPARE_IN_CLI } from '../../src/rpc/local-client';
import { listenLocalApi, type LocalApi } from '../../src/rpc/local-api';
import type { StartupMessage } from '../../src/rpc/startup';
import type { SessionGrant } from '../../src/gen/rdbg/v1/SessionGrant';
import type { UserDaemonHandlers } from '../../src/gen/rdbg/v1/UserDaemon';
import { newCounters } from './counters';
import { DivertAcceptor } from './divert-acceptor';
import { LocalIntercepts } from './intercepts';
import { Mounts } from './mounts';
import type { InterceptInfo__Output } from '../../src/gen/rdbg/v1/InterceptInfo';
import { cleanupMounts } from '../../src/core/mount-journal';
import { ManagerLink } from './manager-link';
import { SocksServer } from './socks-server';
import { FlowOpener } from './flows';
import type { KubeTransport } from './kube-transport';

const log = logger('userd');
const ilog = logger('userd.intercepts');


function tell(msg: StartupMessage): void {
  if (process.send) {
    process.send(msg, () => process.disconnect?.());
  }
}

export async function userDaemonMain(argv: string[]): Promise<void> {
  const { values } = parse('daemon-user', argv, COMMANDS['daemon-user'].flags);
  routeGrpcLogs(log);
  let cfg: UserConfig | undefined;
  try {
    cfg = readConfig('user');
    setLevel(cfg.logLevel ?? 'info');
    setTrace(cfg.trace);
    raiseFileLimit();
    startProfile(cfg.cpuProfile);
    toggleDebugOnSignal();
    startGcPacer();
    const kube = values.kubernetes
      ? // loaded only in Kubernetes mode: the Kubernetes client is tens of MB of heap
        await (await import('./kube-transport')).openKubeTransport(
          { kubeconfig: values.kubeconfig, kubeconfigList: cfg.kubeconfig, context: values.context, namespace: values.namespace },
          values['manager-namespace']!,
          values.manager,
        )
      : undefined;
    await runUserDaemon({
      manager: kube?.control ?? values.manager!,
      dataAddress: kube?.data,
      socks: values.socks,
      namespace: values.namespace ?? kube?.namespace ?? 'default',
      kube,
      config: cfg,
    });
  } catch (err) {
    const e = err instanceof RdbgError ? err : new RdbgError(Codes.DAEMON_START, errorMessage(err));
    log.error('user daemon failed to start', { code: e.code, err: e.message });
    tell({ ready: false, code: e.code, message: e.message, hint: e.hint });
    if (cfg) cleanupFiles(cfg.runtimeDir);
    process.exitCode = 1;
    setTimeout(() => process.exit(1), 100).unref();
  }
}

function cleanupFiles(dir: string): void {
  rmSync(daemonSocketPath(dir), { force: true });
  rmSync(daemonPidPath(dir), { force: true });
}

interface DaemonOptions {
  manager: string;
  socks?: string;
  namespace: string;
  dataAddress?: string; // where the data plane is reached, when not beside the manager's address
  kube?: KubeTransport;
  config: UserConfig;
}

async function runUserDaemon(opts: DaemonOptions): Promise<void> {
  if (!opts.manager) throw new RdbgError(Codes.BAD_ARGUMENT, 'the user daemon needs --manager HOST:PORT');
  const counters = newCounters();
  const link = new ManagerLink({ address: opts.manager, namespace: opts.namespace, token: opts.config.managerToken });
  const intercepts = new LocalIntercepts(link, opts.kube?.claim);
  // Mounts a daemon before this one left behind (kill -9) go first.
  const stale = cleanupMounts(opts.config.runtimeDir);
  if (stale.length) log.warn('unmounted pod files left by an earlier daemon', { dirs: stale });
  const mounts = new Mounts(opts.config.runtimeDir);
  const diverts = new DivertAcceptor(link, counters, () => flows.dataPlane(), mounts);
  try {
    await link.start(10_000);
  } catch (err) {
    // Through port-forward, the forwarder knows the real reason (RBAC, no ready pod); the gRPC error only says "reset".
    const why = opts.kube?.lastError();
    if (why) throw new RdbgError(Codes.MANAGER_UNREACHABLE, `cannot reach the traffic manager through the apiserver: ${why}`, '"rdbg doctor" checks your rights and the manager');
    throw err;
  }
  diverts.start();

  let socksAddress = '';
  const { host: managerHost } = splitHostPort(opts.manager, '--manager');
  const flows = new FlowOpener(link, counters, () =>
    link.dataPort ? (opts.dataAddress ?? joinHostPort(managerHost, link.dataPort)) : undefined,
    opts.kube ? opts.kube.rawFlows : true,
    opts.config.rawFlowsMax,
  );
  const socks = new SocksServer(flows, counters);
  if (opts.socks) {
    const { host, port } = splitHostPort(opts.socks, '--socks');
    try {
      const a = await socks.listen(host, port);
      socksAddress = joinHostPort(a.address, a.port);
    } catch (err) {
      throw new RdbgError(Codes.DAEMON_START, `cannot listen for SOCKS5 on ${opts.socks}: ${errorMessage(err)}`, 'choose another port with --socks');
    }
  }

  const server = new grpc.Server();
  /** the socket's listener, once it listens */
  const local: { api?: LocalApi } = {};
  let quitting = false;
  const quit = async (reason: string): Promise<void> => {
    if (quitting) return;
    quitting = true;
    log.info('quitting', { reason });
    socks.close();
    mounts.releaseAll();
    diverts.close();
    flows.close();
    await intercepts.removeAll();
    await link.close();
    opts.kube?.close();
    local.api?.close();
    server.forceShutdown();
    cleanupFiles(opts.config.runtimeDir);
    await stopProfile('user-daemon');
    setTimeout(() => process.exit(0), 50);
  };

  const handlers: Pick<UserDaemonHandlers, 'Status' | 'Quit' | 'Intercept' | 'Leave' | 'List'> = {
    Status: (_call, cb) =>
      cb(null, {
        state: link.state,
        manager_address: opts.manager,
        manager: link.manager ?? null,
        client_version: VERSION,
        session_id: link.sessionId,
        cluster: link.cluster ?? null,
        socks_address: socksAddress,
        counters: {
          flows_opened: counters.flowsOpened,
          flows_failed: counters.flowsFailed,
          flows_active: counters.flowsActive,
          bytes_out: counters.bytesOut,
          bytes_in: counters.bytesIn,
          dns_queries: counters.dnsQueries,
          diverted_flows: counters.divertedFlows,
        },
        reconnects: link.reconnects,
        last_error: link.lastError,
        events: link.events,
        connected_since: link.connectedSince?.toISOString() ?? '',
        pid: process.pid,
        transport: opts.kube
          ? opts.kube.describe()
          : `data plane at port ${link.dataPort} (${flows.client.budget.max > 0 ? `TCP flows on connections of their own, up to ${flows.client.budget.max}, then ` : ''}HTTP/2), gRPC control at ${opts.manager}`,
        intercepts: intercepts.count,
        kube_context: opts.kube?.context ?? '',
        kubeconfig: opts.kube?.kubeconfig ?? '',
        namespace: opts.namespace,
        manager_namespace: opts.kube?.managerNamespace ?? '',
      }),
    Quit: (_call, cb) => {
      cb(null, {});
      void quit('rdbg quit');
    },
    Intercept: (call, cb) => {
      const spec = call.request.spec;
      if (!spec) return cb({ code: grpc.status.INVALID_ARGUMENT, details: 'no intercept spec' });
      spec.namespace ||= opts.namespace;
      const { resolve, name, remote_port: remote, mount_dir: mountDir, copy_dir: copyDir } = call.request;
      if (mountDir || copyDir) spec.mount = true;
      /** With --mount or --copy-files: the intercept holds once the files are there; else it is taken back. */
      const withFiles = async (info: InterceptInfo__Output): Promise<InterceptInfo__Output> => {
        if (!mountDir && !copyDir) return info;
        try {
          info.files_pod = await mounts.prepare({ id: info.id, workload: info.spec?.workload ?? '', namespace: info.spec?.namespace ?? '' }, mountDir || copyDir, mountDir ? 'mount' : 'copy');
          return info;
        } catch (err) {
          await intercepts.remove(info.spec?.workload ?? '', info.spec?.namespace ?? '', info.id).catch(() => undefined);
          throw Object.assign(new Error(errorMessage(err)), { code: grpc.status.FAILED_PRECONDITION, details: `the pod's files: ${errorMessage(err)}` });
        }
      };
      if (!resolve || !opts.kube) {
        intercepts.create(spec).then(withFiles).then(
          (info) => cb(null, info),
          (err: grpc.ServiceError) => cb({ code: err.code, details: err.details }),
        );
        return;
      }
      // The CLI injects the agent, with progress, and says every error about NAME in its own words.
      const inCli = (why: string): void => {
        log.debug('intercept prepared by the CLI', { name, why });
        cb({ code: grpc.status.FAILED_PRECONDITION, details: PREPARE_IN_CLI });
      };
      const t0 = performance.now();
      const ms = (): number => Math.round(performance.now() - t0);
      opts.kube.prepare(name, spec.namespace, remote).then(
        async (t) => {
          if (!t) return inCli('the agent is not in place');
          const prepared = ms();
          const info = await intercepts.create({ ...spec, workload: t.workload.name, namespace: t.workload.namespace, port: t.appPort });
          const created = ms();
          if (info.agents < t.replicas) {
            info.agents = await intercepts.waitForAgents(info.id, t.replicas);
            if (info.agents > 0) info.state = 'ACTIVE';
          }
          ilog.debug('intercept taken', { name, prepareMs: prepared, createMs: created - prepared, agentsMs: ms() - created, agents: info.agents });
          cb(null, await withFiles(info));
        },
        (err: Error) => inCli(errorMessage(err)),
      ).catch((err: grpc.ServiceError) => cb({ code: err.code ?? grpc.status.INTERNAL, details: err.details ?? errorMessage(err) }));
    },
    Leave: (call, cb) => {
      const r = call.request;
      mounts.releaseWhere((w) => (r.id ? w.interceptId === r.id : w.workload === r.workload && (!r.namespace || w.namespace === r.namespace)));
      intercepts.remove(call.request.workload, call.request.namespace, call.request.id).then(
        () => cb(null, {}),
        (err: grpc.ServiceError) => cb({ code: err.code, details: err.details }),
      );
    },
    List: (call, cb) => {
      link.client.listIntercepts({ session_id: link.sessionId, all: call.request.all }, { deadline: Date.now() + 5000 }, (err, res) => {
        if (err) return cb({ code: err.code, details: err.details });
        // Intercepts being taken again after a reconnect are still this laptop's: list shows what status counts.
        cb(null, { intercepts: [...(res?.intercepts ?? []), ...intercepts.pendingInfos()] });
      });
    },
  };
  const grant = (): SessionGrant => ({
    state: link.state,
    session_id: link.sessionId,
    data_address: flows.dataAddress() ?? '',
    raw_flows: flows.rawFlows,
    cluster: link.cluster ?? null,
    manager_addresses: [managerHost, ...(opts.kube?.neverRoute ?? [])],
  });
  const WatchSession: UserDaemonHandlers['WatchSession'] = (call) => {
    const send = (): void => void call.write(grant());
    send();
    link.on('session', send);
    link.on('lost', send);
    link.on('cluster', send);
    call.on('cancelled', () => {
      link.removeListener('session', send);
      link.removeListener('lost', send);
      link.removeListener('cluster', send);
    });
    call.on('error', () => undefined);
  };
  const LookupDNS: UserDaemonHandlers['LookupDNS'] = (call, cb) => {
    counters.dnsQueries++;
    link.client.LookupDNS({ ...call.request, session_id: link.sessionId }, { deadline: Date.now() + 4000 }, (err, res) => {
      if (err) return cb({ code: err.code, details: err.details });
      cb(null, res);
    });
  };
  const service = daemonPackage().UserDaemon.service;
  const all = { ...handlers, WatchSession, LookupDNS };
  server.addService(service, all);
  // gRPC for the root daemon, JSON lines for the CLI, on one socket (src/rpc/local-api.ts).
  local.api = await listenLocalApi(server, { path: daemonSocketPath(opts.config.runtimeDir), service, handlers: all, log: logger('userd.api') });
  writeFileSync(daemonPidPath(opts.config.runtimeDir), String(process.pid));
  process.once('SIGTERM', () => void quit('SIGTERM'));
  process.once('SIGINT', () => void quit('SIGINT'));
  log.info('user daemon ready', { manager: opts.manager, socks: socksAddress, session: link.sessionId, context: opts.kube?.context });
  tell({ ready: true, socks: socksAddress });
}
