// The objects `rdbg manager install` creates (docs/kubernetes.md, "Objects"),
// rendered as plain objects from a few options. charts/rdbg renders the same
// set; test/unit/manifests.test.ts and the cluster tier compare the two.
import { createHash } from 'node:crypto';
import type { WebhookTls } from './certs';

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string>; [k: string]: unknown };
  [k: string]: unknown;
}

export interface InstallOptions {
  namespace: string;
  image: string;
  version: string;
  pullPolicy: 'Always' | 'IfNotPresent' | 'Never';
  tls: WebhookTls;
  /** render the Namespace object (install creates it, or created it before) */
  withNamespace: boolean;
  /** destinations beyond the cluster's subnets that clients may reach (the manager's --allow-cidr) */
  allowCidrs?: string[];
  /** developers given rdbg-developer (`--grant-user`, `--grant-group`), in these namespaces or, with none, cluster-wide */
  grants?: Grants;
}

export interface Grants {
  users: string[];
  groups: string[];
  /** where they may intercept; empty: every namespace (a ClusterRoleBinding) */
  namespaces: string[];
}

const MANAGER_PORT_RANGE = '1024 65535';
export const DEFAULT_NAMESPACE = 'rdbg';
export const DEFAULT_IMAGE = 'localhost/rdbg:dev';
export const MANAGER = 'rdbg-manager';
export const TLS_SECRET = 'rdbg-webhook-tls';
export const INJECTOR = 'rdbg-agent-injector';
export const TLS_DIR = '/var/run/rdbg/tls';
export const MANAGER_UID = 65532;
export const CREATED_NAMESPACE = 'rdbg.dev/created-namespace';
/** on the pod template: a new certificate changes it, so the manager rolls and loads it */
export const TLS_CHECKSUM = 'rdbg.dev/tls-checksum';
export const MANAGED_BY = { 'app.kubernetes.io/managed-by': 'rdbg' } as const;
export const PORTS = { grpc: 8081, data: 8082, webhook: 8443, metrics: 9090 } as const;

/** Cluster-scoped objects carry the namespace in their name unless it is the default one. */
export function clusterScopedName(base: string, namespace: string): string {
  return namespace === DEFAULT_NAMESPACE ? base : `${base}-${namespace}`;
}

export function labels(version: string): Record<string, string> {
  return { 'app.kubernetes.io/name': 'rdbg', ...MANAGED_BY, 'app.kubernetes.io/version': version };
}

/** The manager pods' selector: stable across versions (a Deployment's selector is immutable). */
export const SELECTOR = { 'app.kubernetes.io/name': 'rdbg', 'app.kubernetes.io/component': 'manager' };
/** The same, as a label selector: how the CLI finds the manager pod to port-forward to. */
export const MANAGER_SELECTOR = Object.entries(SELECTOR).map(([k, v]) => `${k}=${v}`).join(',');

/** Read-only access to what the manager watches; token and access reviews for agents and clients. */
export const MANAGER_RULES = [
  { apiGroups: [''], resources: ['nodes', 'namespaces', 'services', 'pods'], verbs: ['get', 'list', 'watch'] },
  { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['get', 'list', 'watch'] },
  { apiGroups: ['apps'], resources: ['deployments', 'statefulsets', 'replicasets', 'daemonsets'], verbs: ['get', 'list', 'watch'] },
  { apiGroups: ['networking.k8s.io'], resources: ['servicecidrs'], verbs: ['get', 'list', 'watch'] },
  { apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] },
  { apiGroups: ['authorization.k8s.io'], resources: ['subjectaccessreviews'], verbs: ['create'] },
];

export const DEVELOPER = 'rdbg-developer';
/** On every binding `--grant-user`/`--grant-group` made: the manager's namespace (uninstall --all finds them by it). */
export const GRANT_LABEL = 'rdbg.dev/developer-grant';

/**
 * What a developer needs in the namespaces they intercept in (ClusterRole
 * rdbg-developer, bound per namespace or cluster-wide): find a Service's
 * workload and pods, mark and claim the workload (patch), check that the
 * namespace admits the agent (a pod created with dryRun; a bare pod is
 * recreated with it), follow the injection (pods watch, events), read
 * agents' logs (gather-logs). No secrets, no exec. The namespaces list only
 * counts cluster-wide (completion of -n).
 */
export const DEVELOPER_RULES = [
  { apiGroups: [''], resources: ['services', 'events'], verbs: ['get', 'list', 'watch'] },
  { apiGroups: [''], resources: ['pods'], verbs: ['get', 'list', 'watch', 'create', 'delete'] },
  { apiGroups: [''], resources: ['pods/log'], verbs: ['get'] },
  { apiGroups: ['apps'], resources: ['deployments', 'statefulsets', 'replicasets', 'daemonsets'], verbs: ['get', 'list', 'watch', 'patch'] },
  { apiGroups: [''], resources: ['namespaces'], verbs: ['get', 'list'] },
];

