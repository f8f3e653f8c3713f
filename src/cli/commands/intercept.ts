import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { resolve as resolvePath } from 'node:path';
import { Codes, RdbgError } from '../../core/errors';
import { describeRule, parseHeaderFlag } from '../../intercept/rules';
import type { InterceptInfo__Output } from '../../gen/rdbg/v1/InterceptInfo';
import { asList, parse } from '../args';
import { callDaemon, daemonClient } from '../daemon-client';
import { fromGrpc, printData, progress, say, table } from '../output';
import { COMMANDS } from '../spec';
import { droppedCopies, getStatus } from './connect';
import type { CliContext } from '../context';
import type { DaemonStatus__Output } from '../../gen/rdbg/v1/DaemonStatus';
import type { InterceptTarget } from '../../kube/workloads';
import { PREPARE_IN_CLI } from '../../rpc/local-client';

const KEEP_LOCAL = new Set(['PATH', 'HOME', 'USER', 'SHELL', 'TERM', 'PWD', 'LANG', 'TMPDIR']);

function parsePort(text: string): { local: number; remote: number; remoteText?: string } {
  const m = /^(\d+)(?::(\d+|[a-z0-9]([-a-z0-9]*[a-z0-9])?))?$/.exec(text);
  const local = m ? Number(m[1]) : NaN;
  const remote = m?.[2] && /^\d+$/.test(m[2]) ? Number(m[2]) : 0;
  if (!m || local < 1 || local > 65535 || remote > 65535) {
    throw new RdbgError(Codes.BAD_ARGUMENT, `--port "${text}" must look like LOCAL or LOCAL:REMOTE (1-65535, or the remote port's name)`);
  }
  return { local, remote, remoteText: m[2] };
}

/**
 * Kubernetes mode: NAME becomes the workload behind it and the app port;
 * the agent is injected (once) before the manager is asked.
 */
async function prepareOnKubernetes(ctx: CliContext, st: DaemonStatus__Output, name: string, namespace: string, remote?: string): Promise<InterceptTarget> {
  // Loaded here only: the Kubernetes client is most of a CLI start, and the daemon does the usual case.
  const [{ loadKube }, { describe, Workloads }, { ensureAgent }] = await Promise.all([import('../../kube/config'), import('../../kube/workloads'), import('../../kube/injection')]);
  const { kc } = loadKube({ context: st.kube_context, kubeconfigList: st.kubeconfig || ctx.config.kubeconfig });
  const ws = new Workloads(kc);
  const target = await ws.resolve(name, namespace, remote);
  progress(`${target.service ? `service ${target.service} is served by ` : ''}${describe(target.workload)}, container ${target.container}, port ${target.agentPort}`);
  // One pod with the agent is enough to start: the intercept is taken there at once, and by each
  // other pod's agent as the rollout brings it up (the manager hands it to every agent that arrives).
  await ensureAgent(ws, target, progress, { until: 'first' });
  return target;
}

/** Waits until `want` agents have taken the intercept (an agent registers a moment after its pod starts). */
async function waitForAgents(client: ReturnType<typeof daemonClient>, id: string, want: number): Promise<number> {
  const until = Date.now() + 60_000;
  let agents = 0;
  while (Date.now() < until) {
    const list = await callDaemon(client, 'List', { session_id: '', all: false });
    agents = list.intercepts.find((i) => i.id === id)?.agents ?? 0;
    if (agents >= want) return agents;
    await new Promise((r) => setTimeout(r, 100));
  }
  return agents;
}

/** The daemon's "prepare it in the CLI" is no error: the CLI goes on (undefined); any other is. */
function notForDaemon(err: unknown): undefined {
  if ((err as { details?: string }).details === PREPARE_IN_CLI) return undefined;
  throw err;
}

function envFileText(env: Record<string, string>): string {
  return Object.keys(env).sort().map((k) => `${k}=${env[k].replace(/\n/g, '\\n')}`).join('\n') + '\n';
}

