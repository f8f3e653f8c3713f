/**
 * `make bench`: every rdbg figure beside its reference, measured in the same
 * run on this machine (a plain veth path with no proxy). Prints a Markdown
 * table and writes bench/results/latest.json. Figures are medians of several
 * alternating rounds: the machine is shared and noisy, the ratios hold.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CLUSTER, NETCLIENT, Sandbox } from '../test/helpers/sandbox';

const NETBENCH = resolve(__dirname, 'netbench.js');
const SOCKS = '127.0.0.1:1080';
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);

interface Row {
  metric: string;
  rdbg: number;
  reference: number;
  unit: string;
  ratio: string;
  goal: string;
  pass: boolean;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function main(): Promise<void> {
  const sb = await Sandbox.create();
  const rows: Row[] = [];
  const raw: Record<string, number[]> = {};
  const note = (k: string, v: number): void => void (raw[k] ??= []).push(v);
  try {
    const lap = sb.laptop;
    // The direct reference path: route the pretend cluster's subnets over the veth (inside the sandbox only).
    lap.ns.exec('ip', ['route', 'add', CLUSTER.serviceCidr, 'via', '198.18.1.1']);
    const c = await lap.rdbg(['connect', '--manager', lap.managerAddress, '--socks', SOCKS]);
    if (c.code !== 0) throw new Error(c.stderr);
    const json = async (cmd: string, args: string[], timeoutMs = 300_000): Promise<Record<string, number>> => {
      const r = await lap.ns.run(cmd, args, timeoutMs);
      const out = JSON.parse(r.stdout.trim().split('\n').pop() || '{}');
      if (out.error || r.code !== 0) throw new Error(`${args.join(' ')}: ${out.error ?? r.stderr}`);
      return out;
    };
    const bytes = 1024 * 1024 * 1024;
    const url = `http://${CLUSTER.echoIp}/zeros?n=${bytes}`;
    const dst = `${CLUSTER.echoIp}:7`;
    for (let round = 0; round < ROUNDS; round++) {
      process.stderr.write(`round ${round + 1}/${ROUNDS}\n`);
      for (const via of ['direct', 'socks'] as const) {
        const proxy = via === 'socks' ? ['--socks5-hostname', SOCKS] : [];
        const dl = await lap.ns.run('curl', ['-sS', '-o', '/dev/null', '-w', '%{speed_download}', ...proxy, url], 300_000);
        note(`bulk_${via}`, Number(dl.stdout) / 1e6);
        const socksArg = via === 'socks' ? ['--socks', SOCKS] : [];
        note(`latency_${via}`, (await json('node', [NETBENCH, 'latency', '--dst', dst, '--n', '3000', ...socksArg])).median_us);
        note(`connrate_${via}`, (await json('node', [NETBENCH, 'connrate', '--dst', dst, '--n', '4000', '--c', '64', ...socksArg])).per_second);
      }
    }
    const bulkD = median(raw.bulk_direct);
    const bulkS = median(raw.bulk_socks);
    rows.push({ metric: 'bulk download, 1 GiB (MB/s)', rdbg: bulkS, reference: bulkD, unit: 'MB/s', ratio: `${((bulkS / bulkD) * 100).toFixed(0)}%`, goal: '>= 20% of direct', pass: bulkS >= 0.2 * bulkD });
    const latD = median(raw.latency_direct);
    const latS = median(raw.latency_socks);
    rows.push({ metric: 'request/response on an open connection, median (us)', rdbg: latS, reference: latD, unit: 'us', ratio: `+${(latS - latD).toFixed(0)} us`, goal: '< +200 us', pass: latS - latD < 200 });
    const crD = median(raw.connrate_direct);
    const crS = median(raw.connrate_socks);
    rows.push({ metric: 'new connections per second', rdbg: crS, reference: crD, unit: '/s', ratio: `${((crS / crD) * 100).toFixed(0)}%`, goal: '>= 2000/s', pass: crS >= 2000 });

    // 10,000 idle connections held through the proxy: the user daemon's resident memory.
    const st = JSON.parse((await lap.rdbg(['status', '-o', 'json'])).stdout);
    const rss = (): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${st.pid}/status`, 'utf8'))![1]) / 1024;
    const before = rss();
    const hold = lap.ns.spawn('node', [NETCLIENT, 'hold', '--socks', SOCKS, '--dst', dst, '--n', '10000', '--hold', '8000']);
    const held = await new Promise<{ held: number; failed: number }>((res, rej) => {
      let out = '';
      hold.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const line = out.split('\n')[0];
        if (out.includes('\n')) res(JSON.parse(line));
      });
      hold.on('exit', () => rej(new Error(`hold client exited: ${out}`)));
    });
    await new Promise((r) => setTimeout(r, 2000));
    const during = rss();
    hold.kill();
    rows.push({ metric: `user daemon RSS with ${held.held} idle connections (MB)`, rdbg: during, reference: before, unit: 'MB', ratio: `${held.failed} failed`, goal: '< 300 MB, 10,000 held', pass: during < 300 && held.held === 10000 });

    await lap.rdbg(['quit']);
  } finally {
    sb.destroy();
  }

  const fmt = (n: number): string => (n >= 100 ? n.toFixed(0) : n.toFixed(1));
  const table = [
    '| metric | rdbg (SOCKS5) | direct veth | rdbg vs direct | goal | met |',
    '|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.metric} | ${fmt(r.rdbg)} | ${fmt(r.reference)} | ${r.ratio} | ${r.goal} | ${r.pass ? 'yes' : 'NO'} |`),
  ].join('\n');
  process.stdout.write(`\n${table}\n\nrounds: ${ROUNDS}; raw: ${JSON.stringify(raw)}\n`);
  const dir = join(__dirname, '../../bench/results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'latest.json'), JSON.stringify({ date: new Date().toISOString(), rounds: ROUNDS, rows, raw }, null, 2) + '\n');
  if (rows.some((r) => !r.pass)) process.exitCode = 1;
}

void main();
