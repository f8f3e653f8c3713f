import { errorMessage } from '../src/core/errors';
import { logger } from '../src/core/log';
import { compileRule, isGlobal, type CompiledRule } from '../src/intercept/rules';
import type { InterceptInfo__Output } from '../src/gen/rdbg/v1/InterceptInfo';
import type { InterceptSpec__Output } from '../src/gen/rdbg/v1/InterceptSpec';

const log = logger('agent.intercepts');

export type Headers = Record<string, string | string[] | undefined>;

/** One intercept that applies to this agent's port, ready for matching. */
export interface ActiveIntercept {
  id: string;
  owner: string;
  workload: string;
  spec: InterceptSpec__Output;
  rule: CompiledRule;
  global: boolean;
  mirror: boolean;
  /** Where the owner's laptop sends it, for messages: host:port. */
  target: string;
}

/**
 * The intercepts of the latest snapshot that apply to this agent's port
 * (spec.port equal to the app port or the listen port), and the routing
 * decisions made from them.
 */
export class InterceptTable {
  private diverts: ActiveIntercept[] = [];
  private mirrors: ActiveIntercept[] = [];
  private byId = new Map<string, ActiveIntercept>();

  constructor(private ports: number[]) {}

  setPorts(ports: number[]): void {
    this.ports = ports;
  }

  /** Replace the table; returns the ids that are gone. */
  update(list: InterceptInfo__Output[]): string[] {
    const next = new Map<string, ActiveIntercept>();
    for (const info of list) {
      const spec = info.spec;
      if (!spec || !this.ports.includes(spec.port)) continue;
      const prev = this.byId.get(info.id);
      if (prev && JSON.stringify(prev.spec) === JSON.stringify(spec)) {
        next.set(info.id, prev);
        continue;
      }
      let rule: CompiledRule;
      try {
        rule = compileRule(spec);
      } catch (err) {
        log.warn('ignoring an intercept with a bad rule', { intercept: info.id, err: errorMessage(err) });
        continue;
      }
      next.set(info.id, {
        id: info.id,
        owner: info.owner,
        workload: spec.workload,
        spec,
        rule,
        global: isGlobal(spec),
        mirror: spec.mirror,
        target: `${spec.local_host || '127.0.0.1'}:${spec.local_port}`,
      });
    }
    const gone = [...this.byId.keys()].filter((id) => !next.has(id) || next.get(id) !== this.byId.get(id));
    this.byId = next;
    const all = [...next.values()];
    // The most specific rule wins when several header/path rules match one request.
    this.diverts = all.filter((i) => !i.mirror).sort((a, b) => specificity(b.spec) - specificity(a.spec));
    this.mirrors = all.filter((i) => i.mirror);
    return gone;
  }

  get size(): number {
    return this.byId.size;
  }

  get(id: string): ActiveIntercept | undefined {
    return this.byId.get(id);
  }

  /** A global (whole-port) intercept, which diverts at the TCP level. */
  globalDivert(): ActiveIntercept | undefined {
    return this.diverts.find((i) => i.global);
  }

  globalMirrors(): ActiveIntercept[] {
    return this.mirrors.filter((i) => i.global);
  }

  /** The intercept that takes this request, if any. */
  divertFor(headers: Headers, path: string): ActiveIntercept | undefined {
    if (this.diverts.length === 0) return undefined;
    return this.diverts.find((i) => i.rule.matches(headers, path));
  }

  /** The mirror intercepts that want a copy of this request. */
  mirrorsFor(headers: Headers, path: string): ActiveIntercept[] {
    if (this.mirrors.length === 0) return this.mirrors;
    return this.mirrors.filter((i) => i.rule.matches(headers, path));
  }
}

function specificity(spec: InterceptSpec__Output): number {
  return (spec.headers?.length ?? 0) * 10_000 + (spec.path_prefix?.length ?? 0);
}
