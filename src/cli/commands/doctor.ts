// `rdbg doctor`: what would fail, found before anything is changed. Every
// check only reads, asks the apiserver's authorizer, or makes server-side
// dry-run requests (which run admission, webhooks and Pod Security, and
// store nothing).
import * as k8s from '@kubernetes/client-node';
import * as grpc from '@grpc/grpc-js';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { callFailure, errorMessage } from '../../core/errors';
import { planRoutes, type Route } from '../../core/route-plan';
import { PROTOCOL, VERSION } from '../../core/version';
import { hostname, userInfo } from 'node:os';
import { managerPackage, type ManagerClient } from '../../rpc/services';
import { loadKube, type Kube } from '../../kube/config';
import type { CliContext } from '../context';
import { PodForwarder } from '../../kube/forwarder';
import { admissionProblem, AGENT_CONTAINER } from '../../kube/injection';
import { MANAGER as MANAGER_NAME, MANAGER_SELECTOR, PORTS } from '../../kube/manifests';
import { AGENT_PORT_ANNOTATION, describe, INJECT_LABEL, WORKLOAD_ANNOTATION, kubeError, Workloads } from '../../kube/workloads';
import type { ClusterInfo__Output } from '../../gen/rdbg/v1/ClusterInfo';
import type { DNSResponse__Output } from '../../gen/rdbg/v1/DNSResponse';
import type { SessionInfo__Output } from '../../gen/rdbg/v1/SessionInfo';
import { parse } from '../args';
import { printData, say } from '../output';
import { COMMANDS } from '../spec';

type Verdict = 'ok' | 'warn' | 'fail' | 'skip';
interface Check {
  area: string;
  verdict: Verdict;
  detail: string;
  fix?: string;
}

const MARK = { ok: 'ok  ', warn: 'WARN', fail: 'FAIL', skip: 'skip' } as const;

interface Ctx {
  kube: Kube;
  kc: k8s.KubeConfig;
  ns: string;
  mns: string;
  checks: Check[];
}

function add(ctx: Ctx, area: string, verdict: Verdict, detail: string, fix?: string): void {
  ctx.checks.push({ area, verdict, detail, fix });
}

async function can(kc: k8s.KubeConfig, attrs: k8s.V1ResourceAttributes): Promise<boolean | string> {
  const authz = kc.makeApiClient(k8s.AuthorizationV1Api);
  try {
    const r = await authz.createSelfSubjectAccessReview({ body: { spec: { resourceAttributes: attrs } } });
    return r.status?.allowed ?? false;
  } catch (err) {
    return errorMessage(kubeError(err, 'asking the authorizer'));
  }
}

export const RIGHTS: { why: string; ns: 'ns' | 'mns'; attrs: k8s.V1ResourceAttributes; needed: boolean }[] = [
  { why: 'connect: find the manager pod', ns: 'mns', attrs: { verb: 'list', resource: 'pods' }, needed: true },
  { why: 'connect: port-forward to the manager', ns: 'mns', attrs: { verb: 'create', resource: 'pods', subresource: 'portforward' }, needed: true },
  { why: 'connect: port-forward over WebSocket (a GET)', ns: 'mns', attrs: { verb: 'get', resource: 'pods', subresource: 'portforward' }, needed: true },
  { why: 'intercept: read services', ns: 'ns', attrs: { verb: 'get', resource: 'services' }, needed: true },
  { why: 'intercept: list pods', ns: 'ns', attrs: { verb: 'list', resource: 'pods' }, needed: true },
  { why: 'intercept: does the namespace admit the agent (a dry run)', ns: 'ns', attrs: { verb: 'create', resource: 'pods' }, needed: false },
  { why: 'intercept: follow the injection', ns: 'ns', attrs: { verb: 'watch', resource: 'pods' }, needed: true },
  { why: 'intercept: find the workload', ns: 'ns', attrs: { verb: 'get', group: 'apps', resource: 'deployments' }, needed: true },
  { why: 'intercept: mark and claim deployments', ns: 'ns', attrs: { verb: 'patch', group: 'apps', resource: 'deployments' }, needed: true },
  { why: 'intercept: mark and claim statefulsets', ns: 'ns', attrs: { verb: 'patch', group: 'apps', resource: 'statefulsets' }, needed: false },
  { why: 'doctor: the manager\'s version', ns: 'mns', attrs: { verb: 'get', group: 'apps', resource: 'deployments' }, needed: false },
  { why: 'gather-logs: the manager\'s and agents\' logs', ns: 'ns', attrs: { verb: 'get', resource: 'pods', subresource: 'log' }, needed: false },
  { why: 'manager install: webhook configuration', ns: 'ns', attrs: { verb: 'create', group: 'admissionregistration.k8s.io', resource: 'mutatingwebhookconfigurations' }, needed: false },
];

