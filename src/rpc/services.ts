import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { join } from 'node:path';
import { packageRoot } from '../core/version';
import type { ProtoGrpcType as ManagerProto } from '../gen/manager';
import type { ProtoGrpcType as DaemonProto } from '../gen/daemon';

/** The same options the generated types in src/gen were made with (Makefile `gen`). */
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [],
};

function load<T>(file: string): T {
  const root = join(packageRoot(), 'proto');
  const def = protoLoader.loadSync(file, { ...LOADER_OPTIONS, includeDirs: [root] });
  return grpc.loadPackageDefinition(def) as unknown as T;
}

/** The user daemon's answer to an intercept it leaves to the CLI to prepare (daemon.proto, InterceptRequest.resolve). */
export const PREPARE_IN_CLI = 'PREPARE_IN_CLI';

let managerProto: ManagerProto | undefined;
let daemonProto: DaemonProto | undefined;

export function managerPackage(): ManagerProto['rdbg']['v1'] {
  managerProto ??= load<ManagerProto>('rdbg/v1/manager.proto');
  return managerProto.rdbg.v1;
}

export function daemonPackage(): DaemonProto['rdbg']['v1'] {
  daemonProto ??= load<DaemonProto>('rdbg/v1/daemon.proto');
  return daemonProto.rdbg.v1;
}

/**
 * Channel options for the manager link. Big HTTP/2 windows and frames matter
 * for bulk throughput; keepalives detect a dead transport within seconds.
 */
export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.max_receive_message_length': 16 * 1024 * 1024,
  'grpc.max_send_message_length': 16 * 1024 * 1024,
  'grpc-node.flow_control_window': 16 * 1024 * 1024,
  'grpc.http2.max_frame_size': 1024 * 1024,
  'grpc.max_concurrent_streams': 1 << 20,
};

export const SERVER_OPTIONS: grpc.ServerOptions = {
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.http2.min_ping_interval_without_data_ms': 5_000,
  'grpc.max_receive_message_length': 16 * 1024 * 1024,
  'grpc.max_send_message_length': 16 * 1024 * 1024,
  'grpc-node.flow_control_window': 16 * 1024 * 1024,
  'grpc.http2.max_frame_size': 1024 * 1024,
  'grpc.max_concurrent_streams': 1 << 20,
};

export type { ManagerClient } from '../gen/rdbg/v1/Manager';
export type { UserDaemonClient } from '../gen/rdbg/v1/UserDaemon';
