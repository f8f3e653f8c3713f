// The agent's end of a mount: SFTP requests (src/tunnel/sftp.ts) answered
// from the app container's volumes, which the webhook mounts for the agent
// under APP_MOUNTS_DIR at the app's paths. Every path stays inside that root:
// `..` is resolved against the root, and a symlink whose target leaves it is
// refused (EACCES), so a mount shows the app's files and nothing of the
// agent's own (its token included). Reads and writes are the agent's, which
// runs as the app's user: the pod decides what may be written.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Stats } from 'node:fs';
import type { Attributes } from 'ssh2';
import { logger } from '../src/core/log';
import type { SftpSession } from '../src/tunnel/sftp';

const log = logger('agent.files');

// SFTP v3 (draft-ietf-secsh-filexfer-02)
const STATUS = { OK: 0, EOF: 1, NO_SUCH_FILE: 2, PERMISSION_DENIED: 3, FAILURE: 4, OP_UNSUPPORTED: 8 } as const;
const OPEN = { READ: 1, WRITE: 2, APPEND: 4, CREAT: 8, TRUNC: 16, EXCL: 32 } as const;

/** The most one READ answers (sshfs asks for its max_read, 64 KiB by default). */
const MAX_READ = 256 * 1024;
const READDIR_BATCH = 512;
/** Requests that only read may run together; this many at most. */
const MAX_INFLIGHT = 64;

function status(err: NodeJS.ErrnoException): number {
  switch (err.code) {
    case 'ENOENT':
    case 'ENOTDIR':
      return STATUS.NO_SUCH_FILE;
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
      return STATUS.PERMISSION_DENIED;
    case 'ENOSYS':
    case 'ENOTSUP':
    case 'EOPNOTSUPP':
      return STATUS.OP_UNSUPPORTED;
    default:
      return STATUS.FAILURE;
  }
}

function attrsOf(st: Stats): Attributes {
  return { mode: st.mode, uid: st.uid, gid: st.gid, size: st.size, atime: Math.floor(st.atimeMs / 1000), mtime: Math.floor(st.mtimeMs / 1000) };
}

