// The names docs/kubernetes.md fixes, in one place for the CLI, the daemons and the manager.
export const MANAGER_NAME = 'rdbg-manager';
export const DEFAULT_MANAGER_NAMESPACE = 'rdbg';
export const MANAGER_GRPC_PORT = 8081;
export const MANAGER_DATA_PORT = 8082;
export const MANAGER_WEBHOOK_PORT = 8443;
export const MANAGED_BY = { 'app.kubernetes.io/managed-by': 'rdbg' } as const;
/** The manager pods: what the port-forward transport looks for. */
export const MANAGER_SELECTOR = 'app.kubernetes.io/name=rdbg,app.kubernetes.io/component=manager';
