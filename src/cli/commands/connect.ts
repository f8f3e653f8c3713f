import * as grpc from '@grpc/grpc-js';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, openSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Codes, RdbgError } from '../../core/errors';
import { daemonLogPath, daemonPidPath, daemonSocketPath, rootJournalPath, rootSocketPath, runtimeDir } from '../../core/paths';
import { daemonPackage } from '../../rpc/services';
import type { RootDaemonClient } from '../../gen/rdbg/v1/RootDaemon';
import type { RootStatus__Output } from '../../gen/rdbg/v1/RootStatus';
import type { StartupMessage } from '../../rpc/startup';
import type { DaemonStatus__Output } from '../../gen/rdbg/v1/DaemonStatus';
import { asList, parse, splitHostPort } from '../args';
import { ROOT_OPTIONS, rootArgv } from '../root-options';
import { callDaemon, daemonClient, daemonSocketExists } from '../daemon-client';
import { fromGrpc, humanBytes, progress, say } from '../output';

export const CONNECT_USAGE = `rdbg connect [--kubeconfig FILE] [--context NAME] [--namespace NS] [--manager-namespace rdbg]
             [--manager HOST:PORT] [--socks [HOST:]PORT]
             [--also-proxy CIDR]... [--never-proxy CIDR]... [--allow-conflicting-subnets]
             [--dns auto|none] [--dns-include SUFFIX]... [--dns-exclude SUFFIX]...

Starts the user daemon and opens a session with the traffic manager. Without
--manager, the manager is the one installed in the current kubeconfig context
("rdbg manager install"), reached through the apiserver's port-forward.
--manager HOST:PORT alone talks to a standalone manager ("rdbg manager serve");
together with --kubeconfig, --context or --kubernetes it is the address where
the cluster exposes the manager's data plane (the direct transport), while the
session still opens through the apiserver. With
--socks, serves the cluster's network as a SOCKS5 proxy (no root needed;
names resolve in the cluster). Without it, the root daemon (through sudo)
routes the cluster's subnets into a TUN device and answers cluster names, so
every program on this machine reaches the cluster.
Examples: rdbg connect --context staging && curl http://echo.default/
          rdbg connect --manager 10.0.0.1:8081 --socks 1080
          curl --socks5-hostname 127.0.0.1:1080 http://echo.default/
          rdbg connect --manager 10.0.0.1:8081 && curl http://echo.default/`;

export async function getStatus(): Promise<DaemonStatus__Output | undefined> {
  if (!daemonSocketExists()) return undefined;
  const client = daemonClient();
  try {
    return await callDaemon(client, client.status, {}, 3000);
  } catch {
    return undefined;
  } finally {
    client.close();
  }
}

