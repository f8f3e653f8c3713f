// What a name's lookup read, kept while Kubernetes says none of it changed:
// the next intercept of that name needs no apiserver round trip to find its
// workload (the switch between two intercepts with the apiserver far away).
//
// Armed in the background after a lookup that read the apiserver: each
// collection the lookup depends on (the Service of that name, the workload,
// the pods of the Service's and of the workload's selectors) is listed for
// its resourceVersion and watched from there; then the lookup runs once more.
// Its answer stands for as long as no watch reports any change (and every
// watch is still open): the state it read is the state at the lists'
// versions, and nothing has moved since. Any event, a watch that ends or
// fails (no watch right, an apiserver restart), and the answer is dropped:
// the next lookup reads again.
import * as k8s from '@kubernetes/client-node';
import { logger } from '../../src/core/log';
import { errorMessage } from '../../src/core/errors';
import { apiVersionOf, type Resolved, type ResolveHint, type Workloads } from '../../src/kube/workloads';

const log = logger('userd.lookup');

interface Collection {
  apiVersion: string;
  kind: string;
  /** the watch path of the collection in the namespace */
  path: string;
  fieldSelector?: string;
  labelSelector?: string;
}

function collections(name: string, hint: ResolveHint): Collection[] {
  const w = hint.workload;
  const ns = w.namespace;
  const pods = (labelSelector: string): Collection => ({ apiVersion: 'v1', kind: 'Pod', path: `/api/v1/namespaces/${ns}/pods`, labelSelector });
  const apiVersion = apiVersionOf(w.kind);
  const out: Collection[] = [
    w.kind === 'Pod'
      ? { apiVersion, kind: 'Pod', path: `/api/v1/namespaces/${ns}/pods`, fieldSelector: `metadata.name=${w.name}` }
      : { apiVersion, kind: w.kind, path: `/apis/${apiVersion}/namespaces/${ns}/${w.kind.toLowerCase()}s`, fieldSelector: `metadata.name=${w.name}` },
  ];
  // A bare name is a Service's first: its coming, going or change decides what the name means.
  if (!name.includes('/')) out.push({ apiVersion: 'v1', kind: 'Service', path: `/api/v1/namespaces/${ns}/services`, fieldSelector: `metadata.name=${name}` });
  if (w.kind !== 'Pod') out.push(pods(hint.podSelector));
  if (hint.serviceSelector && hint.serviceSelector !== hint.podSelector) out.push(pods(hint.serviceSelector));
  return out;
}

export class LookupWatch {
  private answer?: Resolved;
  private stale = false;
  private readonly watches: AbortController[] = [];

  private constructor(readonly name: string) {}

  /** The lookup's answer while nothing it read has changed; undefined before the watch is armed and once it is not fresh. */
  get resolved(): Resolved | undefined {
    return this.stale ? undefined : this.answer;
  }

  /** Starts watching what a lookup of `name` with `hint` reads; `lookup` is that lookup (run once the watches are open). */
  static start(ws: Workloads, name: string, hint: ResolveHint, lookup: () => Promise<Resolved>): LookupWatch {
    const lw = new LookupWatch(name);
    lw.arm(ws, hint, lookup).catch((err: unknown) => {
      log.debug('lookup not watched', { name, err: errorMessage(err) });
      lw.close();
    });
    return lw;
  }

  close(): void {
    this.stale = true;
    this.answer = undefined;
    for (const w of this.watches.splice(0)) w.abort();
  }

  private changed(why: string): void {
    if (this.stale) return;
    log.debug('lookup changed', { name: this.name, why });
    this.close();
  }

  private async arm(ws: Workloads, hint: ResolveHint, lookup: () => Promise<Resolved>): Promise<void> {
    const sets = collections(this.name, hint);
    // One item is enough: what is wanted is the collection's resourceVersion.
    const versions = await Promise.all(
      sets.map((c) => ws.objects.list(c.apiVersion, c.kind, hint.workload.namespace, undefined, undefined, undefined, c.fieldSelector, c.labelSelector, 1)
        .then((l) => l.metadata?.resourceVersion ?? '')),
    );
    if (this.stale) return;
    const watcher = new k8s.Watch(ws.kc);
    await Promise.all(
      sets.map(async (c, i) => {
        if (!versions[i]) throw new Error(`no resourceVersion listing ${c.path}`);
        const ctl = await watcher.watch(
          c.path,
          { resourceVersion: versions[i], allowWatchBookmarks: true, fieldSelector: c.fieldSelector, labelSelector: c.labelSelector },
          (phase) => {
            if (phase !== 'BOOKMARK') this.changed(`${phase} in ${c.path}`);
          },
          (err: unknown) => this.changed(err ? `watch of ${c.path} failed: ${errorMessage(err)}` : `watch of ${c.path} ended`),
        );
        if (this.stale) ctl.abort();
        else this.watches.push(ctl);
      }),
    );
    if (this.stale) return this.close();
    const answer = await lookup();
    // The same chain as the hint's, or the watches are on the wrong objects.
    const same = answer.hint.workload.kind === hint.workload.kind && answer.hint.workload.name === hint.workload.name &&
      answer.hint.podSelector === hint.podSelector && answer.hint.serviceSelector === hint.serviceSelector;
    if (!same) return this.changed('the lookup found another workload');
    if (!this.stale) this.answer = answer;
  }
}
