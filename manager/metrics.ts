import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { splitHostPort } from '../src/core/address';
import { listenFailure } from '../src/core/errors';
import { logger } from '../src/core/log';
import { VERSION } from '../src/core/version';
import type { FlowStats } from './flow-stats';
import type { InterceptRegistry } from './intercepts';
import type { SessionRegistry } from './sessions';

const log = logger('manager');

export interface MetricsSources {
  sessions: SessionRegistry;
  intercepts: InterceptRegistry;
  stats: FlowStats;
}

/**
 * The manager's Prometheus metrics (prom-client), read at each scrape from
 * the counters the manager keeps anyway: nothing is counted twice. Names and
 * labels are in docs/kubernetes.md ("Metrics").
 */
export function managerMetrics(src: MetricsSources): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'rdbg_manager_' });
  const r = [registry];
  // A counter whose value lives elsewhere is reset and given that value at each scrape.
  new Gauge({ name: 'rdbg_manager_info', help: 'the manager version (always 1)', labelNames: ['version'], registers: r }).set({ version: VERSION }, 1);
  new Gauge({ name: 'rdbg_manager_sessions', help: 'client sessions held (a laptop each)', registers: r, collect() {
    this.set(src.sessions.list().length);
  } });
  new Gauge({ name: 'rdbg_manager_intercepts', help: 'intercepts, by state', labelNames: ['state'], registers: r, collect() {
    const c = src.intercepts.census();
    for (const [state, n] of Object.entries(c.intercepts)) this.set({ state }, n);
  } });
  new Gauge({ name: 'rdbg_manager_agents', help: 'traffic agents registered', registers: r, collect() {
    this.set(src.intercepts.census().agents);
  } });
  new Counter({ name: 'rdbg_manager_intercepted_requests_total', help: "requests the agents sent to a laptop (of the intercepts held now)", registers: r, collect() {
    this.reset();
    this.inc(src.intercepts.census().requests);
  } });
  new Counter({ name: 'rdbg_manager_flows_opened_total', help: 'flows dialled for clients', registers: r, collect() {
    this.reset();
    this.inc(src.stats.flowsOpened);
  } });
  new Gauge({ name: 'rdbg_manager_flows_active', help: 'flows open now', registers: r, collect() {
    this.set(src.stats.flowsActive);
  } });
  new Counter({ name: 'rdbg_manager_bytes_total', help: 'bytes carried by flows: out to destinations, in from them', labelNames: ['direction'], registers: r, collect() {
    this.reset();
    this.inc({ direction: 'out' }, src.stats.bytesOut);
    this.inc({ direction: 'in' }, src.stats.bytesIn);
  } });
  new Counter({ name: 'rdbg_manager_dial_failures_total', help: 'flows whose dial failed, by reason (REFUSED, UNREACHABLE, TIMEOUT, NAME_ERROR, DENIED, FAILED)', labelNames: ['reason'], registers: r, collect() {
    this.reset();
    for (const [reason, n] of Object.entries(src.stats.dialFailures)) this.inc({ reason }, n ?? 0);
  } });
  return registry;
}

/** GET /metrics on `listen` (HOST:PORT); everything else is 404. Resolves once listening. */
export async function serveMetrics(listen: string, registry: Registry): Promise<http.Server> {
  const { host, port } = splitHostPort(listen, '--metrics-listen');
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: the metrics are at /metrics\n');
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (err: Error) => {
        log.warn('metrics failed', { err: err.message });
        res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics failed\n');
      },
    );
  });
  server.requestTimeout = 10_000;
  server.headersTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    const failed = (err: Error): void => reject(listenFailure('--metrics-listen', listen, err));
    server.once('error', failed);
    server.listen(port, host, () => {
      server.removeListener('error', failed);
      resolve();
    });
  });
  log.info('metrics listening', { address: listen, port: (server.address() as AddressInfo).port });
  return server;
}
