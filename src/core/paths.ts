import { createHash } from 'node:crypto';
import { mkdirSync, chmodSync, readlinkSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';

/**
 * The user daemon's directory (socket, pid file, log), from the process's
 * configuration (RDBG_HOME, XDG_RUNTIME_DIR, ~/.cache: src/core/config.ts).
 * It is made 0700 so that only its owner can reach the socket.
 */
export function runtimeDir(dir: string): string {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = statSync(dir);
  if ((st.mode & 0o077) !== 0) chmodSync(dir, 0o700);
  return dir;
}

export function daemonSocketPath(dir: string): string {
  return join(runtimeDir(dir), 'daemon.sock');
}

export function daemonPidPath(dir: string): string {
  return join(runtimeDir(dir), 'daemon.pid');
}

export function daemonLogPath(dir: string): string {
  return join(runtimeDir(dir), 'daemon.log');
}

/**
 * The root daemon's state: one directory per session under a root-owned base,
 * never a path from the environment. The id is derived by root itself from
 * the calling uid, the user daemon's socket and the network namespace, so two
 * sessions (two RDBG_HOMEs, two users, two test namespaces) never share one.
 */
export const ROOT_BASE = '/var/run/rdbg';

export interface RootPaths {
  id: string;
  dir: string; // root-only (0700): journal and pid file
  journal: string;
  pid: string;
  socket: string; // in the base directory, which the user may traverse but not write
  exitRecord: string; // what the last root daemon of this session did when it stopped
}

export function rootSessionId(uid: number, userSocket: string, netns: string): string {
  return createHash('sha256').update(`${uid}\n${userSocket}\n${netns}`).digest('hex').slice(0, 16);
}

/** The network namespace this process is in, as the kernel names it ("net:[4026531840]"). */
export function currentNetns(): string {
  try {
    return readlinkSync('/proc/self/ns/net');
  } catch {
    return '';
  }
}

export function rootPaths(id: string, base = ROOT_BASE): RootPaths {
  const dir = join(base, id);
  return { id, dir, journal: join(dir, 'journal.json'), pid: join(dir, 'root.pid'), socket: join(base, `${id}.sock`), exitRecord: join(base, `${id}.exit.json`) };
}

/** The root daemon paths of this user's session, as root will derive them from `rdbg connect`'s arguments. */
export function sessionRootPaths(dir: string): RootPaths {
  return rootPaths(rootSessionId(process.getuid?.() ?? 0, resolve(daemonSocketPath(dir)), currentNetns()));
}
