// rdbg manager install | upgrade and rdbg uninstall --all: put the traffic
// manager into a cluster, renew it, and take rdbg out of the cluster again.
import { dumpYaml } from '@kubernetes/client-node';
import { parseCidr } from '../../core/cidr';
import { Codes, RdbgError } from '../../core/errors';
import { VERSION } from '../../core/version';
import { KubeClient, kubeError, type WorkloadKind } from '../../kube/apply';
import { loadKube } from '../../kube/config';
import type { CliContext } from '../context';
import { generateWebhookTls, reusableTls, type WebhookTls } from '../../kube/certs';
import {
  CREATED_NAMESPACE, DEFAULT_IMAGE, DEVELOPER, GRANT_LABEL, MANAGED_BY, MANAGER, TLS_SECRET, objectRef, renderObjects,
  type Grants, type InstallOptions, type KubeObject,
} from '../../kube/manifests';
import { claimKeys, isMarked, unmarkPatch, type MarkedWorkload } from '../../kube/marks';
import { asList, parse } from '../args';
import { uninstallWorkload } from './uninstall-workload';
import { progress, say } from '../output';
import { COMMANDS } from '../spec';

function seconds(t0: number): string {
  return `${((Date.now() - t0) / 1000).toFixed(1)} s`;
}

function timeoutMs(text: string): number {
  const s = Number(text);
  if (!Number.isFinite(s) || s <= 0) throw new RdbgError(Codes.BAD_ARGUMENT, `--timeout "${text}" must be a number of seconds`);
  return s * 1000;
}

function checkNamespace(ns: string): void {
  if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(ns)) {
    throw new RdbgError(Codes.BAD_ARGUMENT, `--namespace "${ns}" is not a valid namespace name`);
  }
}

/** rdbg manager install|upgrade */
export async function managerAdminCommand(argv: string[], ctx: CliContext): Promise<void> {
  const [sub, ...rest] = argv;
  const { values } = parse(`manager ${sub}`, rest, COMMANDS.manager.sub.install.flags);
  const ns = values.namespace!;
  checkNamespace(ns);
  const pullPolicy = values['pull-policy'] as InstallOptions['pullPolicy'];
  const allowCidrs = values['allow-cidr'] === undefined ? undefined : asList(values['allow-cidr']).map((c) => parseCidr(c).text);
  const grants = grantsOf(values as Record<string, unknown>, ns);
  if (values['dry-run']) {
    if (sub !== 'install') throw new RdbgError(Codes.BAD_ARGUMENT, '--dry-run goes with "manager install"');
    printObjects(renderObjects({
      namespace: ns, image: values.image ?? DEFAULT_IMAGE, version: VERSION, pullPolicy,
      tls: generateWebhookTls(ns), withNamespace: true, allowCidrs, grants,
    }), values.output ?? 'yaml');
    return;
  }
  if (values.output) throw new RdbgError(Codes.BAD_ARGUMENT, '-o goes with --dry-run');
  const kube = new KubeClient(loadKube({ kubeconfig: values.kubeconfig, kubeconfigList: ctx.config.kubeconfig, context: values.context }).kc);
  await installOrUpgrade(kube, sub as 'install' | 'upgrade', { namespace: ns, image: values.image, pullPolicy, allowCidrs, grants, timeoutMs: timeoutMs(values.timeout!) });
}

