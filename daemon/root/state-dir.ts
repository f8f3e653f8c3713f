import { chmodSync, lstatSync, mkdirSync, realpathSync, type Stats } from 'node:fs';
import { dirname, isAbsolute, normalize } from 'node:path';
import { Codes, RdbgError } from '../../src/core/errors';

/**
 * Checks on everything root reads or writes on a caller's behalf. A directory
 * that someone else could write, or a symlink, would let an unprivileged user
 * choose what root replays, overwrites or chowns.
 */

function unsafe(path: string, why: string): RdbgError {
  return new RdbgError(Codes.PERMISSION, `refusing to use ${path}: ${why}`, `remove it; the root daemon recreates it owned by root with mode 0700`);
}

function checkRootDir(path: string, st: Stats, forbidden: number): void {
  if (st.isSymbolicLink()) throw unsafe(path, 'it is a symlink');
  if (!st.isDirectory()) throw unsafe(path, 'it is not a directory');
  if (st.uid !== 0) throw unsafe(path, `it is owned by uid ${st.uid}, not root`);
  if ((st.mode & forbidden) !== 0) throw unsafe(path, `its mode is ${(st.mode & 0o777).toString(8)}: others may write into it`);
}

function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/**
 * The base directory (e.g. /var/run/rdbg): root-owned, writable by root only,
 * traversable by users (their sockets live in it). Its parent must be as safe.
 */
export function ensureBaseDir(base: string): void {
  const parent = realpathSync(dirname(base));
  checkRootDir(parent, lstatSync(parent), 0o022);
  if (!lstatOrUndefined(base)) mkdirSync(base, { mode: 0o755 });
  const st = lstatSync(base);
  checkRootDir(base, st, 0o022);
  // Older versions made it 0700: users must be able to reach their sockets in it.
  if ((st.mode & 0o055) !== 0o055) chmodSync(base, 0o755);
}

/** One session's directory inside the base: root only. */
export function ensureSessionDir(dir: string): void {
  if (!lstatOrUndefined(dir)) mkdirSync(dir, { mode: 0o700 });
  checkRootDir(dir, lstatSync(dir), 0o077);
}

/**
 * The user daemon's socket named on the command line: an absolute, normal
 * path; when `mustExist`, a socket (not a symlink) owned by the calling uid.
 */
export function validateUserSocket(path: string, uid: number, mustExist: boolean): void {
  if (!path) throw new RdbgError(Codes.BAD_ARGUMENT, 'the root daemon needs --user-socket');
  if (!isAbsolute(path) || normalize(path) !== path) throw new RdbgError(Codes.BAD_ARGUMENT, `--user-socket ${path} must be an absolute path in normal form`);
  const st = lstatOrUndefined(path);
  if (!st) {
    if (mustExist) throw new RdbgError(Codes.BAD_ARGUMENT, `--user-socket ${path} does not exist`, 'is the user daemon running?');
    return;
  }
  if (!st.isSocket()) throw new RdbgError(Codes.PERMISSION, `--user-socket ${path} is not a socket`);
  if (st.uid !== uid) throw new RdbgError(Codes.PERMISSION, `--user-socket ${path} belongs to uid ${st.uid}, not to the caller (uid ${uid})`);
}
