import { cleanupMounts } from '../../core/mount-journal';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, openSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { Codes, RdbgError } from '../../core/errors';
import { daemonLogPath, daemonPidPath, daemonSocketPath, runtimeDir, sessionRootPaths } from '../../core/paths';
import { LocalClient, type RootDaemonApi } from '../../rpc/local-client';
import type { RootStatus__Output } from '../../gen/rdbg/v1/RootStatus';
import type { StartupMessage } from '../../rpc/startup';
import type { DaemonStatus__Output } from '../../gen/rdbg/v1/DaemonStatus';
import { splitHostPort } from '../../core/address';
import { asList, parse } from '../args';
import { rootArgv } from '../root-options';
import { COMMANDS } from '../spec';
import { callDaemon, daemonClient, daemonSocketExists, dropDaemonClient } from '../daemon-client';
import type { CliContext } from '../context';
import { fromGrpc, humanBytes, printData, progress, say } from '../output';

export async function getStatus(ctx: CliContext): Promise<DaemonStatus__Output | undefined> {
  if (!daemonSocketExists(ctx.config.runtimeDir)) return undefined;
  const client = daemonClient(ctx.config.runtimeDir);
  try {
    return await callDaemon(client, 'Status', {}, 3000);
  } catch {
    dropDaemonClient();
    return undefined;
  }
}

/** Mirror copies the agents dropped, as `list` and `status` show them. */
export function droppedCopies(n: number): string {
  return `${n} mirror ${n === 1 ? 'copy' : 'copies'} dropped: the laptop did not keep up`;
}

/** Mirror copies dropped for this session's intercepts; 0 when the list cannot be had. */
async function mirrorCopiesDropped(ctx: CliContext): Promise<number> {
  const client = daemonClient(ctx.config.runtimeDir);
  try {
    const r = await callDaemon(client, 'List', { session_id: '', all: false }, 3000);
    return r.intercepts.reduce((n, i) => n + Number(i.mirrors_dropped ?? 0), 0);
  } catch {
    return 0;
  }
}

