import { loadKube } from '../../kube/config';
import { removeAgent } from '../../kube/injection';
import { describe, Workloads } from '../../kube/workloads';
import { progress, say } from '../output';

/**
 * `rdbg uninstall WORKLOAD`: takes the agent out of one workload. Its pod
 * template is restored exactly as it was (the marks and claims go), and its
 * pods restart once without the agent. Intercepts on it end with the agent.
 */
export async function uninstallWorkload(name: string, opts: { namespace?: string; kubeconfig?: string; kubeconfigList?: string; context?: string }): Promise<void> {
  const kube = loadKube({ kubeconfig: opts.kubeconfig, kubeconfigList: opts.kubeconfigList, context: opts.context, namespace: opts.namespace });
  const ws = new Workloads(kube.kc);
  const ns = opts.namespace ?? kube.namespace;
  const w = await ws.find(name, ns);
  const changed = await removeAgent(ws, w, progress);
  say(changed ? `The rdbg agent is out of ${describe(w)}; its pods run as before.` : `${describe(w)} has no rdbg agent; nothing to do.`);
}