function grantHint(ctx: Ctx): string {
  return `a cluster admin grants what a developer needs with "rdbg manager install${ctx.mns === 'rdbg' ? '' : ` --namespace ${ctx.mns}`} --grant-user USER --grant-namespace ${ctx.ns}"`;
}

async function checkRights(ctx: Ctx): Promise<void> {
  for (const r of RIGHTS) {
    const namespace = r.ns === 'ns' ? ctx.ns : ctx.mns;
    const attrs = { ...r.attrs, namespace: r.attrs.resource === 'mutatingwebhookconfigurations' ? undefined : namespace };
    const verb = `${attrs.verb} ${attrs.group ? `${attrs.resource}.${attrs.group}` : attrs.resource}${attrs.subresource ? `/${attrs.subresource}` : ''}${attrs.namespace ? ` in ${attrs.namespace}` : ''}`;
    const res = await can(ctx.kc, attrs);
    if (res === true) add(ctx, 'rbac', 'ok', `${verb} (${r.why})`);
    else if (typeof res === 'string') add(ctx, 'rbac', 'skip', `${verb}: ${res}`);
    else if (r.attrs.resource === 'mutatingwebhookconfigurations') add(ctx, 'rbac', 'warn', `you may not ${verb} (${r.why})`);
    else add(ctx, 'rbac', r.needed ? 'fail' : 'warn', `you may not ${verb} (${r.why})`, grantHint(ctx));
  }
}

async function checkManager(ctx: Ctx): Promise<boolean> {
  const apps = ctx.kc.makeApiClient(k8s.AppsV1Api);
  try {
    const d = await apps.readNamespacedDeployment({ name: MANAGER_NAME, namespace: ctx.mns });
    const theirs = d.metadata?.labels?.['app.kubernetes.io/version'] ?? 'unknown';
    const ready = d.status?.availableReplicas ?? 0;
    if (ready < 1) {
      add(ctx, 'manager', 'fail', `deployment ${MANAGER_NAME} in ${ctx.mns} has no available pod`, `see "kubectl -n ${ctx.mns} describe deploy/${MANAGER_NAME}" and its pod's logs`);
      return false;
    }
    if (theirs !== VERSION) add(ctx, 'manager', 'warn', `the manager is version ${theirs}, this client ${VERSION}`, '"rdbg manager upgrade" makes them equal (a different protocol generation refuses to connect)');
    else add(ctx, 'manager', 'ok', `traffic manager ${theirs} running in namespace ${ctx.mns}`);
    return true;
  } catch (err) {
    const e = kubeError(err, `reading deployment ${MANAGER_NAME} in ${ctx.mns}`);
    if (/not found/.test(e.message)) add(ctx, 'manager', 'fail', `no traffic manager in namespace ${ctx.mns}`, `"rdbg manager install${ctx.mns === 'rdbg' ? '' : ` --namespace ${ctx.mns}`}"`);
    else add(ctx, 'manager', 'skip', e.message);
    return false;
  }
}

/** A pod as rdbg would have it marked, created with dryRun=All: the apiserver runs the webhook and Pod Security on it. */
function probePod(ns: string, image: string, agentPort: string): k8s.V1Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      generateName: 'rdbg-doctor-',
      namespace: ns,
      labels: { [INJECT_LABEL]: 'enabled' },
      annotations: { [AGENT_PORT_ANNOTATION]: agentPort, [WORKLOAD_ANNOTATION]: 'Pod/rdbg-doctor' },
    },
    spec: {
      containers: [
        {
          name: 'app',
          image,
          ports: [{ name: 'http', containerPort: 8080 }],
          securityContext: { runAsNonRoot: true, runAsUser: 65532, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] }, seccompProfile: { type: 'RuntimeDefault' } },
        },
      ],
    },
  };
}

