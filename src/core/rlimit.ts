import koffi from 'koffi';

interface Libc {
  get(lim: { cur: number; max: number }): boolean;
  set(lim: { cur: number; max: number }): boolean;
}

let libc: Libc | null | undefined;

function load(): Libc | null {
  if (libc !== undefined) return libc;
  libc = null;
  if (process.platform !== 'linux' && process.platform !== 'darwin') return libc;
  try {
    const lib = koffi.load(process.platform === 'darwin' ? 'libc.dylib' : 'libc.so.6');
    koffi.struct('rdbg_rlimit', { cur: 'uint64', max: 'uint64' });
    const getrlimit = lib.func('int getrlimit(int, _Out_ rdbg_rlimit *)');
    const setrlimit = lib.func('int setrlimit(int, const rdbg_rlimit *)');
    const RLIMIT_NOFILE = process.platform === 'darwin' ? 8 : 7;
    libc = {
      get: (lim) => getrlimit(RLIMIT_NOFILE, lim) === 0,
      set: (lim) => setrlimit(RLIMIT_NOFILE, lim) === 0,
    };
  } catch {
    // no libc to call: keep the defaults
  }
  return libc;
}

/**
 * Raise the soft limit on open files to the hard limit. A daemon that carries
 * thousands of flows needs two descriptors for each, and the usual soft
 * limit of 1024 would refuse connections long before memory runs out.
 * Node has no setrlimit, so this goes through libc with koffi.
 */
export function raiseFileLimit(): { soft: number; hard: number } | undefined {
  const c = load();
  const lim = { cur: 0, max: 0 };
  if (!c || !c.get(lim)) return undefined;
  const want = Math.min(Number(lim.max), 1 << 20);
  if (Number(lim.cur) < want) c.set({ cur: want, max: lim.max });
  c.get(lim);
  return { soft: Number(lim.cur), hard: Number(lim.max) };
}

/** The soft limit on open files (1024, the common default, where it cannot be read). */
export function openFileLimit(): number {
  const lim = { cur: 0, max: 0 };
  const c = load();
  return c && c.get(lim) ? Math.min(Number(lim.cur), 1 << 20) : 1024;
}