export async function connectCommand(argv: string[]): Promise<void> {
  const { values } = parse('connect', argv, {
    manager: { type: 'string' },
    socks: { type: 'string' },
    namespace: { type: 'string', short: 'n' },
    kubeconfig: { type: 'string' },
    context: { type: 'string' },
    kubernetes: { type: 'boolean' },
    'manager-namespace': { type: 'string', default: 'rdbg' },
    ...ROOT_OPTIONS,
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) return say(CONNECT_USAGE);
  const existing = await getStatus();
  if (existing) {
    say(`Already connected to the traffic manager at ${existing.manager_address} (${existing.state.toLowerCase()}); "rdbg quit" first to reconnect elsewhere.`);
    return;
  }
  const kube = !values.manager || values.kubernetes || values.kubeconfig !== undefined || values.context !== undefined;
  if (values.manager) splitHostPort(values.manager, '--manager');
  let socks = values.socks;
  if (socks) {
    if (/^\d+$/.test(socks)) socks = `127.0.0.1:${socks}`;
    splitHostPort(socks, '--socks');
  }

  progress(`starting the user daemon (log: ${daemonLogPath()})`);
  const daemonArgs = [
    ...(values.manager ? ['--manager', values.manager] : []),
    ...(values.namespace ? ['--namespace', values.namespace] : []),
    ...(socks ? ['--socks', socks] : []),
  ];
  if (kube) {
    daemonArgs.push('--kubernetes', '--manager-namespace', values['manager-namespace']!);
    if (values.kubeconfig) daemonArgs.push('--kubeconfig', values.kubeconfig);
    if (values.context) daemonArgs.push('--context', values.context);
    progress(`connecting through the apiserver${values.context ? ` of context ${values.context}` : ''} to the traffic manager in namespace ${values['manager-namespace']}`);
  } else {
    progress(`connecting to the traffic manager at ${values.manager}`);
  }
  const msg = await startDaemon(daemonArgs, 'daemon-user', daemonLogPath());
  if (!msg.ready) throw new RdbgError(msg.code, msg.message, msg.hint);
  const st = await getStatus();
  const where = st?.kube_context ? `in context ${st.kube_context} (namespace ${st.manager_namespace}, through the apiserver)` : `at ${values.manager}`;
  const subnets = [...asList(st?.cluster?.service_subnets), ...asList(st?.cluster?.pod_subnets)].join(', ') || 'none announced';
  if (socks) {
    say(`Connected to traffic manager ${st?.manager?.version ?? '?'} ${where}; SOCKS5 proxy on ${msg.socks}; cluster subnets ${subnets}.`);
    return;
  }

  progress('starting the root daemon: TUN device, routes and DNS');
  const rootArgs = ['--user-socket', daemonSocketPath(), ...rootArgv(values)];
  const root = await startDaemon(rootArgs, 'daemon-root', join(runtimeDir(), 'root-daemon.log'));
  if (!root.ready) {
    await quitCommand([], true);
    throw new RdbgError(root.code, root.message, root.hint);
  }
  const rs = await getRootStatus();
  say(
    `Connected to traffic manager ${st?.manager?.version ?? '?'} ${where}: ${rs?.tun_device ?? 'TUN'} routes ${(rs?.routes ?? []).map((r) => r.cidr).join(', ') || subnets}; ` +
      `DNS ${rs?.dns_mode === 'none' ? 'unchanged' : `via ${rs?.dns_address} (${rs?.dns_mode})`}.`,
  );
}

export async function getRootStatus(): Promise<RootStatus__Output | undefined> {
  if (!existsSync(rootSocketPath())) return undefined;
  const RootDaemon = daemonPackage().RootDaemon;
  const client = new RootDaemon(`unix://${rootSocketPath()}`, grpc.credentials.createInsecure()) as unknown as RootDaemonClient;
  try {
    return await new Promise<RootStatus__Output>((resolve, reject) =>
      client.status({}, { deadline: Date.now() + 3000 }, (err, res) => (err ? reject(err) : resolve(res!))),
    );
  } catch {
    return undefined;
  } finally {
    client.close();
  }
}

async function quitRoot(): Promise<string | undefined> {
  const RootDaemon = daemonPackage().RootDaemon;
  const st = await getRootStatus();
  if (st) {
    const client = new RootDaemon(`unix://${rootSocketPath()}`, grpc.credentials.createInsecure()) as unknown as RootDaemonClient;
    await new Promise<void>((resolve) => client.quit({}, { deadline: Date.now() + 10_000 }, () => resolve()));
    client.close();
    const until = Date.now() + 10_000;
    while (pidAlive(st.pid) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    if (pidAlive(st.pid)) process.kill(st.pid, 'SIGKILL');
    return `the TUN device ${st.tun_device}, its routes and the DNS settings are removed`;
  }
  // No root daemon: undo whatever a crashed one left behind.
  let journalled = false;
  try {
    journalled = JSON.parse(readFileSync(rootJournalPath(), 'utf8')).entries?.length > 0;
  } catch {
    // no journal
  }
  if (!journalled) return undefined;
  const r = spawnSync(...asRoot([process.execPath, process.argv[1], 'daemon-root', '--cleanup']), { encoding: 'utf8' });
  return r.status === 0 ? `leftovers of a crashed root daemon were undone (${r.stdout.trim()})` : `cleanup of a crashed root daemon failed: ${r.stderr.trim()}`;
}

/** The root daemon runs as root: through sudo when we are not. */
function asRoot(argv: string[]): [string, string[]] {
  if (process.getuid?.() === 0) return [argv[0], argv.slice(1)];
  return ['sudo', ['--preserve-env=RDBG_HOME,RDBG_ROOT_HOME,RDBG_LOG_LEVEL', ...argv]];
}

/** Spawns a daemon in the background and waits for it to say it is ready (or why not). */
function startDaemon(args: string[], which: 'daemon-user' | 'daemon-root', logPath: string): Promise<StartupMessage> {
  if (which === 'daemon-user') rmSync(daemonSocketPath(), { force: true });
  const log = openSync(logPath, 'a');
  // V8's --optimize-for-size, used here before, cost each new connection about
  // 100-130 us of CPU in each daemon (measured: user daemon 375 vs 510 us, root
  // daemon 400-500 vs 520-710 us per connection) and kept them under 2,000/s.
  // The root daemon holds thousands of small objects per flow and little else:
  // a small young generation and an old generation that grows by 25% at a
  // time, not the default 2-4x, keep its resident memory down (goal: 150 MB at
  // 10,000 connections; 145 MB measured, 141 MB with --optimize-for-size). The
  // user daemon also carries the port-forward's TLS and WebSocket buffers,
  // where a small young generation doubles the GC's CPU time (measured: 0.41 ->
  // 0.21 s user CPU per 64 MiB echo with 16 MB); it has room (goal 300 MB).
  const flags = which === 'daemon-root' ? ['--max-semi-space-size=2', '--heap-growing-percent=25'] : ['--max-semi-space-size=16'];
  const node = [process.execPath, ...flags, '--'];
  const [cmd, argv] = which === 'daemon-root' ? asRoot([...node, process.argv[1], which, ...args]) : [node[0], [...node.slice(1), process.argv[1], which, ...args]];
  const child = spawn(cmd, argv, {
    detached: true,
    stdio: ['ignore', log, log, 'ipc'],
    env: process.env,
  });
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill('SIGTERM');
      resolve({ ready: false, code: Codes.DAEMON_START, message: `the ${which} did not become ready within 30 seconds`, hint: `see ${logPath}` });
    }, 30_000);
    child.once('message', (m: StartupMessage) => {
      clearTimeout(timer);
      child.unref();
      child.disconnect?.();
      resolve(m);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ ready: false, code: Codes.DAEMON_START, message: `the ${which} exited (code ${code}) before it was ready`, hint: `see ${logPath}` });
    });
  });
}