/** --grant-user/--grant-group/--grant-namespace, checked. */
function grantsOf(values: Record<string, unknown>, managerNs: string): Grants | undefined {
  const list = (k: string): string[] => [...new Set(asList(values[k] as string | string[] | undefined).map((x) => x.trim()))];
  const users = list('grant-user');
  const groups = list('grant-group');
  const namespaces = list('grant-namespace');
  for (const [flag, names] of [['--grant-user', users], ['--grant-group', groups]] as const) {
    if (names.some((n) => !n)) throw new RdbgError(Codes.BAD_ARGUMENT, `${flag} needs a name`);
  }
  if (!users.length && !groups.length) {
    if (namespaces.length) throw new RdbgError(Codes.BAD_ARGUMENT, '--grant-namespace says where a grant holds', 'add --grant-user USER or --grant-group GROUP');
    return undefined;
  }
  for (const n of namespaces) {
    if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(n)) throw new RdbgError(Codes.BAD_ARGUMENT, `--grant-namespace "${n}" is not a valid namespace name`);
    if (n === managerNs) {
      throw new RdbgError(Codes.BAD_ARGUMENT, `--grant-namespace ${n} is the manager's namespace: whoever may patch workloads there may run anything as the manager`,
        'developers get what they need there (connect) with every grant; name the namespaces they work in');
    }
  }
  return { users, groups, namespaces };
}

function describeGrants(g: Grants): string {
  const who = [...g.users.map((u) => `user ${u}`), ...g.groups.map((x) => `group ${x}`)].join(', ');
  const where = g.namespaces.length ? `in namespace${g.namespaces.length > 1 ? 's' : ''} ${g.namespaces.join(', ')}` : 'in every namespace (cluster-wide, the manager\'s too)';
  return `${DEVELOPER} granted to ${who} ${where}`;
}

/** As kubectl prints objects: a List in JSON, YAML documents one after the other. */
function printObjects(objects: KubeObject[], format: string): void {
  if (format === 'json') say(JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }, null, 2));
  else process.stdout.write(objects.map((o) => dumpYaml(o)).join('---\n'));
}

/**
 * Made by rdbg: `rdbg manager install`, or the chart (Helm replaces the
 * managed-by label with its own "Helm" on the live objects).
 */
const isOurs = (o: KubeObject | undefined): boolean => {
  const l = o?.metadata.labels ?? {};
  const by = l['app.kubernetes.io/managed-by'];
  return by === MANAGED_BY['app.kubernetes.io/managed-by'] || (by === 'Helm' && l['app.kubernetes.io/name'] === 'rdbg');
};

