import { mkdirSync, chmodSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

/**
 * Where the user daemon keeps its socket, pid file and log. RDBG_HOME wins
 * (tests give each sandbox its own); then XDG_RUNTIME_DIR; then ~/.cache.
 * The directory is 0700 so that only its owner can reach the socket.
 */
export function runtimeDir(): string {
  const dir = process.env.RDBG_HOME
    ? process.env.RDBG_HOME
    : process.env.XDG_RUNTIME_DIR
      ? join(process.env.XDG_RUNTIME_DIR, 'rdbg')
      : join(homedir(), '.cache', 'rdbg');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = statSync(dir);
  if ((st.mode & 0o077) !== 0) chmodSync(dir, 0o700);
  return dir;
}

export function daemonSocketPath(): string {
  return join(runtimeDir(), 'daemon.sock');
}

export function daemonPidPath(): string {
  return join(runtimeDir(), 'daemon.pid');
}

export function daemonLogPath(): string {
  return join(runtimeDir(), 'daemon.log');
}

/** The root daemon's state (journal, socket): root-owned, outside the user's home. */
export function rootStateDir(): string {
  return process.env.RDBG_ROOT_HOME || '/var/run/rdbg';
}

export function rootSocketPath(): string {
  return join(rootStateDir(), 'root.sock');
}

export function rootJournalPath(): string {
  return join(rootStateDir(), 'journal.json');
}
