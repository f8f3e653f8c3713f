import * as grpc from '@grpc/grpc-js';
import type * as protoLoader from '@grpc/proto-loader';
import { Root, type Type } from 'protobufjs/light';
import { DESCRIPTORS } from '../gen/descriptors';
import type { ProtoGrpcType as ManagerProto } from '../gen/manager';
import type { ProtoGrpcType as DaemonProto } from '../gen/daemon';

/** The options the generated types in src/gen were made with (Makefile `gen`): messages as the handlers see them. */
const TO_OBJECT = { longs: Number, enums: String, defaults: true, oneofs: true };

/** A method's name as proto-loader gives it to clients beside the proto name (lodash's camelCase: LookupDNS -> lookupDns). */
export function camelName(name: string): string {
  const words = name.match(/[A-Z]{2,}(?=[A-Z][a-z]|\d|$)|[A-Z]?[a-z]+|[A-Z]+|\d+/g) ?? [name];
  return words.map((w, i) => (i === 0 ? w.toLowerCase() : w[0].toUpperCase() + w.slice(1).toLowerCase())).join('');
}

const codec = (type: Type) => ({
  serialize: (value: object): Buffer => {
    if (Array.isArray(value)) throw new Error(`cannot serialize an array as ${type.name}`);
    const bytes = type.encode(type.fromObject(value)).finish();
    return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  },
  deserialize: (bytes: Buffer): object => type.toObject(type.decode(bytes), TO_OBJECT),
});

/**
 * The services of the wire protocol, built from the descriptors that
 * scripts/gen-descriptors.js wrote at build time: what proto-loader's
 * loadSync gives (the same serialization, through protobufjs), without
 * parsing .proto text or building descriptor protos at run time.
 */
function load<T>(services: string[]): T {
  if (!root) {
    root = Root.fromJSON(DESCRIPTORS);
    root.resolveAll();
  }
  const wire = root;
  const def: Record<string, protoLoader.ServiceDefinition> = {};
  for (const name of services) {
    const service = wire.lookupService(name);
    const methods: protoLoader.ServiceDefinition = {};
    for (const m of service.methodsArray) {
      const req = codec(m.resolvedRequestType!);
      const res = codec(m.resolvedResponseType!);
      methods[m.name] = {
        path: `/${name}/${m.name}`,
        requestStream: Boolean(m.requestStream),
        responseStream: Boolean(m.responseStream),
        requestSerialize: req.serialize,
        requestDeserialize: req.deserialize,
        responseSerialize: res.serialize,
        responseDeserialize: res.deserialize,
        originalName: camelName(m.name),
      } as protoLoader.MethodDefinition<object, object>;
    }
    def[name] = methods;
  }
  return grpc.loadPackageDefinition(def as grpc.GrpcObject & protoLoader.PackageDefinition) as unknown as T;
}

let root: Root | undefined;


let managerProto: ManagerProto | undefined;
let daemonProto: DaemonProto | undefined;

export function managerPackage(): ManagerProto['rdbg']['v1'] {
  managerProto ??= load<ManagerProto>(['rdbg.v1.Manager']);
  return managerProto.rdbg.v1;
}

export function daemonPackage(): DaemonProto['rdbg']['v1'] {
  daemonProto ??= load<DaemonProto>(['rdbg.v1.UserDaemon', 'rdbg.v1.RootDaemon']);
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
