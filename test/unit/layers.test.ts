import t from 'tap';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

// The layer check (`make lint`) on a scratch copy of the product tree: each
// kind of violation planted alone must fail it, naming the rule it breaks.

const root = join(__dirname, '../../..');
const scratch = mkdtempSync(join(tmpdir(), 'rdbg-layers-'));
for (const p of ['src', 'daemon', 'manager', 'agent', 'bin', 'scripts', '.dependency-cruiser.cjs', 'tsconfig.json', 'package.json']) {
  cpSync(join(root, p), join(scratch, p), { recursive: true });
}
symlinkSync(join(root, 'node_modules'), join(scratch, 'node_modules'));
t.teardown(() => rmSync(scratch, { recursive: true, force: true }));

function check(): { status: number | null; output: string } {
  const r = spawnSync('bash', ['scripts/check-layers.sh'], { cwd: scratch, encoding: 'utf8' });
  return { status: r.status, output: r.stdout + r.stderr };
}

function plant(files: Record<string, string>): () => void {
  for (const [file, text] of Object.entries(files)) {
    mkdirSync(dirname(join(scratch, file)), { recursive: true });
    writeFileSync(join(scratch, file), text);
  }
  return () => {
    for (const file of Object.keys(files)) rmSync(join(scratch, file));
  };
}

interface Case {
  what: string;
  files: Record<string, string>;
  /** The report line the check must print: `error RULE: FROM → TO`. */
  report: RegExp;
}

const cases: Case[] = [
  {
    what: 'a double-quoted import of a component from src/',
    files: { 'src/core/planted.ts': 'import { ROOT_USAGE } from "../../daemon/root/main";\nexport const usage = ROOT_USAGE;\n' },
    report: /error src-not-to-components: src\/core\/planted\.ts → daemon\/root\/main\.ts/,
  },
  {
    what: 'a require() of a component from src/',
    files: { 'src/kube/planted.ts': "export const agent = require('../../agent/main');\n" },
    report: /error src-not-to-components: src\/kube\/planted\.ts → agent\/main\.ts/,
  },
  {
    what: 'an import() of a component from src/',
    files: { 'src/tunnel/planted.ts': "export const load = () => import('../../manager/main');\n" },
    report: /error src-not-to-components: src\/tunnel\/planted\.ts → manager\/main\.ts/,
  },
  {
    what: 'a side-effect import of a component from src/',
    files: { 'src/cli/planted.ts': "import '../../daemon/user/main';\n" },
    report: /error src-not-to-components: src\/cli\/planted\.ts → daemon\/user\/main\.ts/,
  },
  {
    what: 'a type-only import of a component from src/',
    files: { 'src/rpc/planted.ts': "import type * as manager from '../../manager/main';\nexport type Manager = typeof manager;\n" },
    report: /error src-not-to-components: src\/rpc\/planted\.ts → manager\/main\.ts/,
  },
  {
    what: 'src/ importing test/',
    files: { 'test/planted-helper.ts': 'export const x = 1;\n', 'src/intercept/planted.ts': "export { x } from '../../test/planted-helper';\n" },
    report: /error src-not-to-components: src\/intercept\/planted\.ts → test\/planted-helper\.ts/,
  },
  {
    what: 'daemon/root importing daemon/user',
    files: { 'daemon/root/planted.ts': "import * as user from '../user/main';\nexport { user };\n" },
    report: /error components-not-to-each-other: daemon\/root\/planted\.ts → daemon\/user\/main\.ts/,
  },
  {
    what: 'daemon/user importing daemon/root',
    files: { 'daemon/user/planted.ts': 'export const root = require("../root/main");\n' },
    report: /error components-not-to-each-other: daemon\/user\/planted\.ts → daemon\/root\/main\.ts/,
  },
  {
    what: 'manager importing agent',
    files: { 'manager/planted.ts': "import * as agent from '../agent/main';\nexport { agent };\n" },
    report: /error components-not-to-each-other: manager\/planted\.ts → agent\/main\.ts/,
  },
  {
    what: 'a component importing bench/',
    files: { 'bench/planted.ts': 'export const x = 1;\n', 'agent/planted.ts': "import '../bench/planted';\n" },
    report: /error components-not-to-tests: agent\/planted\.ts → bench\/planted\.ts/,
  },
  {
    what: 'src/core importing src/cli',
    files: { 'src/core/planted.ts': "import { main } from '../cli/main';\nexport const run = main;\n" },
    report: /error core-imports-only-core: src\/core\/planted\.ts → src\/cli\/main\.ts/,
  },
  {
    what: 'src/core importing src/tunnel',
    files: { 'src/core/planted.ts': "import '../tunnel/messages';\n" },
    report: /error core-imports-only-core: src\/core\/planted\.ts → src\/tunnel\/messages\.ts/,
  },
  {
    what: 'src/tunnel importing src/cli',
    files: { 'src/tunnel/planted.ts': "import { parse } from '../cli/args';\nexport const p = parse;\n" },
    report: /error libraries-import-only-core: src\/tunnel\/planted\.ts → src\/cli\/args\.ts/,
  },
  {
    what: 'src/tunnel importing its sibling src/kube',
    files: { 'src/tunnel/planted.ts': "import '../kube/config';\n" },
    report: /error libraries-import-only-core: src\/tunnel\/planted\.ts → src\/kube\/config\.ts/,
  },
  {
    what: 'a cycle in manager/',
    files: {
      'manager/planted-a.ts': "import { b } from './planted-b';\nexport const a = (): number => b() + 1;\n",
      'manager/planted-b.ts': "import { a } from './planted-a';\nexport const b = (): number => a() - 1;\n",
    },
    report: /error no-circular: manager\/planted-[ab]\.ts → \s*manager\/planted-[ab]\.ts →\s*manager\/planted-[ab]\.ts/,
  },
  {
    what: 'a devDependency in product code',
    files: { 'daemon/user/planted.ts': "import fc from 'fast-check';\nexport const arb = fc.nat();\n" },
    report: /error not-to-dev-dependency: daemon\/user\/planted\.ts → \S*node_modules\/fast-check\//,
  },
  {
    what: 'an import that does not resolve',
    files: { 'manager/planted.ts': "import './no-such-module';\n" },
    report: /error not-to-unresolvable: manager\/planted\.ts → \.\/no-such-module/,
  },
];

t.test('the product tree as it is passes', async (t) => {
  const r = check();
  t.equal(r.status, 0, r.output);
  t.match(r.output, /no dependency violations found/);
});

for (const c of cases) {
  t.test(`fails on ${c.what}`, async (t) => {
    const unplant = plant(c.files);
    try {
      const r = check();
      t.not(r.status, 0, 'the check fails');
      t.match(r.output, c.report, 'and names the rule and the import');
    } finally {
      unplant();
    }
  });
}