export async function connectCommand(argv: string[], ctx: CliContext): Promise<void> {
  const { values } = parse('connect', argv, COMMANDS.connect.flags);
  const existing = await getStatus(ctx);
  const tunSession = readTunSession(ctx);
  if (existing && tunSession && !(await getRootStatus(ctx))) {
    // The session is alive but its root daemon is not (a crash, kill -9): start a new one for it.
    const gone = rootDaemonProblem(ctx);
    progress(`the root daemon of this session is not running (${gone.reason}): starting a new one; it first undoes what the old one left behind`);
    const root = await startDaemon(ctx, tunSession.args, 'daemon-root', rootLogPath(ctx));
    if (!root.ready) throw new RdbgError(root.code, root.message, root.hint);
    say(`Repaired: ${await tunSummary(ctx, existing)}`);
    return;
  }
  if (values.manager) splitHostPort(values.manager, '--manager');
  let socks = values.socks;
  if (socks) {
    if (/^\d+$/.test(socks)) socks = `127.0.0.1:${socks}`;
    splitHostPort(socks, '--socks');
  }
  const settings = connectSettings({ ...values, socks });
  if (existing) {
    const differ = settingsDiffer(readConnectSettings(ctx), settings);
    if (differ.length) {
      throw new RdbgError(Codes.FAILED, `already connected with other settings: ${differ.join('; ')}`,
        'run "rdbg quit" first, then connect with the new settings');
    }
    say(`Already connected to the traffic manager at ${existing.manager_address} (${existing.state.toLowerCase()}).`);
    return;
  }
  writeFileSync(connectSettingsPath(ctx), JSON.stringify(settings) + '\n', { mode: 0o600 });
  const kube = !values.manager || values.kubernetes || values.kubeconfig !== undefined || values.context !== undefined;

  progress(`starting the user daemon (log: ${daemonLogPath(ctx.config.runtimeDir)})`);
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
  const userStart = startDaemon(ctx, daemonArgs, 'daemon-user', daemonLogPath(ctx.config.runtimeDir));
  // The root daemon starts at the same time (its own start, the worker's, is half of a connect); it
  // changes nothing on the host until the user daemon grants it the session (daemon/root/engine.ts).
  let rootStart: Promise<StartupMessage> | undefined;
  const stopRoot = new AbortController();
  if (!socks) {
    progress('starting the root daemon: TUN device, routes and DNS');
    // --user-socket first: the sudo rule in the README matches this prefix. Sudo passes no
    // environment, so the root daemon gets the CLI's log settings as flags.
    const { logLevel, trace } = ctx.config;
    const rootArgs = [
      '--user-socket', resolve(daemonSocketPath(ctx.config.runtimeDir)), ...rootArgv(values),
      ...(logLevel ? ['--log-level', logLevel] : []), ...(trace.length ? ['--trace', trace.join(',')] : []),
    ];
    // Remembered so that `status` knows this session has a root daemon, and `connect` can restart it.
    writeFileSync(tunSessionPath(ctx), JSON.stringify({ args: rootArgs }) + '\n', { mode: 0o600 });
    rootStart = startDaemon(ctx, rootArgs, 'daemon-root', rootLogPath(ctx), { timeoutMs: 75_000, signal: stopRoot.signal });
  }
  const msg = await userStart;
  if (!msg.ready) {
    stopRoot.abort();
    await rootStart;
    rmSync(tunSessionPath(ctx), { force: true });
    throw new RdbgError(msg.code, msg.message, msg.hint);
  }
  const st = await getStatus(ctx);
  const where = st?.kube_context ? `in context ${st.kube_context} (namespace ${st.manager_namespace}, through the apiserver)` : `at ${values.manager}`;
  const subnets = [...asList(st?.cluster?.service_subnets), ...asList(st?.cluster?.pod_subnets)].join(', ') || 'none announced';
  if (!rootStart) {
    say(`Connected to traffic manager ${st?.manager?.version ?? '?'} ${where}; SOCKS5 proxy on ${msg.socks}; cluster subnets ${subnets}.`);
    return;
  }
  const root = await rootStart;
  if (!root.ready) {
    await quitCommand([], ctx, true);
    throw new RdbgError(root.code, root.message, root.hint);
  }
  say(`Connected to ${await tunSummary(ctx, st, where)}`);
}

/** "traffic manager V at W: rdbg0 routes ...; DNS via ..." */
async function tunSummary(ctx: CliContext, st: DaemonStatus__Output | undefined, where = st?.kube_context ? `in context ${st.kube_context}` : `at ${st?.manager_address}`): Promise<string> {
  const rs = await getRootStatus(ctx);
  const subnets = [...asList(st?.cluster?.service_subnets), ...asList(st?.cluster?.pod_subnets)].join(', ') || 'none announced';
  return (
    `traffic manager ${st?.manager?.version ?? '?'} ${where}: ${rs?.tun_device ?? 'TUN'} routes ${(rs?.routes ?? []).map((r) => r.cidr).join(', ') || subnets}; ` +
    `DNS ${rs?.dns_mode === 'none' ? 'unchanged' : `via ${rs?.dns_address} (${rs?.dns_mode})`}.`
  );
}

function rootLogPath(ctx: CliContext): string {
  return join(runtimeDir(ctx.config.runtimeDir), 'root-daemon.log');
}

type Settings = Record<string, string | boolean | string[]>;

/** What a connect asked for, as flags (defaults included): a second connect must ask the same. */
function connectSettings(values: Record<string, string | boolean | (string | boolean)[] | undefined>): Settings {
  const out: Settings = {};
  for (const name of Object.keys(COMMANDS.connect.flags)) {
    const v = values[name];
    if (v !== undefined && v !== false && !(Array.isArray(v) && v.length === 0)) out[name] = Array.isArray(v) ? v.map(String) : v;
  }
  return out;
}

/** "--socks 127.0.0.1:1080 (asked: 127.0.0.1:1090)" for each flag whose value differs. */
function settingsDiffer(had: Settings | undefined, asked: Settings): string[] {
  if (!had) return [];
  const show = (v: Settings[string] | undefined): string => (v === undefined ? 'not set' : typeof v === 'boolean' ? 'set' : Array.isArray(v) ? v.join(',') : v);
  return [...new Set([...Object.keys(had), ...Object.keys(asked)])]
    .filter((k) => JSON.stringify(had[k]) !== JSON.stringify(asked[k]))
    .map((k) => `--${k} ${show(had[k])} (asked: ${show(asked[k])})`);
}