export async function interceptCommand(argv: string[], ctx: CliContext, verb: 'intercept' | 'replace' = 'intercept'): Promise<void> {
  const dash = argv.indexOf('--');
  const own = dash >= 0 ? argv.slice(0, dash) : argv;
  const command = dash >= 0 ? argv.slice(dash + 1) : [];
  if (verb === 'replace') parse(verb, own, COMMANDS.replace.flags, true); // refuses the flags a replace does not take
  const { values, positionals } = parse(verb, own, COMMANDS.intercept.flags, true);
  const replace = verb === 'replace' || values.replace === true;
  if (positionals.length !== 1) throw new RdbgError(Codes.BAD_ARGUMENT, `${verb} takes exactly one workload or service name`, `run "rdbg ${verb} --help"`);
  if (!values.port) throw new RdbgError(Codes.BAD_ARGUMENT, `${verb} needs --port LOCAL[:REMOTE]`);
  if (replace && (values.header || values['path-prefix'] || values.mirror)) {
    throw new RdbgError(Codes.BAD_ARGUMENT, 'a replace takes every request to the port: no --header, --path-prefix or --mirror', 'intercept with --header to take only your own requests while the app runs');
  }
  const { local, remote, remoteText } = parsePort(values.port);
  const prefix = values['path-prefix'];
  if (prefix !== undefined && !prefix.startsWith('/')) throw new RdbgError(Codes.BAD_ARGUMENT, `--path-prefix "${prefix}" must start with "/"`, `e.g. --path-prefix /${prefix}`);
  const st = await getStatus(ctx);
  if (!st) throw new RdbgError(Codes.NOT_CONNECTED, 'intercept: rdbg is not connected', 'run "rdbg connect" first');
  if (remoteText && !remote && !st.kube_context) throw new RdbgError(Codes.BAD_ARGUMENT, `--port "${values.port}": a named remote port needs Kubernetes mode`);
  const headers = asList(values.header).map(parseHeaderFlag);
  const rule = {
    headers,
    path_prefix: values['path-prefix'] ?? '',
    mirror: values.mirror ?? false,
    replace,
    local_port: local,
    local_host: values['local-host'] ?? '127.0.0.1',
  };
  const spec = { ...rule, workload: positionals[0], namespace: values.namespace ?? '', port: remote };
  const mountDir = values.mount && values.mount !== 'false' ? resolvePath(values.mount) : '';
  const copyDir = values['copy-files'] ? resolvePath(values['copy-files']) : '';
  if (mountDir && copyDir) throw new RdbgError(Codes.BAD_ARGUMENT, '--mount and --copy-files: one or the other');
  const files = { mount_dir: mountDir, copy_dir: copyDir };
  const client = daemonClient(ctx.config.runtimeDir);
  let info: InterceptInfo__Output | undefined;
  let target: InterceptTarget | undefined;
  try {
    // Kubernetes mode: the daemon, whose client is warm, takes a workload whose agent is in; else this CLI injects it.
    if (st.kube_context) info = await callDaemon(client, 'Intercept', { spec, name: positionals[0], resolve: true, remote_port: remoteText ?? '', ...files }, 110_000).catch(notForDaemon);
    if (st.kube_context && !info) {
      target = await prepareOnKubernetes(ctx, st, positionals[0], values.namespace || st.namespace, remoteText);
      spec.workload = target.workload.name;
      spec.namespace = target.workload.namespace;
      spec.port = target.appPort;
    }
    info ??= await callDaemon(client, 'Intercept', { spec, name: positionals[0], ...files }, 50_000);
    if (target && info.agents < 1) {
      progress('waiting for the first agent to take the intercept');
      info.agents = await waitForAgents(client, info.id, 1);
      if (info.agents > 0) info.state = 'ACTIVE';
    }
  } catch (err) {
    throw fromGrpc(err, verb);
  }
  const where = `${info.spec!.workload}.${info.spec!.namespace}`;
  const rest = target && info.agents < target.replicas ? ` of ${target.replicas}; the other pods take it as their rollout brings them up ("rdbg list" counts them)` : '';
  say(`${replace ? 'Replacing' : 'Intercepting'} port ${info.spec!.port} of ${where} (${describeRule(info.spec!)}) -> ${spec.local_host}:${local}` +
    (info.state === 'ACTIVE' ? `; ${info.agents} agent(s) ready${rest}.` : `; waiting: ${info.message}.`));
  const filesDir = mountDir || copyDir;
  if (filesDir) say(`The files of pod ${info.files_pod} are ${mountDir ? 'mounted' : 'copied'} at ${filesDir} (at their paths in the app container).`);
  const env = info.env ?? {};
  if (values['env-file']) writeFileSync(values['env-file'], envFileText(env));
  if (values['env-json']) writeFileSync(values['env-json'], JSON.stringify(env, null, 2) + '\n');
  if (command.length === 0) return;
  const merged: NodeJS.ProcessEnv = { ...ctx.childEnv };
  for (const [k, v] of Object.entries(env)) if (!KEEP_LOCAL.has(k)) merged[k] = v;
  if (filesDir) merged.RDBG_ROOT = filesDir; // COMMAND_VARIABLES in src/core/config.ts
  const code = await new Promise<number>((resolve) => {
    const child = spawn(command[0], command.slice(1), { stdio: 'inherit', env: merged });
    const forward = (sig: NodeJS.Signals): void => void child.kill(sig);
    process.on('SIGINT', forward);
    process.on('SIGTERM', forward);
    child.on('error', (err) => {
      process.stderr.write(`rdbg: cannot run ${command[0]}: ${err.message}\n`);
      resolve(127);
    });
    child.on('exit', (c, sig) => resolve(c ?? (sig ? 128 + 1 : 1)));
  });
  try {
    await callDaemon(client, 'Leave', { workload: info.spec!.workload, namespace: info.spec!.namespace, id: info.id });
    say(`Intercept of ${where} ended with the command.`);
  } catch (err) {
    process.stderr.write(`rdbg: could not end the intercept: ${fromGrpc(err, 'leave').message}\n`);
  }
  process.exitCode = code;
}

