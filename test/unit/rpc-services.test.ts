// The gRPC services as src/rpc/services.ts builds them from the descriptors
// compiled at build time: every method of every service encodes and decodes
// exactly as proto-loader's loadSync of the .proto files does (the loader
// whose output the generated types in src/gen describe), for random messages
// of every request and response type.
import t from 'tap';
import fc from 'fast-check';
import * as protoLoader from '@grpc/proto-loader';
import { Root, type Type } from 'protobufjs';
import { join } from 'node:path';
import { camelName, daemonPackage, managerPackage } from '../../src/rpc/services';
import { packageRoot } from '../../src/core/version';

type Def = Record<string, { requestSerialize(v: object): Buffer; requestDeserialize(b: Buffer): object; responseSerialize(v: object): Buffer; responseDeserialize(b: Buffer): object; originalName?: string }>;

const protoDir = join(packageRoot(), 'proto');
const reference = protoLoader.loadSync(['rdbg/v1/manager.proto', 'rdbg/v1/daemon.proto'], {
  keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true, includeDirs: [protoDir],
}) as unknown as Record<string, Def>;
const types = new Root();
types.resolvePath = (_o, target) => join(protoDir, target);
types.loadSync(['rdbg/v1/manager.proto', 'rdbg/v1/daemon.proto'], { keepCase: true });
types.resolveAll();

const scalar: Record<string, fc.Arbitrary<unknown>> = {
  string: fc.string({ maxLength: 12 }),
  bool: fc.boolean(),
  bytes: fc.uint8Array({ maxLength: 8 }).map((b) => Buffer.from(b)),
  double: fc.double({ noNaN: true }),
  float: fc.float({ noNaN: true }).map((f) => Math.fround(f)),
  int32: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
  uint32: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
  int64: fc.integer({ min: Number.MIN_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER }),
  uint64: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
};

/** Random objects of a message type, as a handler would write them (some fields left out). */
function arbitrary(type: Type, depth = 0): fc.Arbitrary<Record<string, unknown>> {
  const fields: Record<string, fc.Arbitrary<unknown>> = {};
  for (const f of type.fieldsArray) {
    f.resolve();
    const one = (): fc.Arbitrary<unknown> => (f.resolvedType ? (depth > 2 ? fc.constant({}) : arbitrary(f.resolvedType as Type, depth + 1)) : scalar[f.type]);
    if (!f.resolvedType && !scalar[f.type]) throw new Error(`no arbitrary for ${type.name}.${f.name} (${f.type})`);
    if (f.map) fields[f.name] = fc.dictionary(fc.string({ minLength: 1, maxLength: 6 }), one(), { maxKeys: 3 });
    else if (f.repeated) fields[f.name] = fc.array(one(), { maxLength: 3 });
    else fields[f.name] = one();
  }
  return fc.record(fields, { requiredKeys: [] });
}

const services: [string, Def][] = [
  ['rdbg.v1.Manager', (managerPackage().Manager as unknown as { service: Def }).service],
  ['rdbg.v1.UserDaemon', (daemonPackage().UserDaemon as unknown as { service: Def }).service],
  ['rdbg.v1.RootDaemon', (daemonPackage().RootDaemon as unknown as { service: Def }).service],
];

for (const [name, ours] of services) {
  t.test(name, async (t) => {
    const ref = reference[name];
    t.same(Object.keys(ours).sort(), Object.keys(ref).sort(), 'the same methods');
    for (const method of Object.keys(ref)) {
      t.equal(ours[method].originalName, ref[method].originalName, `${method}: the same client name (${ref[method].originalName})`);
      t.equal(camelName(method), ref[method].originalName);
      const m = types.lookupService(name).methods[method];
      for (const [side, typeName] of [['request', m.requestType], ['response', m.responseType]] as const) {
        const type = types.lookupType(m.parent!.parent!.fullName.slice(1) + '.' + typeName);
        const ser = side === 'request' ? 'requestSerialize' : 'responseSerialize';
        const de = side === 'request' ? 'requestDeserialize' : 'responseDeserialize';
        fc.assert(
          fc.property(arbitrary(type), (msg) => {
            const bytes = ours[method][ser](msg);
            if (!Buffer.isBuffer(bytes)) throw new Error(`${method} ${side}: not a Buffer`);
            if (!bytes.equals(ref[method][ser](msg))) throw new Error(`${method} ${side}: other bytes for ${JSON.stringify(msg)}`);
            const back = ours[method][de](bytes);
            if (JSON.stringify(back) !== JSON.stringify(ref[method][de](bytes))) throw new Error(`${method} ${side}: decoded differently: ${JSON.stringify(back)}`);
          }),
          { numRuns: 50 },
        );
      }
    }
    t.end();
  });
}

t.test('an array is no message', async (t) => {
  const status = (daemonPackage().UserDaemon as unknown as { service: Def }).service.Status;
  t.throws(() => status.responseSerialize([] as unknown as object), /cannot serialize an array/);
});
