// The laptop end of `rdbg intercept --mount DIR` and `--copy-files DIR`: the
// agent serving the pod's files opens a files flow (a diverted flow of kind
// "files"); the user daemon answers it and gives it to sshfs (-o passive:
// SFTP on its stdin and stdout), or copies the tree once through it. A mount
// whose flow ends (the pod went away) takes the next flow, from the agent the
// manager picks instead. Mounts are journalled (src/core/mount-journal.ts)
// before they are made, and unmounted on leave, on quit, and after a crash.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { mkdir, symlink, utimes, chmod, writeFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { Duplex } from 'node:stream';
import type { FileEntry } from 'ssh2';
import { errorMessage } from '../../src/core/errors';
import { logger } from '../../src/core/log';
import { addMount, forgetMount, isMounted, unmount } from '../../src/core/mount-journal';
import { sftpOn, type SftpSession } from '../../src/tunnel/sftp';
import { splice } from '../../src/tunnel/splice';

const log = logger('userd.mounts');

/** How long an intercept waits for its agent's files flow and the mount. */
const READY_MS = 30_000;
/** sshfs's options: in-pod absolute symlinks stay inside the mount; a ConfigMap's ..data swap is seen at once, not after the directory cache's 20 s. */
const SSHFS_OPTIONS = 'passive,transform_symlinks,dcache_link_timeout=0';

/** Runs sshfs in the foreground, then unmounts whatever it left (exit 127: no sshfs). */
const MOUNT_SCRIPT = 'command -v sshfs >/dev/null || exit 127; sshfs -f -o "$1" :/ "$2"; s=$?; fusermount3 -u -z "$2" 2>/dev/null; exit $s';

export type MountMode = 'mount' | 'copy';

interface Wanted {
  interceptId: string;
  workload: string;
  namespace: string;
  dir: string;
  mode: MountMode;
  pod?: string;
  sshfs?: ChildProcess;
  ready?: { resolve: (pod: string) => void; reject: (err: Error) => void; timer: NodeJS.Timeout };
  released: boolean;
}

export class Mounts {
  private readonly wanted = new Map<string, Wanted>();

  constructor(private readonly runtimeDir: string) {}

  /** Resolves with the serving pod's name once DIR holds the pod's files. */
  prepare(i: { id: string; workload: string; namespace: string }, dir: string, mode: MountMode): Promise<string> {
    const old = this.wanted.get(i.id);
    if (old) this.release(old);
    if (mode === 'mount' && isMounted(dir)) return Promise.reject(new Error(`${dir} is already a mount point`));
    const w: Wanted = { interceptId: i.id, workload: i.workload, namespace: i.namespace, dir, mode, released: false };
    this.wanted.set(i.id, w);
    return this.waitReady(w);
  }