async function installOrUpgrade(kube: KubeClient, mode: 'install' | 'upgrade',
  o: { namespace: string; image?: string; pullPolicy: InstallOptions['pullPolicy']; allowCidrs?: string[]; grants?: Grants; timeoutMs: number }): Promise<void> {
  const t0 = Date.now();
  const ns = o.namespace;
  const live = await kube.read({ apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: MANAGER, namespace: ns } });
  if (live && !isOurs(live)) {
    throw new RdbgError(Codes.BAD_ARGUMENT, `Deployment/${ns}/${MANAGER} exists and was not made by rdbg`, 'pick another --namespace');
  }
  if (mode === 'upgrade' && !live) {
    throw new RdbgError(Codes.BAD_ARGUMENT, `the rdbg manager is not installed in namespace ${ns}`, `run "rdbg manager install --namespace ${ns}"`);
  }
  // A namespace that existed before rdbg stays untouched, and stays after uninstall.
  const nsLive = await kube.read({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
  const withNamespace = !nsLive || nsLive.metadata.annotations?.[CREATED_NAMESPACE] === 'true';
  const liveContainer = (live?.spec as { template?: { spec?: { containers?: { image?: string; args?: string[] }[] } } } | undefined)?.template?.spec?.containers?.[0];
  const liveImage = liveContainer?.image;
  // An upgrade without --allow-cidr keeps what the admin allowed before.
  const liveArgs = liveContainer?.args ?? [];
  const allowCidrs = o.allowCidrs ?? liveArgs.flatMap((a, i) => (liveArgs[i - 1] === '--allow-cidr' ? [a] : []));
  const image = o.image ?? liveImage ?? DEFAULT_IMAGE;

  let tls: WebhookTls | undefined;
  if (mode === 'install') tls = await storedTls(kube, ns);
  const renewed = !tls;
  tls ??= generateWebhookTls(ns);

  const objects = renderObjects({ namespace: ns, image, version: VERSION, pullPolicy: o.pullPolicy, tls, withNamespace, allowCidrs, grants: o.grants });
  const webhook = objects.filter((x) => x.kind === 'MutatingWebhookConfiguration');
  say(`${mode === 'install' ? 'Installing' : 'Upgrading'} the rdbg manager ${VERSION} in namespace ${ns} (image ${image})`);
  if (renewed) progress(`webhook certificate: new, for ${MANAGER}.${ns}.svc, valid 1 year`);
  await kube.apply(objects.filter((x) => !webhook.includes(x)), progress);
  await kube.waitRollout(ns, MANAGER, o.timeoutMs, progress);
  // The injector last: by now the manager that serves it is ready.
  await kube.apply(webhook, progress);
  if (o.grants) say(describeGrants(o.grants));
  say(`rdbg manager ${mode === 'install' ? 'installed' : 'upgraded'} in ${seconds(t0)}`);
}

/** The Secret's TLS material when it can be kept (a repeated install must not roll the manager). */
async function storedTls(kube: KubeClient, ns: string): Promise<WebhookTls | undefined> {
  const s = await kube.read({ apiVersion: 'v1', kind: 'Secret', metadata: { name: TLS_SECRET, namespace: ns } });
  const data = (s as { data?: Record<string, string> } | undefined)?.data ?? {};
  const text = (k: string): string | undefined => (data[k] ? Buffer.from(data[k], 'base64').toString() : undefined);
  const tls = { caCrt: text('ca.crt'), tlsCrt: text('tls.crt'), tlsKey: text('tls.key') };
  return isOurs(s) && reusableTls(tls, ns) ? tls : undefined;
}

/** rdbg uninstall --all */
export async function uninstallCommand(argv: string[], ctx: CliContext): Promise<void> {
  const { values, positionals } = parse('uninstall', argv, COMMANDS.uninstall.flags, true);
  if (!values.all && positionals.length === 1) {
    // -n is the workload's namespace here; without it, the kubeconfig context's
    const explicit = argv.some((a) => a === '-n' || a === '--namespace' || a.startsWith('--namespace='));
    await uninstallWorkload(positionals[0], { namespace: explicit ? values.namespace : undefined, kubeconfig: values.kubeconfig, kubeconfigList: ctx.config.kubeconfig, context: values.context });
    return;
  }
  if (!values.all || positionals.length) {
    throw new RdbgError(Codes.BAD_ARGUMENT, 'uninstall takes one WORKLOAD, or --all', 'run "rdbg uninstall WORKLOAD [-n NS]" or "rdbg uninstall --all [--namespace NS]"');
  }
  checkNamespace(values.namespace!);
  const t0 = Date.now();
  const kube = new KubeClient(loadKube({ kubeconfig: values.kubeconfig, kubeconfigList: ctx.config.kubeconfig, context: values.context }).kc);
  const unmarked = await removeMarks(kube, asList(values['agent-namespace']));
  const deleted = await removeManager(kube, values.namespace!, timeoutMs(values.timeout!));
  if (!unmarked && !deleted) {
    say(`Nothing to remove: no rdbg manager in namespace ${values.namespace} and no workload carries rdbg marks.`);
    return;
  }
  say(`Removed rdbg marks from ${unmarked} workload(s) and ${deleted} manager object(s) in ${seconds(t0)}`);
}

const WORKLOAD_KINDS: WorkloadKind[] = ['Deployment', 'StatefulSet', 'DaemonSet', 'ReplicaSet'];

async function listWorkloads(kube: KubeClient, kind: WorkloadKind, namespace?: string): Promise<MarkedWorkload[]> {
  const apps = kube.apps;
  try {
    const list = namespace
      ? await ({
        Deployment: () => apps.listNamespacedDeployment({ namespace }),
        StatefulSet: () => apps.listNamespacedStatefulSet({ namespace }),
        DaemonSet: () => apps.listNamespacedDaemonSet({ namespace }),
        ReplicaSet: () => apps.listNamespacedReplicaSet({ namespace }),
      })[kind]()
      : await ({
        Deployment: () => apps.listDeploymentForAllNamespaces(),
        StatefulSet: () => apps.listStatefulSetForAllNamespaces(),
        DaemonSet: () => apps.listDaemonSetForAllNamespaces(),
        ReplicaSet: () => apps.listReplicaSetForAllNamespaces(),
      })[kind]();
    return list.items.map((w) => ({ ...w, kind }) as MarkedWorkload);
  } catch (err) {
    throw kubeError(err, `listing ${kind}s`);
  }
}

/** Takes rdbg's marks off every marked workload; returns how many were patched. */
async function removeMarks(kube: KubeClient, namespaces: string[]): Promise<number> {
  let count = 0;
  for (const kind of WORKLOAD_KINDS) {
    const lists = namespaces.length ? await Promise.all(namespaces.map((n) => listWorkloads(kube, kind, n))) : [await listWorkloads(kube, kind)];
    for (const w of lists.flat()) {
      // a ReplicaSet with an owner belongs to its Deployment, which is unmarked instead
      if (kind === 'ReplicaSet' && w.metadata?.ownerReferences?.length) continue;
      if (!isMarked(w) && !claimKeys(w).length) continue;
      const ref = `${kind}/${w.metadata?.namespace}/${w.metadata?.name}`;
      await unmarkOne(kube, kind, w);
      progress(`${ref}: rdbg marks removed`);
      count++;
    }
  }
  return count;
}

/** Patches one workload, re-reading it when it changed since it was listed. */
async function unmarkOne(kube: KubeClient, kind: WorkloadKind, w: MarkedWorkload): Promise<void> {
  const namespace = w.metadata!.namespace!;
  const name = w.metadata!.name!;
  for (let attempt = 1; ; attempt++) {
    const ops = unmarkPatch(w);
    if (!ops.length) return;
    try {
      await kube.patchWorkload(kind, namespace, name, ops);
      return;
    } catch (err) {
      // 422: the resourceVersion test failed (the workload changed meanwhile)
      if (attempt >= 5 || !/answered 422/.test((err as Error).message)) throw err;
      const fresh = (await kube.read({ apiVersion: 'apps/v1', kind, metadata: { name, namespace } })) as MarkedWorkload | undefined;
      if (!fresh) return;
      w = { ...fresh, kind };
    }
  }
}

/** Deletes the manager's objects in a namespace (only those rdbg made); returns how many. */
async function removeManager(kube: KubeClient, ns: string, timeout: number): Promise<number> {
  const empty = { caCrt: '', tlsCrt: '', tlsKey: '' };
  const wanted = renderObjects({ namespace: ns, image: '', version: VERSION, pullPolicy: 'IfNotPresent', tls: empty, withNamespace: true }).reverse();
  // The developers' bindings, wherever --grant-namespace put them.
  const grants = `${GRANT_LABEL}=${ns}`;
  const doomed: KubeObject[] = [
    ...await kube.listLabelled('rbac.authorization.k8s.io/v1', 'RoleBinding', grants),
    ...await kube.listLabelled('rbac.authorization.k8s.io/v1', 'ClusterRoleBinding', grants),
  ].filter(isOurs);
  for (const o of wanted) {
    const live = await kube.read(o);
    if (!live || !isOurs(live)) continue;
    if (o.kind === 'Namespace' && live.metadata.annotations?.[CREATED_NAMESPACE] !== 'true') continue;
    doomed.push(o);
  }
  if (!doomed.length) return 0;
  progress(`deleting ${doomed.map(objectRef).join(', ')}`);
  return (await kube.deleteAndWait(doomed, timeout, progress)).length;
}