export async function leaveCommand(argv: string[], ctx: CliContext): Promise<void> {
  const { values, positionals } = parse('leave', argv, COMMANDS.leave.flags, true);
  if (positionals.length !== 1) throw new RdbgError(Codes.BAD_ARGUMENT, 'leave takes the intercepted workload name', 'see "rdbg list"');
  const client = daemonClient(ctx.config.runtimeDir);
  try {
    await callDaemon(client, 'Leave', { workload: positionals[0], namespace: values.namespace ?? '' });
    say(`Left the intercept of ${positionals[0]}.`);
  } catch (err) {
    throw fromGrpc(err, 'leave');
  }
}

function requestsCell(i: InterceptInfo__Output): string {
  const dropped = Number(i.mirrors_dropped ?? 0);
  return dropped > 0 ? `${i.requests} (${droppedCopies(dropped)})` : String(i.requests);
}

export async function listCommand(argv: string[], ctx: CliContext): Promise<void> {
  const { values } = parse('list', argv, COMMANDS.list.flags);
  const client = daemonClient(ctx.config.runtimeDir);
  let list: InterceptInfo__Output[];
  try {
    list = (await callDaemon(client, 'List', { session_id: '', all: values.all ?? false })).intercepts;
  } catch (err) {
    throw fromGrpc(err, 'list');
  }
  if (values.output === 'json' || values.output === 'yaml') {
    printData(values.output, list.map(({ env: _env, ...i }) => i));
    return;
  }
  if (list.length === 0) {
    say('No intercepts.');
    return;
  }
  const wide = values.output === 'wide';
  const rows = [['WORKLOAD', 'NAMESPACE', 'PORT', 'RULE', 'LOCAL', 'OWNER', 'STATE', 'REQUESTS', ...(wide ? ['AGENTS', 'ID', 'MESSAGE'] : [])]];
  for (const i of list) {
    rows.push([i.spec!.workload, i.spec!.namespace, String(i.spec!.port), describeRule(i.spec!), `${i.spec!.local_host || '127.0.0.1'}:${i.spec!.local_port}`, i.owner, i.state, requestsCell(i),
      ...(wide ? [String(i.agents), i.id, i.message || '-'] : [])]);
  }
  say(table(rows));
}
