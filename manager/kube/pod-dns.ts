import { readFileSync } from 'node:fs';

/** What a pod's resolv.conf says about the cluster. */
export interface PodDNS {
  /** e.g. cluster.local; undefined when the search path has no `svc.<domain>` entry */
  domain?: string;
  /** the namespace of the pod whose resolv.conf this is (`<ns>.svc.<domain>`) */
  namespace?: string;
  /** nameserver lines (the cluster DNS service, e.g. 10.96.0.10) */
  nameservers: string[];
}

/**
 * Parses the resolv.conf the kubelet writes into a pod:
 * `search <ns>.svc.<domain> svc.<domain> <domain>` and the cluster DNS nameserver.
 */
export function parsePodResolvConf(text: string): PodDNS {
  const nameservers: string[] = [];
  let search: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim();
    const [key, ...rest] = line.split(/\s+/);
    if (key === 'nameserver' && rest[0]) nameservers.push(rest[0]);
    else if (key === 'search' || key === 'domain') search = rest.map((s) => s.replace(/\.$/, '').toLowerCase());
  }
  const svc = search.find((s) => s.startsWith('svc.') && s.length > 4);
  const domain = svc?.slice(4);
  const nsEntry = domain ? search.find((s) => s.endsWith(`.svc.${domain}`)) : undefined;
  return { domain, namespace: nsEntry?.slice(0, -`.svc.${domain}`.length), nameservers };
}

export function readPodResolvConf(file = '/etc/resolv.conf'): PodDNS {
  try {
    return parsePodResolvConf(readFileSync(file, 'utf8'));
  } catch {
    return { nameservers: [] };
  }
}

/** The namespace of the pod this process runs in (in-cluster), from its service account. */
export function podNamespace(file = '/var/run/secrets/kubernetes.io/serviceaccount/namespace'): string | undefined {
  try {
    return readFileSync(file, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}
