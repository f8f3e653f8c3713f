// The marks rdbg puts on a workload (docs/kubernetes.md, "Injection" and
// "Intercept permission") and the JSON patch that takes exactly those off
// again, so that the pod template is as it was before rdbg touched it.
import { createHash } from 'node:crypto';
import type { JsonPatchOp } from './apply';

export const INJECT_LABEL = 'rdbg.dev/inject';
export const INJECT_VALUE = 'enabled';
export const AGENT_PORT_ANNOTATION = 'rdbg.dev/agent-port';
export const WORKLOAD_ANNOTATION = 'rdbg.dev/workload';
export const CLAIM_PREFIX = 'rdbg.dev/claim-';

/**
 * The annotation a client puts on a workload to show it may intercept it, for
 * one session: the session id is a secret of the client and the manager, its
 * hash reveals nothing (docs/kubernetes.md, "Intercept permission").
 */
export function claimAnnotation(sessionId: string): { key: string; value: string } {
  const hash = createHash('sha256').update(sessionId).digest('hex');
  return { key: CLAIM_PREFIX + hash.slice(0, 12), value: hash };
}

export interface MarkedWorkload {
  kind: string;
  metadata?: { name?: string; namespace?: string; resourceVersion?: string; annotations?: Record<string, string>; ownerReferences?: unknown[] };
  spec?: { template?: { metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> } } };
}

/** RFC 6901: "~" and "/" inside a key. */
export function pointerKey(key: string): string {
  return key.replace(/~/g, '~0').replace(/\//g, '~1');
}

export function isMarked(w: MarkedWorkload): boolean {
  return w.spec?.template?.metadata?.labels?.[INJECT_LABEL] === INJECT_VALUE;
}

export function claimKeys(w: MarkedWorkload): string[] {
  return Object.keys(w.metadata?.annotations ?? {}).filter((k) => k.startsWith(CLAIM_PREFIX));
}

/** Removes `keys` from the map at `path`; the whole map when nothing else is left in it. */
function removeKeys(path: string, map: Record<string, string> | undefined, keys: string[]): JsonPatchOp[] {
  const present = keys.filter((k) => map && k in map);
  if (!present.length) return [];
  if (Object.keys(map!).length === present.length) return [{ op: 'remove', path }];
  return present.map((k) => ({ op: 'remove' as const, path: `${path}/${pointerKey(k)}` }));
}

/**
 * The JSON patch that removes rdbg's marks: the inject label and the agent
 * annotations on the pod template, the claim annotations on the workload.
 * It starts with a test of the resourceVersion, so a concurrent change makes
 * it fail instead of removing the wrong thing. Empty when there is nothing to remove.
 */
export function unmarkPatch(w: MarkedWorkload): JsonPatchOp[] {
  const tmpl = w.spec?.template?.metadata;
  const labels = tmpl?.labels;
  const ops: JsonPatchOp[] = [
    // only rdbg's value of the label is rdbg's mark
    ...(labels?.[INJECT_LABEL] === INJECT_VALUE ? [{ op: 'remove' as const, path: `/spec/template/metadata/labels/${pointerKey(INJECT_LABEL)}` }] : []),
    ...removeKeys('/spec/template/metadata/annotations', tmpl?.annotations, [AGENT_PORT_ANNOTATION, WORKLOAD_ANNOTATION]),
    ...removeKeys('/metadata/annotations', w.metadata?.annotations, claimKeys(w)),
  ];
  if (!ops.length) return [];
  return [{ op: 'test', path: '/metadata/resourceVersion', value: w.metadata?.resourceVersion }, ...ops];
}