/** `ls -l`'s line, which SFTP v3 clients show as they get it. */
function longname(name: string, st: Stats): string {
  const kinds: Record<number, string> = { 0o040000: 'd', 0o120000: 'l', 0o020000: 'c', 0o060000: 'b', 0o010000: 'p', 0o140000: 's' };
  let m = kinds[st.mode & 0o170000] ?? '-';
  for (let i = 0; i < 9; i++) m += st.mode & (1 << (8 - i)) ? 'rwxrwxrwx'[i] : '-';
  const d = st.mtime;
  const month = d.toLocaleString('en', { month: 'short' });
  const when = Math.abs(Date.now() - d.getTime()) > 182 * 864e5
    ? `${month} ${String(d.getDate()).padStart(2)}  ${d.getFullYear()}`
    : `${month} ${String(d.getDate()).padStart(2)} ${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
  return `${m} ${String(st.nlink).padStart(4)} ${String(st.uid).padEnd(8)} ${String(st.gid).padEnd(8)} ${String(st.size).padStart(8)} ${when} ${name}`;
}

function openFlags(p: number): number {
  const c = fs.constants;
  let f = p & OPEN.READ && p & OPEN.WRITE ? c.O_RDWR : p & OPEN.WRITE ? c.O_WRONLY : c.O_RDONLY;
  if (p & OPEN.APPEND) f |= c.O_APPEND;
  if (p & OPEN.CREAT) f |= c.O_CREAT;
  if (p & OPEN.TRUNC) f |= c.O_TRUNC;
  if (p & OPEN.EXCL) f |= c.O_EXCL;
  return f;
}

const errno = (code: string, message: string): NodeJS.ErrnoException => Object.assign(new Error(message), { code });
const P = fs.promises;
/** A callback fs call as a promise (raw fds: cheaper than fs.promises' FileHandles). */
const cb = <T>(call: (done: (err: NodeJS.ErrnoException | null, value?: T) => void) => void): Promise<T> =>
  new Promise<T>((resolve, reject) => call((err, value) => (err ? reject(err) : resolve(value as T))));

interface FileHandle { fd: number; }
interface DirHandle { dir: string; listing?: Promise<void>; entries?: string[] }
type Handle = FileHandle | DirHandle;
type Job = { id: number; kind: 'read' | 'write' | 'alone'; run: () => Promise<void>; range?: { h: Handle; start: number; end: number } };

/** Serves one SFTP session from `root` until its stream closes. */
export function serveFiles(sftp: SftpSession & { extendedReply(reqid: number, payload: Buffer): void }, rootDir: string): void {
  const root = path.resolve(rootDir);
  const handles = new Map<number, Handle>();
  let nextHandle = 1;

  /** The client's path as a path under root (lexically: `..` stops at the root). */
  const lexical = (p: string): string => path.resolve(root, `.${path.posix.resolve('/', p || '.')}`);
  const inside = (real: string): boolean => real === root || real.startsWith(root + path.sep);
  /** A path whose every symlink resolves inside root (the last component may not exist yet). */
  const resolve = async (p: string, followLast = true): Promise<string> => {
    const full = lexical(p);
    const parent = path.dirname(full);
    const realParent = full === root ? root : await P.realpath(parent);
    if (!inside(realParent)) throw errno('EACCES', `${p} leaves the app's files`);
    const candidate = full === root ? root : path.join(realParent, path.basename(full));
    if (!followLast) return candidate;
    try {
      const real = await P.realpath(candidate);
      if (!inside(real)) throw errno('EACCES', `${p} leaves the app's files`);
      return real;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return candidate; // created by the request
      throw err;
    }
  };

  const handleOf = (b: Buffer): Handle | undefined => (b.length === 4 ? handles.get(b.readUInt32BE(0)) : undefined);
  const newHandle = (h: Handle): Buffer => {
    const id = nextHandle++ >>> 0;
    handles.set(id, h);
    const b = Buffer.allocUnsafe(4);
    b.writeUInt32BE(id);
    return b;
  };
  const fail = (id: number, err: unknown): void => {
    const e = err as NodeJS.ErrnoException;
    sftp.status(id, e?.code ? status(e) : STATUS.FAILURE, e?.message ?? String(err));
  };
  const ok = (id: number): void => void sftp.status(id, STATUS.OK);
  const badHandle = (): NodeJS.ErrnoException => errno('EBADF', 'no such handle');
  const fileOf = (b: Buffer): FileHandle => {
    const h = handleOf(b);
    if (!h || !('fd' in h)) throw badHandle();
    return h;
  };

  // sshfs sends dependent requests without waiting (OPEN with O_CREAT, then LSTAT of that path) and expects
  // them done in order, as OpenSSH's sftp-server does one at a time. Reads run together, a write runs beside
  // writes to other ranges, everything else alone; first come, first served.
  const queue: Job[] = [];
  let inflight = 0;
  let inflightKind: Job['kind'] | undefined;
  const writing = new Set<NonNullable<Job['range']>>();
  const canStart = (j: Job): boolean => {
    if (inflight === 0) return true;
    if (j.kind === 'alone' || j.kind !== inflightKind || inflight >= MAX_INFLIGHT) return false;
    if (j.range) for (const w of writing) if (w.h === j.range.h && w.start < j.range.end && j.range.start < w.end) return false;
    return true;
  };
  const pump = (): void => {
    while (queue.length && canStart(queue[0])) {
      const j = queue.shift()!;
      inflight++;
      inflightKind = j.kind;
      if (j.range) writing.add(j.range);
      j.run().catch((err: unknown) => fail(j.id, err)).finally(() => {
        inflight--;
        if (j.range) writing.delete(j.range);
        pump();
      });
    }
  };
  const submit = (j: Job): void => {
    queue.push(j);
    pump();
  };
  // ssh2's SFTPWrapper types name the server events loosely; each handler below takes the request's own arguments.
  const on = <A extends unknown[]>(event: string, kind: Job['kind'] | ((...a: A) => Job['kind']), fn: (id: number, ...a: A) => Promise<void>): void => {
    (sftp as unknown as NodeJS.EventEmitter).on(event, (id: number, ...rest: unknown[]) => {
      const a = rest as A;
      submit({ id, kind: typeof kind === 'function' ? kind(...a) : kind, run: () => fn(id, ...a) });
    });
  };

  const applyAttrs = async (t: string | number, a: Attributes): Promise<void> => {
    if (typeof t === 'number') {
      if (typeof a.size === 'number') await cb<void>((d) => fs.ftruncate(t, a.size, d));
      if (typeof a.uid === 'number' && typeof a.gid === 'number') await cb<void>((d) => fs.fchown(t, a.uid!, a.gid!, d));
      if (typeof a.mode === 'number') await cb<void>((d) => fs.fchmod(t, a.mode! & 0o7777, d));
      if (typeof a.atime === 'number' && typeof a.mtime === 'number') await cb<void>((d) => fs.futimes(t, a.atime!, a.mtime!, d));
      return;
    }
    if (typeof a.size === 'number') await P.truncate(t, a.size);
    if (typeof a.uid === 'number' && typeof a.gid === 'number') await P.lchown(t, a.uid, a.gid);
    if (typeof a.mode === 'number') await P.chmod(t, a.mode & 0o7777);
    if (typeof a.atime === 'number' && typeof a.mtime === 'number') await P.utimes(t, a.atime, a.mtime);
  };

  const WRITE_BITS = OPEN.WRITE | OPEN.CREAT | OPEN.TRUNC | OPEN.APPEND | OPEN.EXCL;
  on<[string, number, Attributes]>('OPEN', (_f, flags) => (flags & WRITE_BITS ? 'alone' : 'read'), async (id, filename, flags, attrs) => {
    const real = await resolve(filename);
    const fd = await cb<number>((d) => fs.open(real, openFlags(flags), typeof attrs.mode === 'number' ? attrs.mode & 0o7777 : 0o666, d));
    sftp.handle(id, newHandle({ fd }));
  });
  on('READ', 'read', async (id, hb: Buffer, offset: number, length: number) => {
    const h = fileOf(hb);
    const len = Math.min(length, MAX_READ);
    const buf = Buffer.allocUnsafe(len);
    const n = await cb<number>((d) => fs.read(h.fd, buf, 0, len, offset, d));
    if (n === 0) sftp.status(id, STATUS.EOF);
    else sftp.data(id, n === len ? buf : buf.subarray(0, n));
  });
  (sftp as unknown as NodeJS.EventEmitter).on('WRITE', (id: number, hb: Buffer, offset: number, data: Buffer) => {
    const copy = Buffer.from(data); // the parser's buffer is reused once this returns
    const h = handleOf(hb);
    submit({
      id, kind: 'write',
      range: h ? { h, start: offset, end: offset + copy.length } : undefined,
      run: async () => {
        const f = fileOf(hb);
        let off = 0;
        while (off < copy.length) off += await cb<number>((d) => fs.write(f.fd, copy, off, copy.length - off, offset + off, d));
        ok(id);
      },
    });
  });
  on('CLOSE', 'alone', async (id, hb: Buffer) => {
    const key = hb.length === 4 ? hb.readUInt32BE(0) : -1;
    const h = handles.get(key);
    if (!h) throw badHandle();
    handles.delete(key);
    if ('fd' in h) await cb<void>((d) => fs.close(h.fd, d));
    ok(id);
  });
  on('FSTAT', 'read', async (id, hb: Buffer) => {
    const h = handleOf(hb);
    if (!h) throw badHandle();
    const st = 'fd' in h ? await cb<Stats>((d) => fs.fstat(h.fd, d)) : await P.stat(h.dir);
    sftp.attrs(id, attrsOf(st));
  });
  on('STAT', 'read', async (id, p: string) => void sftp.attrs(id, attrsOf(await P.stat(await resolve(p)))));
  on('LSTAT', 'read', async (id, p: string) => void sftp.attrs(id, attrsOf(await P.lstat(await resolve(p, false)))));
  on('SETSTAT', 'alone', async (id, p: string, attrs: Attributes) => {
    await applyAttrs(await resolve(p), attrs);
    ok(id);
  });
  on('FSETSTAT', 'alone', async (id, hb: Buffer, attrs: Attributes) => {
    const h = handleOf(hb);
    if (!h) throw badHandle();
    await applyAttrs('fd' in h ? h.fd : h.dir, attrs);
    ok(id);
  });
  on('OPENDIR', 'read', async (id, p: string) => {
    const dir = await resolve(p);
    if (!(await P.stat(dir)).isDirectory()) throw errno('ENOTDIR', `${p} is not a directory`);
    sftp.handle(id, newHandle({ dir }));
  });
  on('READDIR', 'read', async (id, hb: Buffer) => {
    const h = handleOf(hb);
    if (!h || 'fd' in h) throw badHandle();
    // sshfs asks for the next batch before this one is answered: one listing, taken a batch at a time.
    h.listing ??= P.readdir(h.dir).then((names) => void (h.entries = ['.', '..', ...names]));
    await h.listing;
    const batch = h.entries!.splice(0, READDIR_BATCH);
    if (batch.length === 0) return void sftp.status(id, STATUS.EOF);
    const names = await Promise.all(batch.map((n) => P.lstat(path.join(h.dir, n)).then((st) => ({ filename: n, longname: longname(n, st), attrs: attrsOf(st) }), () => undefined)));
    sftp.name(id, names.filter((x) => x !== undefined));
  });
  on('REALPATH', 'read', async (id, p: string) => {
    const v = path.posix.resolve('/', p || '.');
    sftp.name(id, [{ filename: v, longname: v, attrs: {} as Attributes }]);
  });
  on('READLINK', 'read', async (id, p: string) => {
    const target = await P.readlink(await resolve(p, false));
    sftp.name(id, [{ filename: target, longname: target, attrs: {} as Attributes }]);
  });
  on('SYMLINK', 'alone', async (id, linkPath: string, target: string) => {
    await P.symlink(target, await resolve(linkPath, false));
    ok(id);
  });
  on('MKDIR', 'alone', async (id, p: string, attrs: Attributes) => {
    await P.mkdir(await resolve(p, false), typeof attrs.mode === 'number' ? attrs.mode & 0o7777 : 0o777);
    ok(id);
  });
  on('RMDIR', 'alone', async (id, p: string) => {
    await P.rmdir(await resolve(p, false));
    ok(id);
  });
  on('REMOVE', 'alone', async (id, p: string) => {
    await P.unlink(await resolve(p, false));
    ok(id);
  });
  on('RENAME', 'alone', async (id, from: string, to: string) => {
    await P.rename(await resolve(from, false), await resolve(to, false));
    ok(id);
  });
  const strAt = (b: Buffer, off: number): [string, number] => {
    const l = b.readUInt32BE(off);
    return [b.subarray(off + 4, off + 4 + l).toString(), off + 4 + l];
  };
  on<[string, Buffer]>('EXTENDED', (name) => (name === 'statvfs@openssh.com' ? 'read' : 'alone'), async (id, name, data) => {
    if (name === 'posix-rename@openssh.com' || name === 'hardlink@openssh.com') {
      const [from, off] = strAt(data, 0);
      const [to] = strAt(data, off);
      const [a, b] = [await resolve(from, false), await resolve(to, false)];
      await (name === 'hardlink@openssh.com' ? P.link(a, b) : P.rename(a, b));
      return ok(id);
    }
    if (name === 'fsync@openssh.com') {
      const f = fileOf(data.subarray(4, 4 + data.readUInt32BE(0)));
      await cb<void>((d) => fs.fsync(f.fd, d));
      return ok(id);
    }
    if (name === 'statvfs@openssh.com') {
      const s = await P.statfs(await resolve(strAt(data, 0)[0]));
      // bsize frsize blocks bfree bavail files ffree favail fsid flag namemax
      const b = Buffer.alloc(11 * 8);
      [s.bsize, s.bsize, s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.ffree, 0, 0, 255].forEach((v, i) => b.writeBigUInt64BE(BigInt(v), i * 8));
      return sftp.extendedReply(id, b);
    }
    sftp.status(id, STATUS.OP_UNSUPPORTED);
  });

  const closeAll = (): void => {
    for (const h of handles.values()) if ('fd' in h) fs.close(h.fd, () => undefined);
    handles.clear();
  };
  sftp.on('end', closeAll);
  sftp.on('close', closeAll);
  sftp.on('error', (err: Error) => {
    log.debug('files session error', { err: err.message });
    closeAll();
  });
}
