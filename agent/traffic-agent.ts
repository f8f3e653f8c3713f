import { hostname, networkInterfaces } from 'node:os';
import type { InterceptInfo__Output } from '../src/gen/rdbg/v1/InterceptInfo';
import { AppFreezer } from './app-freezer';
import { FilesFlows } from './files-flows';
import { logger } from '../src/core/log';
import { PROTOCOL, VERSION } from '../src/core/version';
import { InterceptTable } from './intercept-table';
import { ManagerLink } from './manager-link';
import { MirrorQueue, type MirrorLimits } from './mirror-queue';
import { PortProxy } from './port-proxy';
import { AppUpstream, DivertPools } from './upstreams';

const log = logger('agent');

export interface AgentOptions {
  manager: string; // host:port
  workload: string;
  namespace: string;
  appPort: number;
  appHost?: string; // default 127.0.0.1
  listenPort: number; // 0 picks a free port (tests)
  listenHost?: string; // default all interfaces
  podName?: string;
  podIp?: string;
  /** The agent credential, or a function read at every (re-)arrival (a rotating token file). */
  token?: string | (() => string);
  /** The app's volumes as the agent sees them (intercept --mount serves them). */
  filesRoot?: string;
  /** The app's environment, reported to the owner of an intercept. */
  env?: Record<string, string>;
  sniffTimeoutMs?: number;
  heartbeatMs?: number;
  /** How much a mirror copy may queue while the laptop is slower than the app. */
  mirrorLimits?: MirrorLimits;
}

/** Variables of the agent's own making, not the app's. */
const INTERNAL_ENV = /^(RDBG_|NODE_OPTIONS$|_$)/;

/**
 * The app's environment as the agent can see it. Injected into a pod, the
 * agent runs with a copy of the app container's env and envFrom; the webhook
 * lists in RDBG_AGENT_ENV the names that are the agent's own (POD_NAME and
 * POD_IP when the app has no such variable, and what the rdbg image sets:
 * PATH, NODE_ENV, HOME), so they are left out of the report.
 */
export function appEnvironment(env: NodeJS.ProcessEnv, agentOwn: readonly string[] = []): Record<string, string> {
  const own = new Set(agentOwn);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined && !INTERNAL_ENV.test(k) && !own.has(k)) out[k] = v;
  return out;
}

function firstPodIp(): string {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (!a.internal && a.family === 'IPv4') return a.address;
  }
  return '';
}

/** The traffic agent: the manager link, the intercept table, and the proxy on the listen port. */
export class TrafficAgent {
  readonly table: InterceptTable;
  readonly link: ManagerLink;
  readonly app: AppUpstream;
  readonly pools: DivertPools;
  readonly mirrors: MirrorQueue;
  readonly proxy: PortProxy;
  readonly freezer: AppFreezer;
  readonly files: FilesFlows;
  listenPort = 0;

  constructor(private readonly opts: AgentOptions) {
    this.app = new AppUpstream(opts.appHost || '127.0.0.1', opts.appPort);
    // The intercepts' port filter needs the real listen port; it is filled in by start().
    this.table = new InterceptTable([opts.appPort, opts.listenPort].filter((p) => p > 0));
    this.link = new ManagerLink({
      manager: opts.manager,
      heartbeatMs: opts.heartbeatMs,
      info: {},
      token: typeof opts.token === 'function' ? opts.token : undefined,
    });
    this.pools = new DivertPools(this.link);
    this.mirrors = new MirrorQueue(this.link, opts.mirrorLimits);
    this.freezer = new AppFreezer({ appPorts: [opts.appPort] });
    this.files = new FilesFlows(this.link, opts.filesRoot ?? '/rdbg/app');
    this.proxy = new PortProxy({ table: this.table, link: this.link, app: this.app, pools: this.pools, mirrors: this.mirrors }, { sniffTimeoutMs: opts.sniffTimeoutMs });
  }

  async start(): Promise<number> {
    const o = this.opts;
    this.listenPort = await this.proxy.listen(o.listenPort, o.listenHost);
    this.table.setPorts([o.appPort, this.listenPort]);
    this.link.setInfo({
      version: VERSION,
      protocol: PROTOCOL,
      workload: o.workload,
      namespace: o.namespace,
      pod_name: o.podName || hostname(),
      pod_ip: o.podIp || firstPodIp(),
      ports: [{ name: '', app_port: o.appPort, listen_port: this.listenPort, service_port: 0 }],
      env: o.env ?? {},
      token: typeof o.token === 'string' ? o.token : '',
    });
    this.link.on('intercepts', (list: InterceptInfo__Output[]) => {
      const gone = this.table.update(list);
      this.pools.drop(gone);
      this.proxy.interceptsChanged();
      // Replace: the laptop takes every request (the table above), and the app stops until it ends.
      if (list.some((i) => i.spec?.replace)) {
        this.link.problem = this.freezer.freeze();
        if (this.link.problem) log.warn('cannot replace the app', { problem: this.link.problem });
      } else {
        this.link.problem = '';
        this.freezer.thaw();
        this.freezer.recover();
      }
      const pod = o.podName || hostname();
      this.files.update(list.filter((i) => i.spec?.mount && i.files_pod === pod).map((i) => i.id));
      log.info('intercepts', { count: this.table.size });
    });
    this.link.start();
    log.info('traffic agent listening', { port: this.listenPort, app: this.app.address, workload: o.workload, namespace: o.namespace });
    return this.listenPort;
  }

  async stop(): Promise<void> {
    this.freezer.thaw();
    this.files.closeAll();
    await this.link.stop();
    await this.proxy.close();
    this.pools.closeAll();
  }
}
