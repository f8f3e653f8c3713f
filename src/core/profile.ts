import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { join } from 'node:path';

/**
 * RDBG_CPU_PROFILE=DIR makes a daemon record a CPU profile from start to
 * quit, written as DIR/<component>-<pid>.cpuprofile (open it in Chrome's
 * DevTools). Node refuses --cpu-prof in NODE_OPTIONS, hence this.
 */
let session: { inspector: Session; dir: string } | undefined;

/** Starts recording when dir is set (the process's cpuProfile setting). */
export function startProfile(dir: string | undefined): void {
  if (!dir || session) return;
  const inspector = new Session();
  inspector.connect();
  inspector.post('Profiler.enable');
  inspector.post('Profiler.start');
  session = { inspector, dir };
}

export function stopProfile(component: string): Promise<void> {
  const s = session;
  if (!s) return Promise.resolve();
  session = undefined;
  return new Promise((resolve) =>
    s.inspector.post('Profiler.stop', (err, res) => {
      if (!err) writeFileSync(join(s.dir, `${component}-${process.pid}.cpuprofile`), JSON.stringify(res.profile));
      resolve();
    }),
  );
}
