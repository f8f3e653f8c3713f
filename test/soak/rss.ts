import { readFileSync } from 'node:fs';

/** Resident set size of a process in bytes (VmRSS of /proc/PID/status), or undefined once it is gone. */
export function rssBytes(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** The anonymous part of the RSS (RssAnon: the process's own memory, not the node binary's code pages it shares). */
export function rssAnonBytes(pid: number): number | undefined {
  try {
    const m = /^RssAnon:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

export interface RssSample {
  /** minutes since the soak started */
  minute: number;
  /** process name -> RSS in bytes */
  rss: Record<string, number>;
  /** process name -> RssAnon in bytes */
  anon?: Record<string, number>;
}

/** Samples every named process; a process that has gone is recorded as missing, not as 0. */
export function sampleRss(pids: Record<string, number>, minute: number): RssSample {
  const rss: Record<string, number> = {};
  const anon: Record<string, number> = {};
  for (const [name, pid] of Object.entries(pids)) {
    const v = rssBytes(pid);
    if (v !== undefined) rss[name] = v;
    const a = rssAnonBytes(pid);
    if (a !== undefined) anon[name] = a;
  }
  return { minute, rss, anon };
}
