// The mounts the user daemon made (rdbg intercept --mount), written down
// before each is made: a daemon that dies leaves them listed, and the next
// daemon, `rdbg connect` or `rdbg quit` unmounts what is still there.
import { spawnSync } from 'node:child_process';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const FILE = 'mounts.json';

function pathOf(runtimeDir: string): string {
  return join(runtimeDir, FILE);
}

export function listMounts(runtimeDir: string): string[] {
  try {
    const list = JSON.parse(readFileSync(pathOf(runtimeDir), 'utf8')) as unknown;
    return Array.isArray(list) ? list.filter((d): d is string => typeof d === 'string') : [];
  } catch {
    return [];
  }
}

function save(runtimeDir: string, dirs: string[]): void {
  const p = pathOf(runtimeDir);
  writeFileSync(`${p}.tmp`, JSON.stringify(dirs), { mode: 0o600 });
  renameSync(`${p}.tmp`, p);
}

export function addMount(runtimeDir: string, dir: string): void {
  save(runtimeDir, [...new Set([...listMounts(runtimeDir), dir])]);
}

export function forgetMount(runtimeDir: string, dir: string): void {
  save(runtimeDir, listMounts(runtimeDir).filter((d) => d !== dir));
}

/** Whether a FUSE file system (sshfs's) is mounted at `dir` in this mount namespace. */
export function isMounted(dir: string): boolean {
  try {
    return readFileSync('/proc/self/mounts', 'utf8').split('\n').some((l) => {
      const f = l.split(' ');
      return f[1] === dir.replace(/ /g, '\\040') && f[2]?.startsWith('fuse');
    });
  } catch {
    return false;
  }
}

/** Unmounts `dir` if rdbg's mount is still there (lazily: a process inside it does not keep it). */
export function unmount(dir: string): boolean {
  if (!isMounted(dir)) return false;
  spawnSync('fusermount3', ['-u', '-z', dir], { stdio: 'ignore' });
  return true;
}

/** After a crash: unmounts every listed mount and forgets them all. Returns those that were still mounted. */
export function cleanupMounts(runtimeDir: string): string[] {
  const left = listMounts(runtimeDir).filter((d) => unmount(d));
  if (listMounts(runtimeDir).length) save(runtimeDir, []);
  return left;
}