export async function statusCommand(argv: string[]): Promise<void> {
  const { values } = parse('status', argv, { output: { type: 'string', short: 'o' } });
  const st = await getStatus();
  if (values.output === 'json') {
    say(JSON.stringify(st ? { ...st, root: (await getRootStatus()) ?? null } : { state: 'NOT_RUNNING' }, null, 2));
    return;
  }
  if (!st) {
    say('rdbg is not connected (no user daemon running).');
    return;
  }
  const c = st.counters!;
  const cl = st.cluster;
  say(`Session:          ${st.state.toLowerCase()}${st.session_id ? ` (session ${st.session_id.slice(0, 8)})` : ''}`);
  if (st.kube_context) say(`Kubernetes:       context ${st.kube_context}${st.kubeconfig ? ` (${st.kubeconfig})` : ''}, namespace ${st.namespace}, manager in ${st.manager_namespace}`);
  say(`Traffic manager:  ${st.manager_address}, version ${st.manager?.version ?? 'unknown'} (client ${st.client_version})`);
  say(`Transport:        ${st.transport}`);
  if (st.socks_address) say(`SOCKS5 proxy:     ${st.socks_address}`);
  say(`Service subnets:  ${(cl?.service_subnets ?? []).join(', ') || '-'}`);
  say(`Pod subnets:      ${(cl?.pod_subnets ?? []).join(', ') || '-'}`);
  say(`Cluster domain:   ${cl?.cluster_domain ?? '-'}; search ${(cl?.dns_search ?? []).join(' ')}`);
  say(`Flows:            ${c.flows_active} active, ${c.flows_opened} opened, ${c.flows_failed} failed`);
  say(`Traffic:          ${humanBytes(c.bytes_out)} out, ${humanBytes(c.bytes_in)} in; ${c.diverted_flows} diverted flows`);
  say(`Intercepts:       ${st.intercepts}`);
  say(`Reconnects:       ${st.reconnects}${st.last_error ? ` (last problem: ${st.last_error})` : ''}`);
  const rs = await getRootStatus();
  if (rs) {
    say(`TUN device:       ${rs.tun_device} (${rs.tun_address}), routes ${rs.routes.map((r) => r.cidr).join(', ')}`);
    say(`DNS:              ${rs.dns_mode === 'none' ? 'not configured' : `${rs.dns_address} (${rs.dns_mode}), ${rs.dns_queries} queries`}`);
    say(`Packets:          ${rs.packets_in} in, ${rs.packets_out} out, ${rs.packets_dropped} dropped, ${rs.malformed_packets} malformed; ${rs.tcp_flows} TCP and ${rs.udp_flows} UDP flows`);
    if (rs.pooled_flows || rs.pool_misses) say(`Over port-forward: ${rs.pooled_flows} TCP flows on connections opened ahead, ${rs.pool_misses} as HTTP/2 streams (none was ready)`);
  }
  if (st.events.length > 0) {
    say('Recent events:');
    for (const e of st.events.slice(-5)) say(`  ${e.time}  ${e.event}`);
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export async function quitCommand(_argv: string[] = [], quiet = false): Promise<void> {
  const rootNote = await quitRoot();
  let pid = 0;
  try {
    pid = Number(readFileSync(daemonPidPath(), 'utf8'));
  } catch {
    // no pid file
  }
  const st = await getStatus();
  if (st) {
    const client = daemonClient();
    try {
      await callDaemon(client, client.quit, {}, 5000);
    } catch (err) {
      throw fromGrpc(err, 'quit');
    } finally {
      client.close();
    }
    pid = st.pid || pid;
  }
  // Wait for the daemon to be gone; a daemon that hangs is killed.
  const until = Date.now() + 5000;
  while (pid && pidAlive(pid) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  if (pid && pidAlive(pid)) process.kill(pid, 'SIGKILL');
  rmSync(daemonSocketPath(), { force: true });
  rmSync(daemonPidPath(), { force: true });
  if (quiet) return;
  if (st) say(`Disconnected: the user daemon has stopped and its intercepts are gone${rootNote ? `; ${rootNote}` : ''}.`);
  else say(rootNote ? `rdbg was not connected; ${rootNote}.` : 'rdbg was not connected; nothing left to clean up.');
}