async function checkInjection(ctx: Ctx, managerUp: boolean): Promise<void> {
  const core = ctx.kc.makeApiClient(k8s.CoreV1Api);
  let enforce = 'privileged (none set)';
  try {
    const n = await core.readNamespace({ name: ctx.ns });
    enforce = n.metadata?.labels?.['pod-security.kubernetes.io/enforce'] ?? enforce;
  } catch {
    // reading namespaces is often not allowed; the dry runs below still tell
  }
  const image = 'registry.invalid/rdbg-doctor:0';
  for (const [kind, port] of [['named port', 'http'], ['numeric port', '8080']] as const) {
    try {
      const pod = await core.createNamespacedPod({ namespace: ctx.ns, body: probePod(ctx.ns, image, port), dryRun: 'All' });
      const injected = (pod.spec?.containers ?? []).some((c) => c.name === AGENT_CONTAINER);
      if (injected) add(ctx, 'webhook', 'ok', `a pod marked for injection (${kind}) gets the agent in namespace ${ctx.ns} (Pod Security enforce: ${enforce})`);
      else if (managerUp) add(ctx, 'webhook', 'fail', `the apiserver did not get the agent from the webhook for a ${kind} (it fails open, so pods would start without the agent)`, `check the manager's logs and that the apiserver can reach service ${MANAGER_NAME}.${ctx.mns}:443`);
      else add(ctx, 'webhook', 'skip', 'no manager, so no webhook to reach');
    } catch (err) {
      const e = kubeError(err, `dry-run of an injected pod (${kind}) in ${ctx.ns}`);
      if (/PodSecurity|violates/i.test(e.message)) {
        const why = `namespace ${ctx.ns} (enforce: ${enforce}) would reject the agent for a ${kind}: ${e.message.replace(/^.*?forbidden: /, '')}`;
        if (kind === 'named port') {
          add(ctx, 'pod security', 'fail', why, 'ask an admin to relax the namespace\'s pod-security.kubernetes.io/enforce label');
          continue;
        }
        // A numeric targetPort needs NET_ADMIN, a named one nothing: fatal for the Services that target a number.
        const numeric = await numericServices(ctx);
        if (numeric.length > 0) {
          add(ctx, 'pod security', 'fail', `${why}; an intercept of ${numeric.join(', ')} would be refused`,
            'name those ports: a name on the containerPort and the Service\'s targetPort set to it (the agent then needs no NET_ADMIN), or relax the namespace to privileged');
        } else {
          add(ctx, 'pod security', 'warn', `${why}; no Service in ${ctx.ns} targets a port by number`,
            'give Services named targetPorts (the agent then needs no NET_ADMIN), or relax the namespace to privileged');
        }
      } else {
        add(ctx, 'webhook', 'skip', e.message);
      }
    }
  }
}

/** Services of the namespace that target a container port by number (an intercept of them needs NET_ADMIN). */
async function numericServices(ctx: Ctx): Promise<string[]> {
  try {
    const list = await ctx.kc.makeApiClient(k8s.CoreV1Api).listNamespacedService({ namespace: ctx.ns });
    return list.items
      .filter((svc) => Object.keys(svc.spec?.selector ?? {}).length > 0)
      .flatMap((svc) => (svc.spec?.ports ?? []).filter((p) => (p.protocol ?? 'TCP') === 'TCP' && typeof (p.targetPort ?? p.port) === 'number').map((p) => `service ${svc.metadata?.name} (targetPort ${p.targetPort ?? p.port})`));
  } catch {
    return [];
  }
}

/** `rdbg doctor NAME`: would intercepting NAME be admitted? The same dry run as intercept's. */
async function checkTarget(ctx: Ctx, name: string): Promise<void> {
  try {
    const ws = new Workloads(ctx.kc);
    const target = await ws.resolve(name, ctx.ns);
    const refused = await admissionProblem(ws, target);
    if (refused) add(ctx, 'intercept', 'fail', `intercepting ${name}: ${refused.message}`, refused.hint);
    else add(ctx, 'intercept', 'ok', `the pods of ${describe(target.workload)} would be admitted with the agent on port ${target.agentPort}`);
  } catch (err) {
    add(ctx, 'intercept', 'fail', `intercepting ${name}: ${errorMessage(err)}`, (err as { hint?: string }).hint);
  }
}