/** The session's connect flags, written by `connect`, removed by `quit`. */
function connectSettingsPath(ctx: CliContext): string {
  return join(runtimeDir(ctx.config.runtimeDir), 'connect.json');
}

function readConnectSettings(ctx: CliContext): Settings | undefined {
  try {
    return JSON.parse(readFileSync(connectSettingsPath(ctx), 'utf8')) as Settings;
  } catch {
    return undefined;
  }
}

/** This session runs in TUN mode: the root daemon's arguments, written by `connect`, removed by `quit`. */
function tunSessionPath(ctx: CliContext): string {
  return join(runtimeDir(ctx.config.runtimeDir), 'tun-session.json');
}

function readTunSession(ctx: CliContext): { args: string[] } | undefined {
  try {
    const v = JSON.parse(readFileSync(tunSessionPath(ctx), 'utf8')) as { args?: unknown };
    return Array.isArray(v.args) && v.args.every((a) => typeof a === 'string') ? { args: v.args as string[] } : undefined;
  } catch {
    return undefined;
  }
}

/** What the session's last root daemon did when it stopped (written by its watchdog, daemon/root/watchdog.ts). */
interface RootExit {
  time: string;
  clean: boolean;
  reason: string;
  undone: string[];
  sockets_reset: string[];
}

/** resolved keeps DNS settings per link, so a crashed root daemon's go with its TUN device; resolv.conf would keep rdbg's. */
function onResolvedHost(): boolean {
  try {
    return realpathSync('/etc/resolv.conf') === '/run/systemd/resolve/stub-resolv.conf';
  } catch {
    return false;
  }
}

/** Why this TUN session has no root daemon, for `status` and `connect`. */
function rootDaemonProblem(ctx: CliContext): { state: 'NOT_RUNNING'; reason: string; cleaned: boolean; since?: string; detail: string; hint: string } {
  const paths = sessionRootPaths(ctx.config.runtimeDir);
  let exit: RootExit | undefined;
  try {
    exit = JSON.parse(readFileSync(paths.exitRecord, 'utf8')) as RootExit;
  } catch {
    // no record: both the worker and its watchdog died, or the machine restarted
  }
  const hint = 'run "rdbg connect" to repair it, or "rdbg quit"';
  if (exit) {
    const detail = exit.clean
      ? 'it stopped by itself and removed its TUN device, routes and DNS settings'
      : `its watchdog removed the TUN device, routes and DNS settings${exit.sockets_reset.length ? ` and reset the connections into ${exit.sockets_reset.join(', ')}` : ''}`;
    return { state: 'NOT_RUNNING', reason: exit.reason, cleaned: true, since: exit.time, detail, hint };
  }
  const leftovers = existsSync(paths.dir);
  return {
    state: 'NOT_RUNNING',
    reason: 'crashed?',
    cleaned: !leftovers,
    detail: leftovers
      ? onResolvedHost()
        ? 'the TUN device, its routes and its systemd-resolved DNS settings went with it; only its journal is left'
        : 'the TUN device and its routes are gone, and it may have left changes behind (resolv.conf)'
      : 'the TUN device, its routes and its DNS settings are gone',
    hint,
  };
}

export async function getRootStatus(ctx: CliContext): Promise<RootStatus__Output | undefined> {
  const socket = sessionRootPaths(ctx.config.runtimeDir).socket;
  if (!existsSync(socket)) return undefined;
  const client = new LocalClient<RootDaemonApi>(socket, 'RootDaemon');
  try {
    return await client.call('Status', {}, 3000);
  } catch {
    return undefined;
  } finally {
    client.close();
  }
}

