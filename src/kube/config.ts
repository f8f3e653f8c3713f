/**
 * Kubeconfig loading the way kubectl does it: --kubeconfig, else the files in
 * KUBECONFIG (merged, missing ones skipped), else ~/.kube/config, else the
 * in-cluster service account. --context and --namespace override the file.
 * Exec credential plugins and client certificates are handled by
 * @kubernetes/client-node when a request is authenticated (see apiserver.ts).
 */
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { Codes, RdbgError, errorMessage } from '../core/errors';
import { keepConnections } from './keep-alive';

export interface KubeOptions {
  /** a kubeconfig file (kubectl's --kubeconfig); wins over KUBECONFIG */
  kubeconfig?: string;
  /** a context name (kubectl's --context) */
  context?: string;
  /** a namespace (kubectl's --namespace) */
  namespace?: string;
  /** the KUBECONFIG variable (from the process's configuration): a list of files */
  kubeconfigList?: string;
}

/** A loaded kubeconfig with its context resolved. */
export interface Kube {
  kc: k8s.KubeConfig;
  context: string;
  /** --namespace, else the context's namespace, else "default" */
  namespace: string;
  /** the apiserver URL, e.g. https://198.51.100.1:6443 */
  server: string;
}

const SERVICE_ACCOUNT_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token';

/** The kubeconfig files kubectl would read, in order (the first one names the current context). */
export function kubeconfigFiles(opts: KubeOptions = {}): string[] {
  if (opts.kubeconfig) {
    if (!existsSync(opts.kubeconfig)) {
      throw new RdbgError(Codes.KUBECONFIG, `kubeconfig ${opts.kubeconfig} does not exist`, 'check the --kubeconfig path');
    }
    return [opts.kubeconfig];
  }
  if (opts.kubeconfigList) return opts.kubeconfigList.split(delimiter).filter((f) => f && existsSync(f));
  const home = join(homedir(), '.kube', 'config');
  return existsSync(home) ? [home] : [];
}

function readFiles(files: string[]): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  files.forEach((file, i) => {
    try {
      if (i === 0) {
        kc.loadFromFile(file);
      } else {
        const more = new k8s.KubeConfig();
        more.loadFromFile(file);
        kc.mergeConfig(more, true);
      }
    } catch (err) {
      throw new RdbgError(Codes.KUBECONFIG, `cannot read kubeconfig ${file}: ${errorMessage(err)}`, undefined, { cause: err });
    }
  });
  return kc;
}

/** Loads the kubeconfig and resolves context, namespace and apiserver URL; API calls keep their connections (keep-alive.ts). Makes no request. */
export function loadKube(opts: KubeOptions = {}): Kube {
  const files = kubeconfigFiles(opts);
  let kc: k8s.KubeConfig;
  if (files.length > 0) {
    kc = readFiles(files);
  } else if (existsSync(SERVICE_ACCOUNT_TOKEN)) {
    kc = new k8s.KubeConfig();
    kc.loadFromCluster();
  } else {
    const where = opts.kubeconfigList ? 'KUBECONFIG names no existing file' : 'no ~/.kube/config';
    throw new RdbgError(Codes.KUBECONFIG, `no kubeconfig found (${where})`,
      'pass --kubeconfig FILE, set KUBECONFIG, or check that `kubectl get pods` works');
  }

  if (opts.context) {
    if (!kc.getContextObject(opts.context)) {
      const known = kc.getContexts().map((c) => c.name).join(', ') || 'none';
      throw new RdbgError(Codes.KUBECONFIG, `context "${opts.context}" is not in the kubeconfig (contexts: ${known})`,
        'list them with `kubectl config get-contexts`');
    }
    kc.setCurrentContext(opts.context);
  }
  const context = kc.getCurrentContext();
  const ctx = context ? kc.getContextObject(context) : null;
  if (!ctx) {
    throw new RdbgError(Codes.KUBECONFIG, 'the kubeconfig has no current context',
      'pass --context NAME or run `kubectl config use-context NAME`');
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster?.server) {
    throw new RdbgError(Codes.KUBECONFIG, `context "${context}" names cluster "${ctx.cluster}", which is not in the kubeconfig`);
  }
  return { kc: keepConnections(kc), context, namespace: opts.namespace || ctx.namespace || 'default', server: cluster.server.replace(/\/+$/, '') };
}
