/**
 * The layers of rdbg, checked on the resolved import graph (scripts/check-layers.sh,
 * `make lint`). Every kind of import counts: `import` with either quote, `require()`,
 * `import()`, side-effect and type-only imports.
 *
 *   src/core  <-  src/tunnel, src/kube, src/rpc, src/intercept  <-  src/cli
 *   src/      <-  daemon/root, daemon/user, manager, agent  <-  bin
 *
 * tunnel, kube, rpc and intercept are siblings: none imports another, so each
 * can be read and tested with core alone; what two of them share goes to core,
 * and what one needs from another it takes as an option from its caller.
 */
const COMPONENT = '^(daemon/root|daemon/user|manager|agent)/';

module.exports = {
  forbidden: [
    {
      name: 'src-not-to-components',
      comment: 'src/ is the shared library: it never imports a component, bin/, test/ or bench/.',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^(daemon|manager|agent|bin|test|bench)/' },
    },
    {
      name: 'components-not-to-each-other',
      comment: 'daemon/root, daemon/user, manager and agent share code only through src/.',
      severity: 'error',
      from: { path: COMPONENT },
      to: { path: COMPONENT, pathNot: '^$1/' },
    },
    {
      name: 'components-not-to-tests',
      comment: 'product code never imports test/ or bench/.',
      severity: 'error',
      from: { path: '^(daemon|manager|agent|bin)/' },
      to: { path: '^(test|bench)/' },
    },
    {
      name: 'core-imports-only-core',
      comment: 'src/core is the bottom layer: it imports nothing else of src/ but the generated types.',
      severity: 'error',
      from: { path: '^src/core/' },
      to: { path: '^src/', pathNot: '^src/(core|gen)/' },
    },
    {
      name: 'libraries-import-only-core',
      comment: 'src/tunnel, src/kube, src/rpc and src/intercept import only src/core and src/gen: not each other, not src/cli.',
      severity: 'error',
      from: { path: '^src/(tunnel|kube|rpc|intercept)/' },
      to: { path: '^src/', pathNot: '^src/($1|core|gen)/' },
    },
    {
      name: 'no-circular',
      comment: 'no import circles in the product code.',
      severity: 'error',
      from: { path: '^(src|daemon|manager|agent|bin)/', pathNot: '^src/gen/' },
      to: { circular: true },
    },
    {
      name: 'not-to-unresolvable',
      comment: 'an import the resolver cannot follow is one no other rule can check.',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
    {
      name: 'not-to-dev-dependency',
      comment: 'the published package has no devDependencies: product code cannot use them.',
      severity: 'error',
      from: { path: '^(src|daemon|manager|agent|bin)/' },
      to: { dependencyTypes: ['npm-dev'], dependencyTypesNot: ['type-only'] },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|node_modules)/' },
    moduleSystems: ['cjs', 'es6'],
    tsConfig: { fileName: 'tsconfig.json' },
    // Keep type-only imports in the graph: a type is a dependency too.
    tsPreCompilationDeps: true,
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['require', 'node', 'default'] },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
