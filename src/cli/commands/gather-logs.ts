import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync, copyFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Codes, errorMessage, RdbgError } from '../../core/errors';
import { runtimeDir } from '../../core/paths';
import { VERSION } from '../../core/version';
import { parse } from '../args';
import type { CliContext } from '../context';
import { progress, say } from '../output';
import { COMMANDS } from '../spec';

/** What the archive holds, and what could not be had (written as index.json at its root). */
interface Index {
  rdbg_version: string;
  created: string;
  files: string[];
  missing: { what: string; why: string }[];
}

/** A pod's log of one container; `previous` is the container's last run before a restart. */
interface PodLog {
  namespace: string;
  pod: string;
  container: string;
  previous: boolean;
}

/**
 * `rdbg gather-logs`: the daemons' logs and state on this machine, and the
 * manager's and the agents' logs in the cluster, in one .tar.gz for a bug
 * report. What cannot be had (no session, no rights) is named in index.json;
 * it never fails for that.
 */
export async function gatherLogsCommand(argv: string[], ctx: CliContext): Promise<void> {
  const { values } = parse('gather-logs', argv, COMMANDS['gather-logs'].flags);
  const out = resolve(values.output ?? `rdbg-logs-${new Date().toISOString().replace(/[:.]/g, '-')}.tar.gz`);
  const dir = mkdtempSync(join(tmpdir(), 'rdbg-logs-'));
  const index: Index = { rdbg_version: VERSION, created: new Date().toISOString(), files: [], missing: [] };
  const put = (name: string, text: string): void => {
    mkdirSync(join(dir, name, '..'), { recursive: true });
    writeFileSync(join(dir, name), text);
    index.files.push(name);
  };
  try {
    await gatherLaptop(ctx, dir, index, put);
    if (!values['no-cluster']) await gatherCluster(ctx, values, index, put);
    writeFileSync(join(dir, 'index.json'), JSON.stringify(index, null, 2) + '\n');
    const tar = await import('tar');
    await tar.create({ gzip: true, file: out, cwd: dir, portable: true }, ['index.json', ...index.files]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  say(`Wrote ${out}: ${index.files.length} file(s)${index.missing.length ? `; not included: ${index.missing.map((m) => m.what).join(', ')} (index.json says why)` : ''}.`);
}

async function gatherLaptop(ctx: CliContext, dir: string, index: Index, put: (name: string, text: string) => void): Promise<void> {
  const home = runtimeDir(ctx.config.runtimeDir);
  // The daemons' logs (and their rotated copies), the session's connect settings; never sockets or pid files.
  for (const f of readdirSync(home)) {
    if (!/\.log(\.\d+)?$|^connect\.json$|^tun-session\.json$/.test(f) || !statSync(join(home, f)).isFile()) continue;
    mkdirSync(join(dir, 'laptop'), { recursive: true });
    copyFileSync(join(home, f), join(dir, 'laptop', f));
    index.files.push(`laptop/${f}`);
  }
  const { getRootStatus, getStatus } = await import('./connect');
  const [st, rs] = await Promise.all([getStatus(ctx).catch(() => undefined), getRootStatus(ctx).catch(() => undefined)]);
  if (st) put('laptop/status.json', JSON.stringify({ ...st, root: rs ?? null }, null, 2) + '\n');
  else index.missing.push({ what: 'status', why: 'no user daemon is running' });
  if (st) {
    const { callDaemon, daemonClient } = await import('../daemon-client');
    const client = daemonClient(ctx.config.runtimeDir);
    try {
      const list = await callDaemon(client, 'List', { session_id: '', all: true }, 5000);
      // The pods' environments stay out: they often hold secrets.
      put('laptop/intercepts.json', JSON.stringify(list.intercepts.map(({ env: _env, ...i }) => i), null, 2) + '\n');
    } catch (err) {
      index.missing.push({ what: 'intercepts', why: errorMessage(err) });
    }
  }
  put('laptop/versions.json', JSON.stringify({ rdbg: VERSION, node: process.versions.node, platform: `${process.platform} ${process.arch}` }, null, 2) + '\n');
}

async function gatherCluster(ctx: CliContext, values: { kubeconfig?: string; context?: string; 'manager-namespace'?: string; since?: string }, index: Index, put: (name: string, text: string) => void): Promise<void> {
  const [{ loadKube }, k8s, { MANAGER_SELECTOR }, { AGENT_CONTAINER }, { INJECT_LABEL }] = await Promise.all([
    import('../../kube/config'), import('@kubernetes/client-node'), import('../../kube/manifests'), import('../../kube/injection'), import('../../kube/marks'),
  ]);
  let core: InstanceType<typeof k8s.CoreV1Api>;
  try {
    const kube = loadKube({ kubeconfig: values.kubeconfig, kubeconfigList: ctx.config.kubeconfig, context: values.context });
    core = kube.kc.makeApiClient(k8s.CoreV1Api);
  } catch (err) {
    index.missing.push({ what: 'cluster logs', why: errorMessage(err) });
    return;
  }
  const mns = values['manager-namespace'] ?? 'rdbg';
  const sinceSeconds = values.since ? Number(values.since) : undefined;
  if (sinceSeconds !== undefined && !(sinceSeconds > 0)) throw new RdbgError(Codes.BAD_ARGUMENT, `--since "${values.since}" must be a number of seconds`);
  const logs: PodLog[] = [];
  const pods = async (what: string, list: () => Promise<{ items: { metadata?: { name?: string; namespace?: string }; spec?: { containers: { name: string }[] }; status?: { containerStatuses?: { name: string; restartCount: number }[] } }[] }>, container?: string): Promise<void> => {
    try {
      for (const p of (await list()).items) {
        for (const c of p.spec?.containers ?? []) {
          if (container && c.name !== container) continue;
          const base = { namespace: p.metadata!.namespace!, pod: p.metadata!.name!, container: c.name };
          logs.push({ ...base, previous: false });
          if ((p.status?.containerStatuses?.find((s) => s.name === c.name)?.restartCount ?? 0) > 0) logs.push({ ...base, previous: true });
        }
      }
    } catch (err) {
      index.missing.push({ what, why: kubeWhy(err) });
    }
  };
  progress(`reading the manager's and the agents' logs (namespace ${mns} and the pods with the agent)`);
  await pods(`the manager's pods in namespace ${mns}`, () => core.listNamespacedPod({ namespace: mns, labelSelector: MANAGER_SELECTOR }));
  await pods('the pods with the agent', () => core.listPodForAllNamespaces({ labelSelector: `${INJECT_LABEL}=enabled` }), AGENT_CONTAINER);
  await Promise.all(logs.map(async (l) => {
    const name = `cluster/${l.namespace}/${l.pod}/${l.container}${l.previous ? '.previous' : ''}.log`;
    try {
      put(name, await core.readNamespacedPodLog({ name: l.pod, namespace: l.namespace, container: l.container, previous: l.previous, sinceSeconds, timestamps: true }));
    } catch (err) {
      index.missing.push({ what: name, why: kubeWhy(err) });
    }
  }));
}

function kubeWhy(err: unknown): string {
  const code = (err as { code?: number }).code;
  if (code === 403) return 'forbidden: your kubeconfig user may not read these (pods, pods/log)';
  return errorMessage(err).split('\n')[0];
}
