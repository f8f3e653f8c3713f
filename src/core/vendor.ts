// @kubernetes/client-node is an ES module graph of some 2,500 files (its
// generated API and models): loading it costs about half a second of CPU in
// every process that uses it (the user daemon's connect, the CLI's injection,
// the manager's start). The build bundles it into one file
// (dist/vendor/client-node.js, Makefile `build`, esbuild), which loads in a
// third of that; useBundledClients() makes require() of the package find the
// bundle. Without the bundle (a build without it), the package loads as usual.
import { existsSync } from 'node:fs';
import Module from 'node:module';
import { join } from 'node:path';

const PACKAGE = '@kubernetes/client-node';

/** Where the build puts the bundle, beside the compiled code (dist/vendor). */
export function bundlePath(): string {
  return join(__dirname, '..', '..', 'vendor', 'client-node.js');
}

type Resolve = (request: string, ...rest: unknown[]) => string;

let installed = false;

/** From now on, require('@kubernetes/client-node') in this process loads the bundle, when there is one. */
export function useBundledClients(): boolean {
  const bundle = bundlePath();
  if (installed) return true;
  if (!existsSync(bundle)) return false;
  // As module-alias and tsconfig-paths do. node:module's registerHooks would do for require() from 22.15 on, but on 22
  // not for require.resolve, and 22.0-22.14 lack it; this covers both on every line rdbg supports.
  const m = Module as unknown as { _resolveFilename: Resolve };
  const resolve = m._resolveFilename;
  m._resolveFilename = function (this: unknown, request: string, ...rest: unknown[]): string {
    return request === PACKAGE ? bundle : resolve.call(this, request, ...rest);
  };
  installed = true;
  quietDependencyDeprecation('DEP0169');
  return true;
}

/**
 * node-fetch 2, the Kubernetes client's HTTP client, calls url.parse() for
 * every request; Node 24 and later warn about it (DEP0169) on the user's
 * terminal, about code that is neither theirs nor ours. That one warning is
 * dropped; every other warning is printed as Node prints it.
 */
function quietDependencyDeprecation(code: string): void {
  const printers = process.listeners('warning');
  process.removeAllListeners('warning');
  process.on('warning', (w: Error & { code?: string }) => {
    if (w.code === code) return;
    for (const p of printers) p.call(process, w);
  });
}