async function clusterInfo(ctx: Ctx): Promise<ClusterInfo__Output | undefined> {
  const fwd = await PodForwarder.start(ctx.kube, { namespace: ctx.mns, selector: MANAGER_SELECTOR, port: PORTS.grpc });
  const port = fwd.port;
  const Manager = managerPackage().Manager;
  const client = new Manager(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as ManagerClient;
  const opts = (): grpc.CallOptions => ({ deadline: Date.now() + 8000 });
  try {
    const user = `${userInfo().username}@${hostname()} (doctor)`;
    const s = await new Promise<SessionInfo__Output>((resolve, reject) =>
      client.arrive({ client_version: VERSION, protocol: PROTOCOL, user, hostname: hostname(), namespace: ctx.ns }, opts(), (e, r) => (e ? reject(e) : resolve(r!))),
    );
    const name = `kubernetes.default.svc.${s.cluster?.cluster_domain || 'cluster.local'}`;
    const dns = await new Promise<DNSResponse__Output | grpc.ServiceError>((resolve) =>
      client.lookupDns({ session_id: s.session_id, name, qtype: 1 }, opts(), (e, r) => resolve(e ?? r!)),
    );
    await new Promise<void>((resolve) => client.depart({ session_id: s.session_id }, opts(), () => resolve()));
    if (dns instanceof Error) add(ctx, 'dns', 'fail', `the manager could not resolve ${name}: ${dns.details}`, 'check CoreDNS (kube-dns) in kube-system');
    else add(ctx, 'dns', dns.answers.length > 0 ? 'ok' : 'fail', `cluster DNS through the manager: ${name} -> ${dns.answers.map((a) => a.address).join(', ') || 'no answer'}`);
    return s.cluster ?? undefined;
  } catch (err) {
    const e = err as grpc.ServiceError;
    add(ctx, 'manager', 'fail', `a session through the apiserver's port-forward failed: ${callFailure(e)}`, e.code === grpc.status.FAILED_PRECONDITION ? '"rdbg manager upgrade"' : undefined);
    return undefined;
  } finally {
    client.close();
    fwd.close();
  }
}

function laptopRoutes(): Route[] {
  const out: Route[] = [];
  for (const fam of ['-4', '-6']) {
    const parsed = JSON.parse(execFileSync('ip', ['-j', fam, 'route', 'show'], { encoding: 'utf8' }) || '[]') as { dst: string; dev: string; gateway?: string }[];
    for (const r of parsed) out.push({ dst: r.dst, dev: r.dev, via: r.gateway });
  }
  return out;
}

function checkSubnets(ctx: Ctx, cluster: ClusterInfo__Output): void {
  let existing: Route[];
  try {
    existing = laptopRoutes();
  } catch (err) {
    add(ctx, 'subnets', 'skip', `cannot read this machine's routes: ${errorMessage(err)}`);
    return;
  }
  const subnets = [...cluster.service_subnets, ...cluster.pod_subnets];
  try {
    planRoutes({ serviceSubnets: cluster.service_subnets, podSubnets: cluster.pod_subnets, alsoProxy: [], neverProxy: [], managerAddresses: [], existing, tunName: 'rdbg0', allowConflicts: false });
    add(ctx, 'subnets', 'ok', `cluster subnets ${subnets.join(', ')} overlap no route of this machine`);
  } catch (err) {
    add(ctx, 'subnets', 'fail', errorMessage(err), (err as { hint?: string }).hint);
  }
}

function checkHostDns(ctx: Ctx): void {
  let conf = '';
  try {
    conf = readFileSync('/etc/resolv.conf', 'utf8');
  } catch {
    add(ctx, 'dns', 'warn', 'no /etc/resolv.conf: rdbg cannot add cluster names to this machine\'s resolver (use --dns none and the SOCKS proxy, or IPs)');
    return;
  }
  const stub = /^nameserver\s+127\.0\.0\.53\s*$/m.test(conf);
  if (stub && !existsSync('/run/systemd/resolve')) add(ctx, 'dns', 'warn', 'resolv.conf points at 127.0.0.53 but systemd-resolved is not running');
  else add(ctx, 'dns', 'ok', stub ? 'systemd-resolved: rdbg adds a per-link DNS server and routing domains' : 'plain /etc/resolv.conf: rdbg prepends its resolver and restores the original on quit');
}

export async function doctorCommand(argv: string[], cli: CliContext): Promise<void> {
  const { values, positionals } = parse('doctor', argv, COMMANDS.doctor.flags, true);
  const kube = loadKube({ kubeconfig: values.kubeconfig, kubeconfigList: cli.config.kubeconfig, context: values.context, namespace: values.namespace });
  const ctx: Ctx = { kube, kc: kube.kc, ns: values.namespace ?? kube.namespace, mns: values['manager-namespace']!, checks: [] };
  try {
    const v = await kube.kc.makeApiClient(k8s.VersionApi).getCode();
    add(ctx, 'apiserver', 'ok', `${kube.server} (context ${kube.context}) answers: Kubernetes ${v.gitVersion}`);
  } catch (err) {
    add(ctx, 'apiserver', 'fail', `${kube.server} (context ${kube.context}) does not answer: ${errorMessage(err)}`, 'check the network path and the kubeconfig\'s credentials ("kubectl version")');
  }
  if (ctx.checks[0].verdict === 'ok') {
    await checkRights(ctx);
    const up = await checkManager(ctx);
    await checkInjection(ctx, up);
    if (positionals[0]) await checkTarget(ctx, positionals[0]);
    const cluster = up ? await clusterInfo(ctx) : undefined;
    if (cluster) checkSubnets(ctx, cluster);
  }
  checkHostDns(ctx);
  const failed = ctx.checks.filter((c) => c.verdict === 'fail').length;
  if (values.output) {
    printData(values.output, { ok: failed === 0, checks: ctx.checks });
  } else {
    for (const c of ctx.checks) {
      say(`${MARK[c.verdict]}  ${c.area.padEnd(12)} ${c.detail}`);
      if (c.fix && c.verdict !== 'ok') say(`${' '.repeat(19)}fix: ${c.fix}`);
    }
    say(failed ? `\n${failed} problem(s) would make rdbg fail here.` : '\nNothing in the way.');
  }
  if (failed) process.exitCode = 1;
}
