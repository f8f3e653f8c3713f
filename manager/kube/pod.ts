// The parts of the Kubernetes Pod API the injector reads or writes. Plain
// JSON shapes (what the apiserver sends in an AdmissionReview), so that the
// injector stays a pure function of its input; unknown fields pass through.

export interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: {
    fieldRef?: { fieldPath: string; apiVersion?: string };
    resourceFieldRef?: { resource: string; containerName?: string; divisor?: string | number };
    configMapKeyRef?: { name?: string; key: string; optional?: boolean };
    secretKeyRef?: { name?: string; key: string; optional?: boolean };
  };
}

export interface EnvFromSource {
  prefix?: string;
  configMapRef?: { name?: string; optional?: boolean };
  secretRef?: { name?: string; optional?: boolean };
}

export interface ContainerPort {
  name?: string;
  containerPort: number;
  protocol?: string;
  hostPort?: number;
  hostIP?: string;
}

/** httpGet / tcpSocket ports may be a number or the name of one of the container's own ports. */
export interface PortRef {
  port: number | string;
  [k: string]: unknown;
}

export interface ProbeLike {
  httpGet?: PortRef;
  tcpSocket?: PortRef;
  [k: string]: unknown;
}

export interface Container {
  name: string;
  image?: string;
  command?: string[];
  args?: string[];
  ports?: ContainerPort[];
  env?: EnvVar[];
  envFrom?: EnvFromSource[];
  livenessProbe?: ProbeLike;
  readinessProbe?: ProbeLike;
  startupProbe?: ProbeLike;
  lifecycle?: { postStart?: ProbeLike; preStop?: ProbeLike; [k: string]: unknown };
  restartPolicy?: string;
  securityContext?: SecurityContext;
  volumeMounts?: VolumeMount[];
  [k: string]: unknown;
}

export interface VolumeMount {
  name: string;
  mountPath: string;
  readOnly?: boolean;
  subPath?: string;
  subPathExpr?: string;
  [k: string]: unknown;
}

export interface Volume {
  name: string;
  [k: string]: unknown;
}

export interface Pod {
  apiVersion?: string;
  kind?: string;
  metadata?: {
    name?: string;
    generateName?: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    [k: string]: unknown;
  };
  spec?: {
    containers?: Container[];
    initContainers?: Container[];
    volumes?: Volume[];
    hostNetwork?: boolean;
    hostPID?: boolean;
    shareProcessNamespace?: boolean;
    securityContext?: SecurityContext;
    [k: string]: unknown;
  };
  [k: string]: unknown;
}

/** The user fields of a pod's or container's securityContext (a container's win). */
export interface SecurityContext {
  runAsUser?: number;
  runAsGroup?: number;
  runAsNonRoot?: boolean;
  capabilities?: { add?: string[]; drop?: string[] };
  [k: string]: unknown;
}

/** One RFC 6902 operation (the injector only adds and replaces). */
export interface PatchOp {
  op: 'add' | 'replace' | 'remove';
  path: string;
  value?: unknown;
}

/** A JSON Pointer token (RFC 6901): `~` and `/` escaped. */
export function pointerToken(key: string): string {
  return key.replace(/~/g, '~0').replace(/\//g, '~1');
}