  private waitReady(w: Wanted): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        w.ready = undefined;
        reject(new Error(`no agent of ${w.workload} sent its files within ${READY_MS / 1000} s`));
      }, READY_MS);
      w.ready = { resolve, reject, timer };
    });
  }

  /** Whether this laptop wants the files of this intercept now. */
  wants(interceptId: string): boolean {
    const w = this.wanted.get(interceptId);
    return !!w && !w.released && !w.sshfs && (w.mode === 'mount' || !!w.ready);
  }

  /** A files flow, accepted: mount it, or copy through it. */
  take(interceptId: string, pod: string, stream: Duplex): void {
    const w = this.wanted.get(interceptId);
    if (!w || !this.wants(interceptId)) return void stream.destroy();
    w.pod = pod;
    if (w.mode === 'copy') return void this.copy(w, stream);
    this.mount(w, stream);
  }

  private settle(w: Wanted, err?: Error): void {
    const r = w.ready;
    if (!r) return;
    w.ready = undefined;
    clearTimeout(r.timer);
    if (err) r.reject(err);
    else r.resolve(w.pod ?? '');
  }

  private mount(w: Wanted, stream: Duplex): void {
    try {
      mkdirSync(w.dir, { recursive: true });
    } catch (err) {
      stream.destroy();
      return this.settle(w, new Error(`cannot make the mount point ${w.dir}: ${errorMessage(err)}`));
    }
    addMount(this.runtimeDir, w.dir);
    // sshfs under a shell that unmounts when it ends: a daemon killed with -9 closes the flow, sshfs ends
    // on the closed pipe, and the mount goes with it. Its own process group: the daemon's fate is not its.
    const sshfs = spawn('sh', ['-c', MOUNT_SCRIPT, 'rdbg-mount', SSHFS_OPTIONS, w.dir], { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    w.sshfs = sshfs;
    let stderr = '';
    sshfs.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
    sshfs.on('error', (err: NodeJS.ErrnoException) => {
      stream.destroy();
      this.settle(w, new Error(`cannot run sshfs: ${err.message}`));
    });
    // sshfs's stdout is the SFTP requests, its stdin the answers.
    splice(stream, Duplex.from({ readable: sshfs.stdout!, writable: sshfs.stdin! }));
    const started = Date.now();
    const poll = setInterval(() => {
      if (isMounted(w.dir)) {
        clearInterval(poll);
        log.info('pod files mounted', { dir: w.dir, pod: w.pod, ms: Date.now() - started });
        this.settle(w);
      }
    }, 20);
    sshfs.once('exit', (code, signal) => {
      clearInterval(poll);
      stream.destroy();
      w.sshfs = undefined;
      unmount(w.dir);
      if (w.released) return forgetMount(this.runtimeDir, w.dir);
      if (code === 127) return this.settle(w, new Error('sshfs is not installed (Debian/Ubuntu: apt install sshfs), or use --copy-files'));
      log.warn('the pod files mount ended; it comes back with the next agent that serves them', { dir: w.dir, code, signal, stderr: stderr.trim() });
      this.settle(w, new Error(`sshfs ended (${signal ?? `exit ${code}`}): ${stderr.trim() || 'the files flow closed'}`));
    });
  }

  private async copy(w: Wanted, stream: Duplex): Promise<void> {
    const sftp = sftpOn(stream, 'client');
    try {
      await new Promise<void>((resolve, reject) => {
        sftp.once('ready', () => resolve());
        sftp.once('error', reject);
      });
      const t0 = Date.now();
      const files = await copyTree(sftp, '/', w.dir);
      log.info('pod files copied', { dir: w.dir, pod: w.pod, files, ms: Date.now() - t0 });
      this.settle(w);
    } catch (err) {
      this.settle(w, new Error(`copying the pod's files: ${errorMessage(err)}`));
    } finally {
      stream.destroy();
    }
  }

  /** Ends the mounts of these intercepts (leave). */
  releaseWhere(match: (w: { interceptId: string; workload: string; namespace: string }) => boolean): void {
    for (const w of [...this.wanted.values()]) if (match(w)) this.release(w);
  }

  releaseAll(): void {
    for (const w of [...this.wanted.values()]) this.release(w);
  }

  private release(w: Wanted): void {
    w.released = true;
    this.wanted.delete(w.interceptId);
    this.settle(w, new Error('the intercept ended'));
    if (w.mode !== 'mount') return;
    // Unmounting ends sshfs; a kill is the fallback when the mount point is busy.
    unmount(w.dir);
    if (!w.sshfs) return forgetMount(this.runtimeDir, w.dir);
    // The unmount ends sshfs; a mount point kept busy is given 2 s.
    const pid = w.sshfs.pid;
    setTimeout(() => {
      try {
        if (pid) process.kill(-pid, 'SIGTERM');
      } catch {
        // gone
      }
    }, 2000).unref();
  }
}

const call = <T>(f: (cb: (err: Error | null | undefined, v: T) => void) => void): Promise<T> =>
  new Promise<T>((resolve, reject) => f((err, v) => (err ? reject(err) : resolve(v))));

/** The pod's tree under `remote`, copied into `local` (files, directories, symlinks; modes and times). Returns the files copied. */
async function copyTree(sftp: SftpSession, remote: string, local: string): Promise<number> {
  await mkdir(local, { recursive: true });
  const entries = await call<FileEntry[]>((cb) => sftp.readdir(remote, cb));
  let n = 0;
  for (const e of entries) {
    if (e.filename === '.' || e.filename === '..') continue;
    const from = posix.join(remote, e.filename);
    const to = join(local, e.filename);
    const type = (e.attrs.mode ?? 0) & 0o170000;
    if (type === 0o040000) n += await copyTree(sftp, from, to);
    else if (type === 0o120000) await symlink(await call<string>((cb) => sftp.readlink(from, cb)), to).catch(() => undefined);
    else if (type === 0o100000) {
      await writeFile(to, await call<Buffer>((cb) => sftp.readFile(from, cb)));
      n++;
    } else continue;
    if (type !== 0o120000) {
      await chmod(to, (e.attrs.mode ?? 0o644) & 0o7777).catch(() => undefined);
      await utimes(to, e.attrs.atime, e.attrs.mtime).catch(() => undefined);
    }
  }
  return n;
}
