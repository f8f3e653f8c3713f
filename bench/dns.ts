/**
 * DNS latency through the laptop's rdbg resolver, beside its references, in
 * the same run: a cluster name through rdbg (-> gRPC -> manager -> cluster
 * dnsmasq) vs the same kind of name asked of the cluster's dnsmasq directly
 * over the veth; a non-cluster name relayed by rdbg vs asked of the laptop's
 * resolver directly. Every query is a fresh name (no cache answers), except
 * in the cached row (the same short name again and again).
 * Runs in its own namespaces (test/sandbox/dns-fixture); ~10 s.
 */
import type { BenchRow } from './row';
import { DNS, DNS_RUNNER, DnsSandbox } from '../test/sandbox/dns-fixture';

export type DnsBenchRow = BenchRow;

export interface DnsBenchResult {
  rows: DnsBenchRow[];
  raw: Record<string, number[]>;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

export async function benchDns(opts: { rounds?: number; queries?: number } = {}): Promise<DnsBenchResult> {
  const rounds = opts.rounds ?? 3;
  const n = opts.queries ?? 200;
  const raw: Record<string, number[]> = {};
  const sb = await DnsSandbox.create();
  try {
    const { proc } = await sb.startResolver([DNS.rdbg], [DNS.original]);
    const run = async (key: string, server: string, name: string): Promise<void> => {
      const r = await sb.laptop.run('node', [DNS_RUNNER, 'bench', server, '53', name, String(n)], 60_000);
      const out = JSON.parse(r.stdout.trim() || '{}') as { median_us?: number; ok?: number };
      if (r.code !== 0 || out.median_us === undefined || out.ok !== n) throw new Error(`dns bench ${key}: ${r.stderr || r.stdout}`);
      (raw[key] ??= []).push(out.median_us);
    };
    for (let i = 0; i < rounds; i++) {
      await run('cluster_rdbg', DNS.rdbg, 'q%d.bench.svc.cluster.local');
      await run('cluster_direct', DNS.clusterVeth, 'q%d.bench.svc.cluster.local');
      await run('cluster_rdbg_cached', DNS.rdbg, 'echo.default');
      await run('other_rdbg', DNS.rdbg, 'q%d.www.example.test');
      await run('other_direct', DNS.original, 'q%d.www.example.test');
    }
    await sb.stopResolver(proc);
  } finally {
    sb.destroy();
  }
  const m = (k: string): number => median(raw[k]);
  const rows: DnsBenchRow[] = [
    {
      metric: 'DNS, cluster name, median (us)', path: 'rdbg resolver -> manager', value: m('cluster_rdbg'), reference: m('cluster_direct'),
      vs: `+${(m('cluster_rdbg') - m('cluster_direct')).toFixed(0)} us vs the cluster DNS direct`, goal: '< 2000 us', pass: m('cluster_rdbg') < 2000,
    },
    {
      metric: 'DNS, cluster name answered from the cache (TTL 5 s), median (us)', path: 'rdbg resolver', value: m('cluster_rdbg_cached'),
      reference: m('cluster_direct'), vs: `+${(m('cluster_rdbg_cached') - m('cluster_direct')).toFixed(0)} us vs the cluster DNS direct`,
      goal: '< 500 us', pass: m('cluster_rdbg_cached') < 500,
    },
    {
      metric: 'DNS, other name, median (us)', path: 'rdbg resolver -> original', value: m('other_rdbg'), reference: m('other_direct'),
      vs: `+${(m('other_rdbg') - m('other_direct')).toFixed(0)} us vs the original resolver`, goal: '< +500 us', pass: m('other_rdbg') - m('other_direct') < 500,
    },
  ];
  return { rows, raw };
}

if (require.main === module) {
  const start = Date.now();
  benchDns().then(
    (r) => process.stdout.write(JSON.stringify({ ...r, seconds: (Date.now() - start) / 1000 }, null, 1) + '\n'),
    (err) => {
      process.stderr.write(`${(err as Error).stack}\n`);
      process.exit(1);
    },
  );
}
