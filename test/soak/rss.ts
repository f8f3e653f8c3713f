import { readFileSync } from 'node:fs';

/** One memory field of /proc/PID/status in bytes, or undefined once the process is gone. */
function statusBytes(pid: number, field: 'VmRSS' | 'RssAnon'): number | undefined {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Resident set size (VmRSS). */
export const rssBytes = (pid: number): number | undefined => statusBytes(pid, 'VmRSS');

/** The anonymous part of the RSS (RssAnon: the process's own memory, not the node binary's code pages it shares). */
export const rssAnonBytes = (pid: number): number | undefined => statusBytes(pid, 'RssAnon');

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
