/**
 * Runs the laptop's DnsServer as its own process (inside a test namespace),
 * wired to a real manager's LookupDNS over gRPC, the way the root daemon does.
 *
 *   node dns-runner.js serve '{"listen":[{"address":..,"port":53}],"manager":"H:P","upstreams":[..],"namespace":"default"}'
 *     prints `READY {"listen":..,"cluster":..}`; on SIGTERM prints `COUNTERS {..}` and exits.
 *   node dns-runner.js probe HOST PORT HEX...
 *     sends each payload over UDP, prints one JSON array: the answer's hex or null (none within 300 ms).
 *   node dns-runner.js bench HOST PORT NAME N
 *     N sequential A queries (after 20 unmeasured ones), `%d` in NAME replaced by a
 *     fresh number each time (so no cache answers); prints {"median_us":..,"p90_us":..,"ok":..}.
 */
import * as dgram from 'node:dgram';
import * as grpc from '@grpc/grpc-js';
import * as dnsPacket from 'dns-packet';
import { DnsServer } from '../../daemon/root/dns/dns-server';
import { managerLookup } from '../../daemon/root/dns/manager-lookup';
import { watchResolvConf } from '../../daemon/root/dns/resolv-conf-watch';
import { Journal } from '../../daemon/root/journal';
import { CHANNEL_OPTIONS, managerPackage, type ManagerClient } from '../../src/rpc/services';
import { PROTOCOL, VERSION } from '../../src/core/version';
import type { ClusterInfo__Output } from '../../src/gen/rdbg/v1/ClusterInfo';
import type { SessionInfo__Output } from '../../src/gen/rdbg/v1/SessionInfo';

interface ServeArgs {
  listen: { address: string; port: number }[];
  manager: string;
  upstreams: string[];
  namespace: string;
  namespaces?: string[];
  /** Keep the laptop's resolv.conf pointed at us when someone rewrites it (as the root daemon does). */
  watch?: { path: string; journal: string; nameserver: string; search: string[] };
}

function unary<T>(fn: (cb: (err: grpc.ServiceError | null, res?: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((err, res) => (err ? reject(err) : resolve(res!))));
}

async function serve(args: ServeArgs): Promise<void> {
  const Manager = managerPackage().Manager;
  const client = new Manager(args.manager, grpc.credentials.createInsecure(), CHANNEL_OPTIONS) as unknown as ManagerClient;
  const session = await unary<SessionInfo__Output>((cb) =>
    client.Arrive({ client_version: VERSION, protocol: PROTOCOL, user: 'dns-runner', namespace: args.namespace }, { deadline: Date.now() + 10_000 }, cb),
  );
  const cluster: Partial<ClusterInfo__Output> = session.cluster ?? {};
  const namespaces = [...new Set([...(cluster.namespaces ?? []), ...(args.namespaces ?? [])])];
  const heartbeat = setInterval(() => client.Heartbeat({ session_id: session.session_id }, () => undefined), 3000);
  const server = new DnsServer({
    listen: args.listen,
    clusterDomain: cluster.cluster_domain || 'cluster.local',
    namespaces: () => namespaces,
    reverseCidrs: [...(cluster.service_subnets ?? []), ...(cluster.pod_subnets ?? [])],
    lookupCluster: managerLookup(client, () => session.session_id),
    upstreams: args.upstreams,
  });
  const listen = await server.start();
  const watcher = args.watch
    ? watchResolvConf(args.watch.path, { nameserver: args.watch.nameserver, search: args.watch.search }, new Journal(args.watch.journal), {
        intervalMs: 200,
        onUpstreams: (ups) => {
          server.setUpstreams(ups);
          process.stdout.write(`UPSTREAMS ${JSON.stringify(ups)}\n`);
        },
      })
    : undefined;
  process.stdout.write(`READY ${JSON.stringify({ listen, cluster, namespaces })}\n`);
  process.once('SIGTERM', () => {
    clearInterval(heartbeat);
    watcher?.stop();
    process.stdout.write(`COUNTERS ${JSON.stringify(server.counters())}\n`);
    void server.stop().then(() => {
      client.close();
      process.exit(0);
    });
  });
}

function ask(sock: dgram.Socket, host: string, port: number, payload: Buffer, timeoutMs: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      sock.removeListener('message', onMsg);
      resolve(undefined);
    }, timeoutMs);
    const onMsg = (m: Buffer): void => {
      clearTimeout(timer);
      sock.removeListener('message', onMsg);
      resolve(m);
    };
    sock.on('message', onMsg);
    sock.send(payload, port, host);
  });
}

async function probe(host: string, port: number, payloads: string[]): Promise<void> {
  const sock = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
  const out: (string | null)[] = [];
  for (const hex of payloads) out.push((await ask(sock, host, port, Buffer.from(hex, 'hex'), 300))?.toString('hex') ?? null);
  sock.close();
  process.stdout.write(JSON.stringify(out) + '\n');
}

async function bench(host: string, port: number, name: string, n: number): Promise<void> {
  const sock = dgram.createSocket('udp4');
  const times: number[] = [];
  let ok = 0;
  const WARMUP = 20;
  const run = Math.floor(Math.random() * 1e6);
  for (let i = 0; i < n + WARMUP; i++) {
    const q = dnsPacket.encode({
      id: i & 0xffff, type: 'query', flags: dnsPacket.RECURSION_DESIRED,
      questions: [{ name: name.replace('%d', `${run}x${i}`), type: 'A' }],
    });
    const t0 = process.hrtime.bigint();
    const a = await ask(sock, host, port, q, 2000);
    if (i < WARMUP) continue;
    times.push(Number(process.hrtime.bigint() - t0) / 1000);
    if (a && dnsPacket.decode(a).answers?.length) ok++;
  }
  sock.close();
  times.sort((a, b) => a - b);
  process.stdout.write(JSON.stringify({ median_us: times[Math.floor(n / 2)], p90_us: times[Math.floor(n * 0.9)], ok, n }) + '\n');
}

async function main(): Promise<void> {
  const [mode, ...rest] = process.argv.slice(2);
  if (mode === 'serve') return serve(JSON.parse(rest[0]) as ServeArgs);
  if (mode === 'probe') return probe(rest[0], Number(rest[1]), rest.slice(2));
  if (mode === 'bench') return bench(rest[0], Number(rest[1]), rest[2], Number(rest[3]));
  process.stderr.write('usage: dns-runner serve JSON | probe HOST PORT HEX... | bench HOST PORT NAME N\n');
  process.exitCode = 2;
}

main().catch((err) => {
  process.stderr.write(`dns-runner: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
