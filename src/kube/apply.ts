// Talking to the apiserver for install, upgrade and uninstall: server-side
// apply (field manager "rdbg", so a second apply of the same objects changes
// nothing), a Deployment rollout wait that says why it is stuck, and delete
// that waits until the objects are really gone.
import {
  ApiException, AppsV1Api, CoreV1Api, KubeConfig, KubernetesObjectApi, PatchStrategy, setHeaderOptions,
  type KubernetesObject, type V1Deployment, type V1Pod,
} from '@kubernetes/client-node';
import { Codes, RdbgError } from '../core/errors';
import { objectRef, type KubeObject } from './manifests';

export const FIELD_MANAGER = 'rdbg';
export const KubeCodes = { API: 'RDBG_KUBE_API', ROLLOUT: 'RDBG_ROLLOUT' } as const;

export type Progress = (line: string) => void;

/** --kubeconfig, else $KUBECONFIG, else ~/.kube/config (or in-cluster); --context picks a context. */
/** The status code of an apiserver answer, or undefined for a transport failure. */
export function statusOf(err: unknown): number | undefined {
  return err instanceof ApiException ? err.code : undefined;
}

/** The apiserver's own sentence for a failed request (its Status message), or ''. */
export function apiReason(err: unknown): string {
  if (!(err instanceof ApiException)) return '';
  try {
    const body = (typeof err.body === 'string' ? JSON.parse(err.body) : err.body) as { message?: string };
    return body?.message ?? '';
  } catch {
    return String(err.body).slice(0, 300);
  }
}

