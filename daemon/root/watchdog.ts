import { fork, spawnSync } from 'node:child_process';
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Codes } from '../../src/core/errors';
import { logger } from '../../src/core/log';
import type { RootPaths } from '../../src/core/paths';
import type { StartupMessage } from '../../src/rpc/startup';
import { undoAll } from './cleanup';
import { Journal, RESOLV_CONF, TUN_NAME, type JournalEntry } from './journal';
import { linuxPlatform } from './platform/linux';
import { journalUndoers } from './undoers';
import type { WorkerConfig, WorkerMessage } from './worker';

const log = logger('rootd.watchdog');

/**
 * The root daemon's worker holds thousands of small objects per flow and
 * little else: a small young generation and an old generation that grows by
 * 25% at a time, not the default 2-4x, keep its resident memory down.
 */
const WORKER_EXEC_ARGV = ['--max-semi-space-size=2', '--heap-growing-percent=25'];

/** What the last root daemon of a session did when it stopped; `rdbg status` shows it. */
export interface ExitRecord {
  time: string;
  clean: boolean; // it stopped by itself and undid its changes
  reason: string; // "killed by SIGKILL", "the user daemon is gone", ...
  undone: string[]; // journal entries the watchdog undid
  sockets_reset: string[]; // CIDRs whose sockets were aborted
}

/** The CIDRs routed into rdbg's TUN devices: the laptop's sockets to them have lost their path. */
export function routedCidrs(entries: JournalEntry[]): string[] {
  return entries.filter((e) => e.kind === 'route' && TUN_NAME.test(e.data.dev ?? '')).map((e) => e.data.cidr);
}

/**
 * Abort every socket of this network namespace to these CIDRs (netlink
 * SOCK_DESTROY): programs get ECONNABORTED at once instead of waiting out
 * their own timeouts on a path that no longer exists.
 */
export function destroySockets(cidrs: string[]): void {
  for (const cidr of cidrs) {
    const r = spawnSync('ss', ['-K', '-a', '-t', '-u', 'dst', cidr], { encoding: 'utf8', timeout: 5000 });
    if (r.status !== 0) log.warn('could not abort the sockets to a routed subnet', { cidr, err: r.error?.message ?? r.stderr.trim() });
  }
}

function writeExitRecord(path: string, rec: ExitRecord): void {
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, JSON.stringify(rec) + '\n', { mode: 0o644 });
  renameSync(tmp, path);
}

/**
 * The root daemon proper: a small process that forks the worker and outlives
 * it. When the worker dies without a clean stop (a crash, kill -9, the OOM
 * killer), the watchdog aborts the laptop's sockets into the cluster, undoes
 * the journal (routes, DNS), records what happened, and exits.
 */
export function runWatchdog(o: { paths: RootPaths; config: Omit<WorkerConfig, 'watchdogPid'>; tell: (msg: StartupMessage) => void }): Promise<number> {
  const { paths } = o;
  writeFileSync(paths.pid, String(process.pid), { mode: 0o600 });
  rmSync(paths.exitRecord, { force: true });
  const worker = fork(join(__dirname, 'worker.js'), [], { execArgv: WORKER_EXEC_ARGV, stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  let ready = false;
  let stopping: string | undefined;
  let failed: StartupMessage | undefined;
  worker.on('message', (m: WorkerMessage) => {
    if (m.type === 'ready') {
      ready = true;
      o.tell({ ready: true });
    } else if (m.type === 'failed') {
      failed = { ready: false, code: m.code, message: m.message, hint: m.hint };
    } else if (m.type === 'stopping') {
      stopping = m.reason;
    }
  });
  worker.on('error', (err) => log.error('root daemon worker', { err: err.message }));
  worker.send({ type: 'start', config: { ...o.config, watchdogPid: process.pid } satisfies WorkerConfig });
  const forward = (): void => void worker.kill('SIGTERM');
  process.on('SIGTERM', forward);
  process.on('SIGINT', forward);
  process.on('SIGHUP', () => undefined);

  return new Promise((resolve) => {
    worker.once('exit', (code, signal) => {
      const clean = stopping !== undefined && code === 0;
      const reason = clean ? stopping! : signal ? `killed by ${signal}` : `exited with code ${code}`;
      const journal = new Journal(paths.journal);
      let reset: string[] = [];
      if (!clean) {
        reset = routedCidrs(journal.entries());
        destroySockets(reset);
        log.error('the root daemon worker died; undoing its changes', { reason, pid: worker.pid });
      }
      const undone = undoAll(journal, linuxPlatform, journalUndoers(RESOLV_CONF));
      rmSync(paths.socket, { force: true });
      rmSync(paths.pid, { force: true });
      if (journal.entries().length === 0) rmSync(paths.dir, { recursive: true, force: true });
      if (!ready) {
        o.tell(failed ?? { ready: false, code: Codes.DAEMON_START, message: `the root daemon ${reason} before it was ready` });
      } else if (reason !== 'rdbg quit') {
        writeExitRecord(paths.exitRecord, { time: new Date().toISOString(), clean, reason, undone, sockets_reset: reset });
      }
      log.info('root daemon stopped', { reason, undone });
      resolve(clean && ready ? 0 : 1);
    });
  });
}
