/**
 * The scale tier's run: a standalone traffic manager as its own process on
 * 127.0.0.1, and the load client (many sessions, intercepts and agents from
 * this process) against it for a while. The manager's CPU time and resident
 * memory are read from /proc before the load (its idle figure, the reference)
 * and while the load holds.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { LoadClient, type LoadReport } from './load-client';
import { RDBG } from './sandbox';

const HEAP_PROBE = resolve(__dirname, 'heap-probe.js');

export interface ScaleOptions {
  sessions: number;
  workloads: number;
  durationMs: number;
  /** How often the manager's RSS and CPU are sampled. */
  sampleMs?: number;
  /** Called with each sample, for progress lines. */
  onSample?: (s: ScaleSample) => void;
}

export interface ScaleSample {
  atS: number;
  rssMb: number;
  cpuPercent: number;
  heartbeats: number;
  heartbeatsFailed: number;
}

export interface ScaleResult {
  sessions: number;
  workloads: number;
  durationS: number;
  /** The manager's setup time for every agent, session and intercept. */
  setupS: number;
  /** Resident memory, JavaScript heap after a full collection, CPU. */
  idle: { rssMb: number; heapMb: number; cpuPercent: number };
  load: { rssMb: number; heapMb: number; cpuPercent: number };
  /** Heap the manager retains per session (with its intercept and share of agents), after a full collection. */
  heapPerSessionKb: number;
  rssPerSessionKb: number;
  /** CPU time the manager spends per session: microseconds each second. */
  cpuUsPerSessionPerS: number;
  samples: ScaleSample[];
  report: LoadReport;
}

const TICKS_PER_S = 100; // USER_HZ on Linux

function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) in parentheses: utime is the 12th, stime the 13th.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) / TICKS_PER_S;
}

function rssMb(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? 0;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A standalone manager on an ephemeral loopback port; resolves with its gRPC port. */
function startManager(): Promise<{ proc: ChildProcess; port: number }> {
  const args = ['--expose-gc', '-r', HEAP_PROBE, RDBG, 'manager', 'serve', '--listen', '127.0.0.1:0', '--service-cidr', '198.19.128.0/20', '--pod-cidr', '198.19.0.0/20'];
  const proc = spawn(process.execPath, args, {
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    env: { ...process.env, RDBG_LOG_LEVEL: 'info' },
  });
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`the manager did not start: ${buf.slice(-500)}`)), 15_000);
    proc.stderr!.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /"msg":"traffic manager listening".*?"port":(\d+)/.exec(buf);
      if (m) {
        clearTimeout(timer);
        buf = '';
        resolve({ proc, port: Number(m[1]) });
      } else if (buf.length > 1_000_000) buf = buf.slice(-10_000);
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the manager exited (${code}): ${buf.slice(-500)}`));
    });
  });
}

/** The manager's heap after a full collection (see heap-probe.ts), in MB. */
function heapMb(proc: ChildProcess): Promise<number> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the manager did not report its heap')), 10_000);
    proc.once('message', (m: { heap: NodeJS.MemoryUsage }) => {
      clearTimeout(timer);
      resolve(m.heap.heapUsed / (1024 * 1024));
    });
    proc.send('heap');
  });
}

/** CPU percent of `pid` over `ms`. */
async function cpuOver(pid: number, ms: number): Promise<number> {
  const c0 = cpuSeconds(pid);
  const t0 = performance.now();
  await sleep(ms);
  return ((cpuSeconds(pid) - c0) / ((performance.now() - t0) / 1000)) * 100;
}

export async function runScale(opts: ScaleOptions): Promise<ScaleResult> {
  const sampleMs = opts.sampleMs ?? 10_000;
  const { proc, port } = await startManager();
  const pid = proc.pid!;
  // The manager's warnings and errors (an expired session would be one) go into the report.
  const warnings: string[] = [];
  proc.stderr!.on('data', (d: Buffer) => {
    for (const l of d.toString().split('\n')) if (/"level":"(warn|error)"/.test(l) && warnings.length < 20) warnings.push(l.trim());
  });
  const load = new LoadClient({ manager: `127.0.0.1:${port}`, sessions: opts.sessions, workloads: opts.workloads });
  try {
    await sleep(1000);
    const idleCpu = await cpuOver(pid, 3000);
    const idleRss = rssMb(pid);
    const idleHeap = await heapMb(proc);
    const t0 = performance.now();
    await load.start();
    const setupS = (performance.now() - t0) / 1000;
    const samples: ScaleSample[] = [];
    const start = performance.now();
    const cpu0 = cpuSeconds(pid);
    while (performance.now() - start < opts.durationMs) {
      const cpuPercent = await cpuOver(pid, Math.min(sampleMs, Math.max(100, opts.durationMs - (performance.now() - start))));
      const r = await load.report();
      const s = { atS: Math.round((performance.now() - start) / 1000), rssMb: rssMb(pid), cpuPercent, heartbeats: r.heartbeats, heartbeatsFailed: r.heartbeatsFailed };
      samples.push(s);
      opts.onSample?.(s);
    }
    const loadCpu = ((cpuSeconds(pid) - cpu0) / ((performance.now() - start) / 1000)) * 100;
    const loadHeap = await heapMb(proc);
    const report = await load.report();
    if (warnings.length) report.failures.push(...warnings.map((w) => `manager: ${w}`));
    const loadRss = median(samples.map((s) => s.rssMb));
    return {
      sessions: opts.sessions,
      workloads: opts.workloads,
      durationS: Math.round((performance.now() - start) / 1000),
      setupS,
      idle: { rssMb: idleRss, heapMb: idleHeap, cpuPercent: idleCpu },
      load: { rssMb: loadRss, heapMb: loadHeap, cpuPercent: loadCpu },
      heapPerSessionKb: ((loadHeap - idleHeap) * 1024) / opts.sessions,
      rssPerSessionKb: ((loadRss - idleRss) * 1024) / opts.sessions,
      cpuUsPerSessionPerS: ((loadCpu - idleCpu) / 100 / opts.sessions) * 1e6,
      samples,
      report,
    };
  } finally {
    await load.stop();
    proc.kill('SIGTERM');
    await new Promise<void>((r) => {
      if (proc.exitCode !== null) return r();
      const t = setTimeout(() => {
        proc.kill('SIGKILL');
        r();
      }, 3000);
      proc.once('exit', () => {
        clearTimeout(t);
        r();
      });
    });
  }
}
