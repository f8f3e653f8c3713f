import { isIP } from 'node:net';
import { unmapIPv4 } from '../../src/core/address';

/** The address part of a gRPC peer string (`ipv4:127.0.0.1:5000`, `ipv6:[::1]:5000`). */
export function peerAddress(peer: string): string {
  const p = peer.replace(/^(ipv4|ipv6|unix):/, '');
  const v6 = /^\[([^\]]+)\]/.exec(p);
  if (v6) return v6[1];
  const i = p.lastIndexOf(':');
  return i > 0 && isIP(p.slice(0, i)) ? p.slice(0, i) : p;
}

/**
 * Whether an address is this host's own loopback. In the manager's pod that is
 * the kubelet's port-forward (it dials localhost inside the pod's network
 * namespace), which Kubernetes RBAC guards with pods/portforward.
 */
export function isLoopback(address: string | undefined): boolean {
  if (!address) return false;
  const a = unmapIPv4(address.toLowerCase());
  return a === '::1' || (isIP(a) === 4 && a.startsWith('127.'));
}

export const CONNECT_THROUGH_APISERVER =
  'the traffic manager runs in Kubernetes mode: clients must connect through the apiserver (port-forward), ' +
  'i.e. "rdbg connect" without --manager; a direct address is not allowed';
