import { spawn } from 'node:child_process';
import { openSync, readFileSync, rmSync } from 'node:fs';
import { Codes, RdbgError } from '../../core/errors';
import { daemonLogPath, daemonPidPath, daemonSocketPath } from '../../core/paths';
import type { StartupMessage } from '../../rpc/startup';
import type { DaemonStatus__Output } from '../../gen/rdbg/v1/DaemonStatus';
import { asList, parse, splitHostPort } from '../args';
import { callDaemon, daemonClient, daemonSocketExists } from '../daemon-client';
import { fromGrpc, humanBytes, progress, say } from '../output';

export const CONNECT_USAGE = `rdbg connect --manager HOST:PORT --socks [HOST:]PORT [--namespace NS]

Starts the user daemon, opens a session with the traffic manager, and serves
the cluster's network as a SOCKS5 proxy (names resolve in the cluster).
Example: rdbg connect --manager 10.0.0.1:8081 --socks 127.0.0.1:1080
         curl --socks5-hostname 127.0.0.1:1080 http://echo.default/`;

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
    namespace: { type: 'string', short: 'n', default: 'default' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) return say(CONNECT_USAGE);
  const existing = await getStatus();
  if (existing) {
    say(`Already connected to the traffic manager at ${existing.manager_address} (${existing.state.toLowerCase()}); "rdbg quit" first to reconnect elsewhere.`);
    return;
  }
  if (!values.manager) {
    throw new RdbgError(
      Codes.BAD_ARGUMENT,
      'connect needs --manager HOST:PORT (the traffic manager; Kubernetes discovery is not available in this build)',
      'start one with "rdbg manager serve --listen 0.0.0.0:8081 ..." and pass its address',
    );
  }
  splitHostPort(values.manager, '--manager');
  let socks = values.socks;
  if (!socks) {
    throw new RdbgError(
      Codes.BAD_ARGUMENT,
      'whole-machine mode (the TUN device) is not available in this build: use the SOCKS5 proxy',
      'add --socks 127.0.0.1:1080',
    );
  }
  if (/^\d+$/.test(socks)) socks = `127.0.0.1:${socks}`;
  splitHostPort(socks, '--socks');

  progress(`starting the user daemon (log: ${daemonLogPath()})`);
  progress(`connecting to the traffic manager at ${values.manager}`);
  const msg = await startDaemon(['--manager', values.manager, '--socks', socks, '--namespace', values.namespace!]);
  if (!msg.ready) throw new RdbgError(msg.code, msg.message, msg.hint);
  const st = await getStatus();
  const subnets = [...asList(st?.cluster?.service_subnets), ...asList(st?.cluster?.pod_subnets)].join(', ') || 'none announced';
  say(`Connected to traffic manager ${st?.manager?.version ?? '?'} at ${values.manager}; SOCKS5 proxy on ${msg.socks}; cluster subnets ${subnets}.`);
}

/** Spawns the user daemon in the background and waits for it to say it is ready (or why not). */
function startDaemon(args: string[]): Promise<StartupMessage> {
  rmSync(daemonSocketPath(), { force: true });
  const log = openSync(daemonLogPath(), 'a');
  const child = spawn(process.execPath, [process.argv[1], 'daemon-user', ...args], {
    detached: true,
    stdio: ['ignore', log, log, 'ipc'],
    env: process.env,
  });
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill('SIGTERM');
      resolve({ ready: false, code: Codes.DAEMON_START, message: 'the user daemon did not become ready within 30 seconds', hint: `see ${daemonLogPath()}` });
    }, 30_000);
    child.once('message', (m: StartupMessage) => {
      clearTimeout(timer);
      child.unref();
      child.disconnect?.();
      resolve(m);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ ready: false, code: Codes.DAEMON_START, message: `the user daemon exited (code ${code}) before it was ready`, hint: `see ${daemonLogPath()}` });
    });
  });
}

export async function statusCommand(argv: string[]): Promise<void> {
  const { values } = parse('status', argv, { output: { type: 'string', short: 'o' } });
  const st = await getStatus();
  if (values.output === 'json') {
    say(JSON.stringify(st ?? { state: 'NOT_RUNNING' }, null, 2));
    return;
  }
  if (!st) {
    say('rdbg is not connected (no user daemon running).');
    return;
  }
  const c = st.counters!;
  const cl = st.cluster;
  say(`Session:          ${st.state.toLowerCase()}${st.session_id ? ` (session ${st.session_id.slice(0, 8)})` : ''}`);
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

export async function quitCommand(): Promise<void> {
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
  say(st ? 'Disconnected: the user daemon has stopped and its intercepts are gone.' : 'rdbg was not connected; nothing left to clean up.');
}