/**
 * What a developer needs in the manager's namespace (Role rdbg-developer
 * there): find the manager pod, port-forward to it, read its Deployment
 * (doctor's version check) and its logs. No write: whoever may patch the
 * manager's Deployment may run anything as the manager.
 */
export const CONNECT_RULES = [
  { apiGroups: [''], resources: ['pods'], verbs: ['get', 'list', 'watch'] },
  { apiGroups: [''], resources: ['pods/portforward'], verbs: ['get', 'create'] },
  { apiGroups: [''], resources: ['pods/log'], verbs: ['get'] },
  { apiGroups: ['apps'], resources: ['deployments'], verbs: ['get'] },
];

/** The name of a subject's bindings: its kind and a hash of its name (user names may hold any character). */
export function grantName(kind: 'User' | 'Group', name: string): string {
  return `${DEVELOPER}-${kind.toLowerCase()}-${createHash('sha256').update(name).digest('hex').slice(0, 10)}`;
}

export function tlsChecksum(tlsCrt: string): string {
  return createHash('sha256').update(tlsCrt).digest('hex');
}

const b64 = (s: string): string => Buffer.from(s).toString('base64');

/** All objects, in the order they are applied (the webhook last: it points at a ready manager). */
export function renderObjects(o: InstallOptions): KubeObject[] {
  const ns = o.namespace;
  const meta = (name: string, namespaced = true): KubeObject['metadata'] => ({
    name, ...(namespaced ? { namespace: ns } : {}), labels: labels(o.version),
  });
  const clusterRole = clusterScopedName(MANAGER, ns);
  const objects: KubeObject[] = [];
  if (o.withNamespace) {
    objects.push({ apiVersion: 'v1', kind: 'Namespace', metadata: { ...meta(ns, false), annotations: { [CREATED_NAMESPACE]: 'true' } } });
  }
  objects.push(
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: meta(MANAGER) },
    { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', metadata: meta(clusterRole, false), rules: MANAGER_RULES },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding', metadata: meta(clusterRole, false),
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: clusterRole },
      subjects: [{ kind: 'ServiceAccount', name: MANAGER, namespace: ns }],
    },
    {
      apiVersion: 'v1', kind: 'Secret', metadata: meta(TLS_SECRET), type: 'kubernetes.io/tls',
      data: { 'tls.crt': b64(o.tls.tlsCrt), 'tls.key': b64(o.tls.tlsKey), 'ca.crt': b64(o.tls.caCrt) },
    },
    {
      apiVersion: 'v1', kind: 'Service', metadata: meta(MANAGER),
      spec: {
        type: 'ClusterIP', selector: SELECTOR,
        ports: [
          { name: 'grpc', port: PORTS.grpc, targetPort: PORTS.grpc, protocol: 'TCP' },
          { name: 'data', port: PORTS.data, targetPort: PORTS.data, protocol: 'TCP' },
          { name: 'webhook', port: 443, targetPort: PORTS.webhook, protocol: 'TCP' },
          { name: 'metrics', port: PORTS.metrics, targetPort: PORTS.metrics, protocol: 'TCP' },
        ],
      },
    },
    { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', metadata: meta(clusterScopedName(DEVELOPER, ns), false), rules: DEVELOPER_RULES },
    { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: meta(DEVELOPER), rules: CONNECT_RULES },
    ...grantBindings(o),
    deployment(o, meta(MANAGER)),
    webhookConfiguration(o, meta(clusterScopedName(INJECTOR, ns), false)),
  );
  return objects;
}

/**
 * Per granted user or group: a RoleBinding to the Role in the manager's
 * namespace (connect), and the ClusterRole bound in each chosen namespace,
 * or cluster-wide. One binding per subject, so a later grant adds to the
 * earlier ones and never rewrites them.
 */
function grantBindings(o: InstallOptions): KubeObject[] {
  const g = o.grants;
  if (!g) return [];
  const ns = o.namespace;
  const rbac = 'rbac.authorization.k8s.io';
  const developerRole = clusterScopedName(DEVELOPER, ns);
  const subjects = [
    ...g.users.map((name) => ({ kind: 'User' as const, name })),
    ...g.groups.map((name) => ({ kind: 'Group' as const, name })),
  ];
  const meta = (name: string, namespace?: string): KubeObject['metadata'] => ({
    name, ...(namespace ? { namespace } : {}), labels: { ...labels(o.version), [GRANT_LABEL]: ns },
  });
  return subjects.flatMap((s) => {
    const name = grantName(s.kind, s.name);
    const subject = [{ apiGroup: rbac, kind: s.kind, name: s.name }];
    const connect: KubeObject = {
      apiVersion: `${rbac}/v1`, kind: 'RoleBinding', metadata: meta(name, ns),
      roleRef: { apiGroup: rbac, kind: 'Role', name: DEVELOPER }, subjects: subject,
    };
    const work: KubeObject[] = g.namespaces.length
      ? g.namespaces.map((n) => ({
        apiVersion: `${rbac}/v1`, kind: 'RoleBinding', metadata: meta(name, n),
        roleRef: { apiGroup: rbac, kind: 'ClusterRole', name: developerRole }, subjects: subject,
      }))
      : [{
        apiVersion: `${rbac}/v1`, kind: 'ClusterRoleBinding', metadata: meta(clusterScopedName(name, ns)),
        roleRef: { apiGroup: rbac, kind: 'ClusterRole', name: developerRole }, subjects: subject,
      }];
    return [connect, ...work];
  });
}

