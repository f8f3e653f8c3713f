import * as k8s from '@kubernetes/client-node';
import { logger } from '../../src/core/log';
import { apiReason, apiStatus } from './api';

const log = logger('manager.kube');

const MIN_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 30_000;

export interface KubeObject {
  metadata?: { name?: string; namespace?: string; uid?: string; resourceVersion?: string; deletionTimestamp?: Date | string };
}

export interface ListResult<T> {
  items: T[];
  metadata?: { resourceVersion?: string };
}

/**
 * A list then a watch of one kind of object, kept in `items` (by uid). The
 * watch resumes from the last resourceVersion it saw after a dropped
 * connection (an apiserver restart), and starts over with a fresh list when
 * the apiserver says that version is gone (410) or when it cannot resume.
 * `onChange` runs after every change of the set.
 */
export class ListWatch<T extends KubeObject> {
  readonly items = new Map<string, T>();
  private rv = '';
  private controller?: AbortController;
  private generation = 0;
  private stopped = false;
  private backoff = MIN_BACKOFF_MS;
  private retry?: NodeJS.Timeout;

  constructor(
    private readonly kc: k8s.KubeConfig,
    readonly what: string,
    private readonly path: string,
    private readonly list: () => Promise<ListResult<T>>,
    private readonly onChange: () => void,
  ) {}

  /** The first list: its failure is the caller's to handle (e.g. an API the cluster does not serve). */
  async start(): Promise<void> {
    await this.relist();
    this.watch();
  }

  stop(): void {
    this.stopped = true;
    this.generation++;
    clearTimeout(this.retry);
    this.controller?.abort();
  }

  private async relist(): Promise<void> {
    const r = await this.list();
    this.items.clear();
    for (const o of r.items) this.items.set(key(o), o);
    this.rv = r.metadata?.resourceVersion ?? '';
    log.debug('listed', { what: this.what, count: this.items.size, resourceVersion: this.rv });
    this.onChange();
  }

  private later(fn: () => void): void {
    if (this.stopped) return;
    const delay = this.backoff;
    this.backoff = Math.min(MAX_BACKOFF_MS, this.backoff * 2);
    this.retry = setTimeout(fn, delay);
    this.retry.unref();
  }

  private relistThenWatch(): void {
    this.relist().then(
      () => {
        log.info('watch re-established', { what: this.what, count: this.items.size });
        this.watch();
      },
      (err) => {
        log.warn('list failed; retrying', { what: this.what, err: apiReason(err), retryMs: this.backoff });
        this.later(() => this.relistThenWatch());
      },
    );
  }

  private watch(): void {
    if (this.stopped) return;
    const gen = ++this.generation;
    let gone = false;
    const onEvent = (type: string, obj: T & { code?: number; message?: string }): void => {
      if (gen !== this.generation) return;
      if (type === 'ERROR') {
        // A Status: 410 Gone means our resourceVersion is too old to resume from.
        gone = obj.code === 410;
        log.info('watch ended by the apiserver', { what: this.what, code: obj.code, message: obj.message });
        this.controller?.abort();
        return;
      }
      if (obj.metadata?.resourceVersion) this.rv = obj.metadata.resourceVersion;
      if (type === 'BOOKMARK') return;
      if (type === 'DELETED') this.items.delete(key(obj));
      else if (type === 'ADDED' || type === 'MODIFIED') this.items.set(key(obj), obj);
      else return;
      this.backoff = MIN_BACKOFF_MS;
      this.onChange();
    };
    const onDone = (err: unknown): void => {
      if (gen !== this.generation || this.stopped) return;
      this.generation++;
      if (gone || apiStatus(err) === 410) {
        this.backoff = MIN_BACKOFF_MS;
        this.relistThenWatch();
      } else if (err && !isAbort(err)) {
        // The apiserver went away (restart, network): resume from where we were once it is back.
        log.warn('watch broke; resuming', { what: this.what, err: apiReason(err), retryMs: this.backoff });
        this.later(() => this.watch());
      } else {
        // A normal server-side timeout: resume at once.
        this.watch();
      }
    };
    const params = { allowWatchBookmarks: true, resourceVersion: this.rv || undefined };
    new k8s.Watch(this.kc).watch(this.path, params, onEvent, onDone).then(
      (c) => {
        if (gen === this.generation) this.controller = c;
        else c.abort();
      },
      (err) => onDone(err ?? new Error('watch failed')),
    );
  }
}

function key(o: KubeObject): string {
  return o.metadata?.uid ?? `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
}

function isAbort(err: unknown): boolean {
  return (err as { name?: string })?.name === 'AbortError';
}