async function quitRoot(ctx: CliContext): Promise<string | undefined> {
  const paths = sessionRootPaths(ctx.config.runtimeDir);
  const st = await getRootStatus(ctx);
  if (st) {
    const client = new LocalClient<RootDaemonApi>(paths.socket, 'RootDaemon');
    await client.call('Quit', {}, 10_000).catch(() => undefined);
    client.close();
    const until = Date.now() + 10_000;
    const pids = [st.pid, st.watchdog_pid].filter(Boolean);
    while (pids.some(pidAlive) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    for (const pid of pids) if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
    return `the TUN device ${st.tun_device}, its routes and the DNS settings are removed`;
  }
  // No root daemon answers: undo whatever a crashed one left behind, and forget its exit record.
  if (!existsSync(paths.dir) && !existsSync(paths.exitRecord)) return undefined;
  const gone = rootDaemonProblem(ctx);
  const [cmd, args, env] = rootCommand(ctx, ['--user-socket', resolve(daemonSocketPath(ctx.config.runtimeDir)), '--cleanup']);
  const r = spawnSync(cmd, args, { encoding: 'utf8', env });
  if (r.status !== 0) return `cleanup of a crashed root daemon failed: ${r.stderr.trim()}`;
  if (/^Nothing/.test(r.stdout)) return `the root daemon had stopped (${gone.reason}); ${gone.detail}`;
  return `leftovers of a crashed root daemon were undone (${r.stdout.trim()})`;
}

/**
 * `rdbg daemon-root ARGS` as root: through sudo when we are not root, with
 * exactly the command line the README's sudoers rule allows, and nothing from
 * our environment (sudo resets it; root reads no path from it). Run as root
 * directly, sudo's variables are dropped so that root takes us for the caller.
 */
function rootCommand(ctx: CliContext, args: string[]): [string, string[], NodeJS.ProcessEnv] {
  const argv = [...rootPrefix(), ...args];
  if (process.getuid?.() === 0) {
    const env = { ...ctx.childEnv };
    for (const k of ['SUDO_UID', 'SUDO_GID', 'SUDO_USER', 'SUDO_COMMAND']) delete env[k];
    return [argv[0], argv.slice(1), env];
  }
  // -n: fail at once instead of prompting for a password on a detached process with no terminal.
  return ['sudo', ['-n', '--', ...argv], ctx.childEnv];
}

/** The fixed start of the root daemon's command line: node, rdbg's entry point (symlinks resolved), daemon-root, --user-socket. */
function rootPrefix(): string[] {
  return [process.execPath, realpathSync(process.argv[1]), 'daemon-root'];
}

/** The sudoers line that lets this user start exactly the root daemon (README: "Root through sudo"). */
function sudoHint(ctx: CliContext): string | undefined {
  if (process.getuid?.() === 0) return undefined;
  return `see ${rootLogPath(ctx)}; if sudo asked for a password, add to /etc/sudoers.d/rdbg: ${userInfo().username} ALL=(root) NOPASSWD: ${rootPrefix().join(' ')} --user-socket *`;
}

/** The root daemon's startup message: one JSON line on its stdout. */
function startupLine(child: ReturnType<typeof spawn>): Promise<StartupMessage | undefined> {
  return new Promise((resolve) => {
    const rl = createInterface({ input: child.stdout! });
    rl.once('line', (line) => {
      try {
        resolve(JSON.parse(line) as StartupMessage);
      } catch {
        resolve({ ready: false, code: Codes.DAEMON_START, message: `the root daemon said: ${line}` });
      }
      rl.close();
      child.stdout!.destroy();
    });
    rl.once('close', () => resolve(undefined));
  });
}

const USER_DAEMON_V8_FLAGS = ['--max-semi-space-size=16', '--expose-gc'];

/**
 * Spawns a daemon in the background and waits for it to say it is ready (or
 * why not), for up to timeoutMs; `signal` stops it (SIGTERM) and the wait.
 */
function startDaemon(
  ctx: CliContext,
  args: string[],
  which: 'daemon-user' | 'daemon-root',
  logPath: string,
  { timeoutMs = 30_000, signal }: { timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<StartupMessage> {
  if (which === 'daemon-user') rmSync(daemonSocketPath(ctx.config.runtimeDir), { force: true });
  const log = openSync(logPath, 'a');
  // V8's --optimize-for-size costs each new connection about 100-130 us of CPU
  // in each daemon. The user daemon carries the port-forward's TLS and
  // WebSocket buffers, where a small young generation doubles the GC's CPU
  // time. --expose-gc lets it collect when its heap has grown (src/core/gc-pacer.ts).
  // The root daemon's worker sets its own heap flags (daemon/root/watchdog.ts).
  const [cmd, argv, env] =
    which === 'daemon-root' ? rootCommand(ctx, args) : [process.execPath, [...USER_DAEMON_V8_FLAGS, '--', process.argv[1], which, ...args], ctx.childEnv];
  const child = spawn(cmd, argv, {
    detached: true,
    // sudo closes descriptors beyond stderr: the root daemon answers on stdout.
    stdio: which === 'daemon-root' ? ['ignore', 'pipe', log] : ['ignore', log, log, 'ipc'],
    env,
  });
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill('SIGTERM');
      done({ ready: false, code: Codes.DAEMON_START, message: `the ${which} did not become ready within ${Math.round(timeoutMs / 1000)} seconds`, hint: `see ${logPath}` });
    }, timeoutMs);
    const abort = (): void => {
      child.kill('SIGTERM');
      done({ ready: false, code: Codes.DAEMON_START, message: `the ${which} was stopped before it was ready` });
    };
    signal?.addEventListener('abort', abort, { once: true });
    let settled = false;
    const done = (m: StartupMessage): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', abort);
      child.unref();
      if (child.connected) child.disconnect();
      resolve(m);
    };
    const exited = (code: number | null): StartupMessage => ({ ready: false, code: Codes.DAEMON_START, message: `the ${which} exited (code ${code}) before it was ready`, hint: (which === 'daemon-root' && sudoHint(ctx)) || `see ${logPath}` });
    if (which === 'daemon-root') {
      // Its stdout closes when it exits: the line, if any, comes first.
      void startupLine(child).then((m) => done(m ?? exited(child.exitCode)));
    } else {
      child.once('message', done);
      child.once('exit', (code) => done(exited(code)));
    }
  });
}

