import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The wire protocol generation. Clients and managers interoperate only when equal. */
export const PROTOCOL = 2;

function readVersion(): string {
  // dist/src/core/version.js -> package.json three levels up; src/core/version.ts two levels up.
  for (const rel of ['../../../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(join(__dirname, rel), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'rdbg' && pkg.version) return pkg.version;
    } catch {
      // try the next candidate
    }
  }
  return '0.0.0-unknown';
}

export const VERSION = readVersion();

/** The root of the installed package (where proto/ lives). */
export function packageRoot(): string {
  for (const rel of ['../../..', '../..']) {
    const dir = join(__dirname, rel);
    try {
      readFileSync(join(dir, 'proto/rdbg/v1/manager.proto'));
      return dir;
    } catch {
      // try the next candidate
    }
  }
  throw new Error('rdbg: cannot find proto/ next to the installed package');
}
