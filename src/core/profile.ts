import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { join } from 'node:path';

/**
 * RDBG_CPU_PROFILE=DIR makes a daemon record a CPU profile from start to
 * quit, written as DIR/<component>-<pid>.cpuprofile (open it in Chrome's
 * DevTools). Node refuses --cpu-prof in NODE_OPTIONS, hence this.
 */
let session: Session | undefined;

export function startProfile(): void {
  if (!process.env.RDBG_CPU_PROFILE || session) return;
  session = new Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.start');
}

export function stopProfile(component: string): Promise<void> {
  const s = session;
  if (!s) return Promise.resolve();
  session = undefined;
  return new Promise((resolve) =>
    s.post('Profiler.stop', (err, res) => {
      if (!err) writeFileSync(join(process.env.RDBG_CPU_PROFILE!, `${component}-${process.pid}.cpuprofile`), JSON.stringify(res.profile));
      resolve();
    }),
  );
}