export async function statusCommand(argv: string[], ctx: CliContext): Promise<void> {
  const { values } = parse('status', argv, COMMANDS.status.flags);
  // Both daemons asked at once; a TUN session whose root daemon does not answer is broken: say so, and what repairs it.
  const [st, root] = await Promise.all([getStatus(ctx), getRootStatus(ctx)]);
  const rs = st ? root : undefined;
  const leftBehind = !st && existsSync(sessionRootPaths(ctx.config.runtimeDir).dir);
  const problem = (st && !rs && readTunSession(ctx)) || leftBehind ? rootDaemonProblem(ctx) : undefined;
  if (values.output) {
    printData(values.output, st ? { ...st, root: rs ?? null, root_problem: problem ?? null } : { state: 'NOT_RUNNING', root_problem: problem ?? null });
    return;
  }
  if (!st) {
    say('rdbg is not connected (no user daemon running).');
    if (leftBehind) say(`A root daemon of this session stopped without cleaning up (${problem!.reason}): ${problem!.detail}; "rdbg quit" or "rdbg connect" undoes it.`);
    return;
  }
  const c = st.counters!;
  const cl = st.cluster;
  say(`Session:          ${st.state.toLowerCase()}${st.session_id ? ` (session ${st.session_id.slice(0, 8)})` : ''}`);
  if (problem) say(`Root daemon:      NOT RUNNING (${problem.reason}${problem.since ? ` at ${problem.since}` : ''}): ${problem.detail}; nothing is routed to the cluster; ${problem.hint}`);
  if (st.kube_context) say(`Kubernetes:       context ${st.kube_context}${st.kubeconfig ? ` (${st.kubeconfig})` : ''}, namespace ${st.namespace}, manager in ${st.manager_namespace}`);
  say(`Traffic manager:  ${st.manager_address}, version ${st.manager?.version ?? 'unknown'} (client ${st.client_version})`);
  say(`Transport:        ${st.transport}`);
  if (st.socks_address) say(`SOCKS5 proxy:     ${st.socks_address}`);
  say(`Service subnets:  ${(cl?.service_subnets ?? []).join(', ') || '-'}`);
  say(`Pod subnets:      ${(cl?.pod_subnets ?? []).join(', ') || '-'}`);
  say(`Cluster domain:   ${cl?.cluster_domain ?? '-'}; search ${(cl?.dns_search ?? []).join(' ')}`);
  say(`Flows:            ${c.flows_active} active, ${c.flows_opened} opened, ${c.flows_failed} failed`);
  say(`Traffic:          ${humanBytes(c.bytes_out)} out, ${humanBytes(c.bytes_in)} in; ${c.diverted_flows} diverted flows`);
  const dropped = st.intercepts > 0 ? await mirrorCopiesDropped(ctx) : 0;
  say(`Intercepts:       ${st.intercepts}${dropped > 0 ? ` (${droppedCopies(dropped)})` : ''}`);
  say(`Reconnects:       ${st.reconnects}${st.last_error ? ` (last problem: ${st.last_error})` : ''}`);
  if (rs) {
    say(`TUN device:       ${rs.tun_device} (${rs.tun_address}), routes ${rs.routes.map((r) => r.cidr).join(', ')}`);
    say(`TCP capture:      ${rs.tcp_capture === 'kernel' ? 'netfilter redirects TCP to the cluster to the root daemon' : 'TCP packets read off the TUN device'}`);
    say(`DNS:              ${rs.dns_mode === 'none' ? 'not configured' : `${rs.dns_address} (${rs.dns_mode}), ${rs.dns_queries} queries`}`);
    say(`Packets:          ${rs.packets_in} in, ${rs.packets_out} out, ${rs.packets_dropped} dropped, ${rs.malformed_packets} malformed; ${rs.tcp_flows} TCP and ${rs.udp_flows} UDP flows`);
    if (rs.udp_flow_limit) {
      const evicted = rs.udp_evicted_source_limit + rs.udp_evicted_table_full;
      say(`UDP flows:        ${rs.udp_flows} of ${rs.udp_flow_limit}, per-source limit ${rs.udp_source_limit}; ${evicted} evicted to make room (${rs.udp_evicted_source_limit} at a source's limit, ${rs.udp_evicted_table_full} with the table full)`);
    }
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

export async function quitCommand(argv: string[], ctx: CliContext, quiet = false): Promise<void> {
  parse('quit', argv, COMMANDS.quit.flags);
  const rootNote = await quitRoot(ctx);
  rmSync(tunSessionPath(ctx), { force: true });
  rmSync(connectSettingsPath(ctx), { force: true });
  let pid = 0;
  try {
    pid = Number(readFileSync(daemonPidPath(ctx.config.runtimeDir), 'utf8'));
  } catch {
    // no pid file
  }
  const st = await getStatus(ctx);
  if (st) {
    const client = daemonClient(ctx.config.runtimeDir);
    try {
      await callDaemon(client, 'Quit', {}, 5000);
    } catch (err) {
      throw fromGrpc(err, 'quit');
    } finally {
      dropDaemonClient();
    }
    pid = st.pid || pid;
  }
  // Wait for the daemon to be gone; a daemon that hangs is killed.
  const until = Date.now() + 5000;
  while (pid && pidAlive(pid) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  if (pid && pidAlive(pid)) process.kill(pid, 'SIGKILL');
  rmSync(daemonSocketPath(ctx.config.runtimeDir), { force: true });
  rmSync(daemonPidPath(ctx.config.runtimeDir), { force: true });
  // A daemon that died mid-mount leaves its mounts in the journal (its sshfs may still hold them).
  const unmounted = cleanupMounts(ctx.config.runtimeDir);
  const mountNote = unmounted.length ? `; unmounted the pod files left at ${unmounted.join(', ')}` : '';
  if (quiet) return;
  if (st) say(`Disconnected: the user daemon has stopped and its intercepts are gone${rootNote ? `; ${rootNote}` : ''}${mountNote}.`);
  else say(rootNote || mountNote ? `rdbg was not connected; ${[rootNote, mountNote.slice(2)].filter(Boolean).join('; ')}.` : 'rdbg was not connected; nothing left to clean up.');
}