/** An apiserver failure as one sentence with a hint. */
export function kubeError(err: unknown, what: string, forbiddenHint = 'installing rdbg needs cluster-admin rights (RBAC and webhook objects are cluster-wide)'): RdbgError {
  if (err instanceof RdbgError) return err;
  if (err instanceof ApiException) {
    const reason = apiReason(err);
    if (err.code === 403) {
      return new RdbgError(Codes.PERMISSION, `${what}: forbidden: ${reason}`, forbiddenHint);
    }
    if (err.code === 404) {
      return new RdbgError(Codes.INTERCEPT_NOT_FOUND, `${what}: not found${reason ? `: ${reason}` : ''}`);
    }
    return new RdbgError(KubeCodes.API, `${what}: the apiserver answered ${err.code}${reason ? `: ${reason}` : ''}`);
  }
  const e = err as Error & { code?: string };
  return new RdbgError(KubeCodes.API, `${what}: cannot reach the apiserver: ${e?.message ?? String(err)}`,
    'check the kubeconfig (--kubeconfig, --context) and that the cluster is up');
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The typed API clients rdbg's cluster commands use. */
export class KubeClient {
  readonly objects: KubernetesObjectApi;
  readonly apps: AppsV1Api;
  readonly core: CoreV1Api;

  constructor(readonly config: KubeConfig) {
    this.objects = KubernetesObjectApi.makeApiClient(config);
    this.apps = config.makeApiClient(AppsV1Api);
    this.core = config.makeApiClient(CoreV1Api);
  }

  /** Every object of a kind (in all namespaces) that carries `labelSelector`. */
  async listLabelled(apiVersion: string, kind: string, labelSelector: string): Promise<KubeObject[]> {
    try {
      const list = await this.objects.list(apiVersion, kind, undefined, undefined, undefined, undefined, undefined, labelSelector);
      return (list.items as KubeObject[]).map((o) => ({ ...o, apiVersion, kind }));
    } catch (err) {
      throw kubeError(err, `listing ${kind}s`);
    }
  }

  /** The live object, or undefined when it does not exist. */
  async read<T extends KubernetesObject = KubeObject>(o: { apiVersion: string; kind: string; metadata: { name: string; namespace?: string } }): Promise<T | undefined> {
    try {
      return await this.objects.read(o as never) as T;
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw kubeError(err, `reading ${objectRef(o)}`);
    }
  }

  /** Server-side apply of each object in order; force takes fields over from other managers (e.g. kubectl edits). */
  async apply(objects: KubeObject[], progress: Progress): Promise<void> {
    for (const o of objects) {
      const before = await this.read(o);
      let after: KubernetesObject;
      try {
        after = await this.objects.patch(o, undefined, undefined, FIELD_MANAGER, true, PatchStrategy.ServerSideApply);
      } catch (err) {
        throw kubeError(err, `applying ${objectRef(o)}`);
      }
      const verb = !before ? 'created' : before.metadata?.resourceVersion === after.metadata?.resourceVersion ? 'unchanged' : 'configured';
      progress(`${objectRef(o)} ${verb}`);
    }
  }

  /**
   * Waits until the Deployment's newest generation has all replicas updated
   * and available and no old pods remain. Fails early on pods that cannot start.
   */
  async waitRollout(namespace: string, name: string, timeoutMs: number, progress: Progress): Promise<void> {
    const end = Date.now() + timeoutMs;
    let last = '';
    for (;;) {
      let d: V1Deployment;
      try {
        d = await this.apps.readNamespacedDeployment({ name, namespace });
      } catch (err) {
        throw kubeError(err, `reading Deployment/${namespace}/${name}`);
      }
      const want = d.spec?.replicas ?? 1;
      const st = d.status ?? {};
      const observed = (st.observedGeneration ?? 0) >= (d.metadata?.generation ?? 0);
      const updated = st.updatedReplicas ?? 0;
      const available = st.availableReplicas ?? 0;
      const total = st.replicas ?? 0;
      if (observed && updated === want && available === want && total === want) {
        progress(`Deployment/${namespace}/${name}: rolled out (${available}/${want} available)`);
        return;
      }
      const line = `Deployment/${namespace}/${name}: waiting, ${updated}/${want} updated, ${available}/${want} available${total > want ? `, ${total - want} old pod(s) terminating` : ''}`;
      if (line !== last) progress(line);
      last = line;
      const stuck = await this.stuckPod(namespace, d);
      if (stuck) {
        throw new RdbgError(KubeCodes.ROLLOUT, `Deployment/${namespace}/${name} cannot start: ${stuck}`,
          'check the image (--image) is present on the nodes, and `kubectl -n ' + namespace + ' describe pod`');
      }
      if (Date.now() > end) {
        throw new RdbgError(KubeCodes.ROLLOUT, `Deployment/${namespace}/${name} not ready after ${Math.round(timeoutMs / 1000)} s (${available}/${want} available)`,
          `kubectl -n ${namespace} describe deployment ${name}`);
      }
      await sleep(1000);
    }
  }

  /** A reason that will not go away by waiting (bad image, crash loop), or undefined. */
  private async stuckPod(namespace: string, d: V1Deployment): Promise<string | undefined> {
    const sel = Object.entries(d.spec?.selector?.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`).join(',');
    let pods: V1Pod[];
    try {
      pods = (await this.core.listNamespacedPod({ namespace, labelSelector: sel })).items;
    } catch {
      return undefined;
    }
    for (const p of pods) {
      for (const cs of p.status?.containerStatuses ?? []) {
        const w = cs.state?.waiting;
        if (w && ['ErrImageNeverPull', 'ImagePullBackOff', 'ErrImagePull', 'InvalidImageName', 'CreateContainerConfigError'].includes(w.reason ?? '')) {
          return `pod ${p.metadata?.name}: ${w.reason}: ${w.message ?? ''}`.trim();
        }
        if (w?.reason === 'CrashLoopBackOff' && (cs.restartCount ?? 0) >= 3) {
          const t = cs.lastState?.terminated;
          return `pod ${p.metadata?.name} keeps crashing (exit ${t?.exitCode ?? '?'}${t?.message ? `: ${t.message}` : ''})`;
        }
      }
    }
    return undefined;
  }

  /** Deletes the objects that exist (in order), then waits until all are gone. Returns those deleted. */
  async deleteAndWait(objects: KubeObject[], timeoutMs: number, progress: Progress): Promise<KubeObject[]> {
    const deleted: KubeObject[] = [];
    for (const o of objects) {
      try {
        await this.objects.delete(o, undefined, undefined, undefined, undefined, 'Background');
        deleted.push(o);
        progress(`${objectRef(o)} deleted`);
      } catch (err) {
        if (statusOf(err) !== 404) throw kubeError(err, `deleting ${objectRef(o)}`);
      }
    }
    const end = Date.now() + timeoutMs;
    for (const o of deleted) {
      let said = false;
      while (await this.read(o)) {
        if (Date.now() > end) throw new RdbgError(KubeCodes.API, `${objectRef(o)} still exists ${Math.round(timeoutMs / 1000)} s after deletion`, `kubectl get ${o.kind.toLowerCase()} ${o.metadata.name} -o yaml (finalizers?)`);
        if (!said) progress(`waiting for ${objectRef(o)} to go away`);
        said = true;
        await sleep(500);
      }
    }
    return deleted;
  }

  /**
   * A JSON patch (RFC 6902) on an apps/v1 workload. The typed API sends
   * application/json-patch+json (its preferred patch type) with the list of
   * operations as the body.
   */
  async patchWorkload(kind: WorkloadKind, namespace: string, name: string, ops: JsonPatchOp[]): Promise<void> {
    const req = { name, namespace, body: ops, fieldManager: FIELD_MANAGER };
    try {
      if (kind === 'Deployment') await this.apps.patchNamespacedDeployment(req, setHeaderOptions('Content-Type', PatchStrategy.JsonPatch));
      else if (kind === 'StatefulSet') await this.apps.patchNamespacedStatefulSet(req, setHeaderOptions('Content-Type', PatchStrategy.JsonPatch));
      else if (kind === 'DaemonSet') await this.apps.patchNamespacedDaemonSet(req, setHeaderOptions('Content-Type', PatchStrategy.JsonPatch));
      else await this.apps.patchNamespacedReplicaSet(req, setHeaderOptions('Content-Type', PatchStrategy.JsonPatch));
    } catch (err) {
      throw kubeError(err, `patching ${kind}/${namespace}/${name}`);
    }
  }
}

export type WorkloadKind = 'Deployment' | 'StatefulSet' | 'ReplicaSet' | 'DaemonSet';
export type JsonPatchOp = { op: 'remove' | 'test' | 'add' | 'replace'; path: string; value?: unknown };
