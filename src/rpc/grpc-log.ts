import * as grpc from '@grpc/grpc-js';
import { format } from 'node:util';
import type { Logger } from '../core/log';

/**
 * grpc-js writes its own errors to stderr ("E No address added out of total 1
 * resolved"), beside the one sentence rdbg says about the same failure: they
 * go to the process's log instead, at debug level (RDBG_LOG_LEVEL=debug).
 */
export function routeGrpcLogs(log: Logger): void {
  grpc.setLogger({ error: (...args: unknown[]) => log.debug(`grpc-js: ${format(...args)}`) });
}
