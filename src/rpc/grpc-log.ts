import * as grpc from '@grpc/grpc-js';
import { format } from 'node:util';
import { logger } from '../core/log';

const log = logger('grpc');

/**
 * grpc-js writes its own errors to stderr ("E No address added out of total 1
 * resolved"), beside the one sentence rdbg says about the same failure: they
 * go to rdbg's log instead, at debug level (RDBG_LOG_LEVEL=debug shows them).
 */
export function routeGrpcLogs(): void {
  grpc.setLogger({ error: (...args: unknown[]) => log.debug(format(...args)) });
}
