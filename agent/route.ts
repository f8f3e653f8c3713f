import type { ActiveIntercept, Headers, InterceptTable } from './intercept-table';

/** Where one request goes: the app, or the laptop of the intercept that matched. */
export interface Route {
  divert?: ActiveIntercept;
  /** Intercepts that get a copy; their answers are discarded. */
  mirrors: ActiveIntercept[];
  probe: boolean;
}

const NONE: ActiveIntercept[] = [];

/** kubelet's HTTP probes always reach the app, whatever is intercepted. */
export function isKubeProbe(headers: Headers): boolean {
  const ua = headers['user-agent'];
  return typeof ua === 'string' && ua.startsWith('kube-probe/');
}

export function routeRequest(table: InterceptTable, headers: Headers, path: string): Route {
  if (table.size === 0) return { mirrors: NONE, probe: false };
  if (isKubeProbe(headers)) return { mirrors: NONE, probe: true };
  return { divert: table.divertFor(headers, path), mirrors: table.mirrorsFor(headers, path), probe: false };
}
