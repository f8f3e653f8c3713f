import koffi from 'koffi';

/**
 * Raise the soft limit on open files to the hard limit. A daemon that carries
 * thousands of flows needs two descriptors for each, and the usual soft
 * limit of 1024 would refuse connections long before memory runs out.
 * Node has no setrlimit, so this goes through libc with koffi.
 */
export function raiseFileLimit(): { soft: number; hard: number } | undefined {
  if (process.platform !== 'linux' && process.platform !== 'darwin') return undefined;
  try {
    const libc = koffi.load(process.platform === 'darwin' ? 'libc.dylib' : 'libc.so.6');
    const Rlimit = koffi.struct('rdbg_rlimit', { cur: 'uint64', max: 'uint64' });
    const getrlimit = libc.func('int getrlimit(int, _Out_ rdbg_rlimit *)');
    const setrlimit = libc.func('int setrlimit(int, const rdbg_rlimit *)');
    const RLIMIT_NOFILE = process.platform === 'darwin' ? 8 : 7;
    const lim = { cur: 0, max: 0 };
    if (getrlimit(RLIMIT_NOFILE, lim) !== 0) return undefined;
    void Rlimit;
    const hard = Number(lim.max);
    const want = Math.min(hard, 1 << 20);
    if (Number(lim.cur) < want) setrlimit(RLIMIT_NOFILE, { cur: want, max: lim.max });
    getrlimit(RLIMIT_NOFILE, lim);
    return { soft: Number(lim.cur), hard: Number(lim.max) };
  } catch {
    return undefined;
  }
}
