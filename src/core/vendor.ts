// @kubernetes/client-node is an ES module graph of some 2,500 files (its
// generated API and models): loading it costs about half a second of CPU in
// every process that uses it (the user daemon's connect, the CLI's injection,
// the manager's start). gRPC (@grpc/grpc-js, and protobufjs/light for the
// messages) is loaded by every CLI command and every component, some 130
// files. The build bundles each into one file (dist/vendor, Makefile `build`,
// esbuild): the Kubernetes client then loads in a third of the time, gRPC's
// bundles take a tenth off a CLI command's start and a few MB off a process
// that has just loaded them. useBundledClients() makes require() of each package find its
// bundle. Without the bundles (a build without them), the packages load as
// usual.
import { existsSync } from 'node:fs';
import Module from 'node:module';
import { join } from 'node:path';

/** Each bundled package, and its file in dist/vendor. */
export const BUNDLES: Readonly<Record<string, string>> = {
  '@kubernetes/client-node': 'client-node.js',
  '@grpc/grpc-js': 'grpc-js.js',
  'protobufjs/light': 'protobufjs-light.js',
};

/** Where the build puts a package's bundle, beside the compiled code (dist/vendor). */
export function bundlePath(pkg = '@kubernetes/client-node'): string {
  return join(__dirname, '..', '..', 'vendor', BUNDLES[pkg]);
}

type Resolve = (request: string, ...rest: unknown[]) => string;

let installed = false;

/**
 * From now on, require() of each bundled package in this process loads its
 * bundle, when the build made them all. Call it before anything loads one of
 * them: a package loaded twice (once from each place) would be two modules
 * whose objects do not know each other.
 */
export function useBundledClients(): boolean {
  if (installed) return true;
  const bundles = new Map(Object.keys(BUNDLES).map((pkg) => [pkg, bundlePath(pkg)]));
  if (![...bundles.values()].every((f) => existsSync(f))) return false;
  // As module-alias and tsconfig-paths do. node:module's registerHooks would do for require() from 22.15 on, but on 22
  // not for require.resolve, and 22.0-22.14 lack it; this covers both on every line rdbg supports.
  const m = Module as unknown as { _resolveFilename: Resolve };
  const resolve = m._resolveFilename;
  m._resolveFilename = function (this: unknown, request: string, ...rest: unknown[]): string {
    return bundles.get(request) ?? resolve.call(this, request, ...rest);
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