function deployment(o: InstallOptions, metadata: KubeObject['metadata']): KubeObject {
  return {
    apiVersion: 'apps/v1', kind: 'Deployment', metadata,
    spec: {
      replicas: 1,
      selector: { matchLabels: SELECTOR },
      template: {
        metadata: {
          labels: { ...labels(o.version), ...SELECTOR },
          // the scrape annotations Prometheus's kubernetes_sd examples read
          annotations: { [TLS_CHECKSUM]: tlsChecksum(o.tls.tlsCrt), 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(PORTS.metrics), 'prometheus.io/path': '/metrics' },
        },
        spec: {
          serviceAccountName: MANAGER,
          // the restricted Pod Security profile
          securityContext: {
            runAsNonRoot: true, runAsUser: MANAGER_UID, runAsGroup: MANAGER_UID, fsGroup: MANAGER_UID,
            seccompProfile: { type: 'RuntimeDefault' },
            // A "safe" sysctl (allowed by the kubelet and Pod Security): every flow whose
            // client closes first leaves the manager's port to that destination in
            // TIME_WAIT for a minute; the wider range doubles how many a minute fit.
            sysctls: [{ name: 'net.ipv4.ip_local_port_range', value: MANAGER_PORT_RANGE }],
          },
          containers: [{
            name: 'manager',
            image: o.image,
            imagePullPolicy: o.pullPolicy,
            command: ['/usr/bin/node', '/app/dist/bin/rdbg.js'],
            args: ['manager', 'serve', '--kubernetes', '--metrics-listen', `0.0.0.0:${PORTS.metrics}`, ...(o.allowCidrs ?? []).flatMap((c) => ['--allow-cidr', c])],
            env: [
              // the injected agents run the manager's own image
              { name: 'RDBG_AGENT_IMAGE', value: o.image },
              { name: 'RDBG_AGENT_PULL_POLICY', value: o.pullPolicy },
              { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
            ],
            ports: [
              { name: 'grpc', containerPort: PORTS.grpc, protocol: 'TCP' },
              { name: 'data', containerPort: PORTS.data, protocol: 'TCP' },
              { name: 'webhook', containerPort: PORTS.webhook, protocol: 'TCP' },
              { name: 'metrics', containerPort: PORTS.metrics, protocol: 'TCP' },
            ],
            readinessProbe: { tcpSocket: { port: PORTS.grpc }, periodSeconds: 2 },
            resources: { requests: { cpu: '50m', memory: '64Mi' }, limits: { memory: '512Mi' } },
            securityContext: {
              allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true,
              capabilities: { drop: ['ALL'] },
            },
            volumeMounts: [
              { name: 'tls', mountPath: TLS_DIR, readOnly: true },
              { name: 'tmp', mountPath: '/tmp' },
            ],
          }],
          volumes: [
            { name: 'tls', secret: { secretName: TLS_SECRET, defaultMode: 0o440 } },
            { name: 'tmp', emptyDir: { sizeLimit: '64Mi' } },
          ],
        },
      },
    },
  };
}

function webhookConfiguration(o: InstallOptions, metadata: KubeObject['metadata']): KubeObject {
  return {
    apiVersion: 'admissionregistration.k8s.io/v1', kind: 'MutatingWebhookConfiguration', metadata,
    webhooks: [{
      name: 'agent-injector.rdbg.dev',
      admissionReviewVersions: ['v1'],
      clientConfig: { service: { name: MANAGER, namespace: o.namespace, path: '/inject', port: 443 }, caBundle: b64(o.tls.caCrt) },
      rules: [{ operations: ['CREATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods'], scope: 'Namespaced' }],
      failurePolicy: 'Ignore',
      sideEffects: 'None',
      timeoutSeconds: 5,
      reinvocationPolicy: 'Never',
      matchPolicy: 'Equivalent',
      objectSelector: { matchLabels: { 'rdbg.dev/inject': 'enabled' } },
      namespaceSelector: {
        matchExpressions: [{ key: 'kubernetes.io/metadata.name', operator: 'NotIn', values: ['kube-system', o.namespace] }],
      },
    }],
  };
}

/** Identifies an object in messages and comparisons: Kind/namespace/name. */
export function objectRef(o: { kind: string; metadata: { name: string; namespace?: string } }): string {
  return `${o.kind}/${o.metadata.namespace ? `${o.metadata.namespace}/` : ''}${o.metadata.name}`;
}
