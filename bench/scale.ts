/**
 * The scale tier's long form and its figures for `make bench`: one standalone
 * manager, 200 sessions each with a header intercept on one of 20 workloads
 * (an agent each), all from the load client (test/helpers/load-client.ts),
 * for SCALE_MINUTES (10 by default). Reports the manager's resident memory
 * and CPU per session beside its own idle figures (measured first, in the
 * same run), and whether every heartbeat was held and every lease kept.
 * Prints a Markdown table and writes bench/results/scale.{json,md}.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runScale } from '../test/helpers/scale-run';
import type { BenchRow } from './row';

const SESSIONS = Number(process.env.SCALE_SESSIONS ?? 200);
const WORKLOADS = Number(process.env.SCALE_WORKLOADS ?? 20);
const MINUTES = Number(process.env.SCALE_MINUTES ?? 10);

async function main(): Promise<void> {
  process.stderr.write(`scale: ${SESSIONS} sessions and intercepts, ${WORKLOADS} agents, ${MINUTES} min\n`);
  const r = await runScale({
    sessions: SESSIONS,
    workloads: WORKLOADS,
    durationMs: MINUTES * 60_000,
    sampleMs: 30_000,
    onSample: (s) => process.stderr.write(`  ${s.atS} s: manager ${s.rssMb.toFixed(1)} MB, ${s.cpuPercent.toFixed(1)}% CPU; ${s.heartbeats} heartbeats, ${s.heartbeatsFailed} failed\n`),
  });
  const rep = r.report;
  const held = rep.heartbeatsFailed === 0 && rep.sessionsLost === 0 && rep.agentsLost === 0 && rep.interceptsActive === SESSIONS;
  const path = `${SESSIONS} sessions, ${MINUTES} min`;
  const rows: BenchRow[] = [
    {
      metric: 'manager heap per session, with its intercept, after a full GC (KB)',
      path,
      value: r.heapPerSessionKb,
      reference: 0,
      vs: `${r.load.heapMb.toFixed(1)} MB loaded, ${r.idle.heapMb.toFixed(1)} MB idle`,
      goal: '< 100 KB',
      pass: r.heapPerSessionKb < 100,
    },
    {
      metric: 'manager resident memory per session (KB)',
      path,
      value: r.rssPerSessionKb,
      reference: 0,
      vs: `${r.load.rssMb.toFixed(0)} MB loaded (median), ${r.idle.rssMb.toFixed(0)} MB idle; moves with the GC`,
      goal: 'report',
      pass: true,
    },
    {
      metric: 'manager CPU per session, heartbeats every 3 s (us per second)',
      path,
      value: r.cpuUsPerSessionPerS,
      reference: 0,
      vs: `${r.load.cpuPercent.toFixed(1)}% loaded, ${r.idle.cpuPercent.toFixed(1)}% idle`,
      goal: 'report',
      pass: true,
    },
    {
      metric: 'heartbeats failed / sent; sessions lost; intercepts ACTIVE',
      path,
      value: rep.heartbeatsFailed,
      reference: rep.heartbeats,
      vs: `${rep.sessionsLost} lost, ${rep.interceptsActive}/${SESSIONS} active, heartbeat p99 ${rep.heartbeatMs.p99.toFixed(0)} ms`,
      goal: '0 failed, 0 lost',
      pass: held,
    },
  ];
  const fmt = (n: number): string => (n >= 100 ? n.toFixed(0) : n.toFixed(1));
  const table = [
    '| metric | path | rdbg | reference | notes | goal | met |',
    '|---|---|---|---|---|---|---|',
    ...rows.map((x) => `| ${x.metric} | ${x.path} | ${fmt(x.value)} | ${x.reference ? fmt(x.reference) : '-'} | ${x.vs} | ${x.goal} | ${x.pass ? 'yes' : 'NO'} |`),
  ].join('\n');
  process.stdout.write(`\n${table}\n`);
  if (rep.failures.length) process.stdout.write(`\nfailures:\n${rep.failures.map((f) => `  ${f}`).join('\n')}\n`);
  const dir = join(__dirname, '../../bench/results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'scale.json'), JSON.stringify({ date: new Date().toISOString(), rows, result: r }, null, 2) + '\n');
  writeFileSync(join(dir, 'scale.md'), table + '\n');
  if (!held) process.exitCode = 1;
}

main().catch((err: Error) => {
  process.stderr.write(`scale bench failed: ${err.stack ?? err.message}\n`);
  process.exitCode = 1;
});
