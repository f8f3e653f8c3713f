import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as yaml from 'js-yaml';
import { COMMANDS, type CommandSpec } from '../../src/cli/spec';

// The CLI as an installed rdbg runs: the built binary through its shebang,
// under the names a user and kubectl call it by (rdbg, kubectl-rdbg,
// kubectl_complete-rdbg), with no daemon running (a fresh RDBG_HOME).

const root = join(__dirname, '../../..');
const BIN = join(root, 'dist/bin/rdbg.js');
const scratch = mkdtempSync(join(tmpdir(), 'rdbg-cli-'));
const binDir = join(scratch, 'bin');
spawnSync('mkdir', ['-p', binDir, join(scratch, 'home'), join(scratch, 'work')]);
for (const name of ['rdbg', 'kubectl-rdbg', 'kubectl_complete-rdbg']) symlinkSync(BIN, join(binDir, name));
const ENV = { ...process.env, PATH: `${binDir}:${process.env.PATH}`, RDBG_HOME: join(scratch, 'home'), KUBECONFIG: join(scratch, 'no-kubeconfig') };
t.teardown(() => rmSync(scratch, { recursive: true, force: true }));
const VERSION = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;

function rdbg(args: string[], name = 'rdbg'): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(name, args, { env: ENV, cwd: join(scratch, 'work'), encoding: 'utf8', timeout: 20_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const STACK = /\n\s+at .+:\d+:\d+\)?/;

/** Every command path: "connect", "manager install", and the hidden components too. */
function paths(cmds: Record<string, CommandSpec>, prefix: string[] = []): string[][] {
  return Object.entries(cmds).flatMap(([name, spec]) => [[...prefix, name], ...(spec.sub ? paths(spec.sub, [...prefix, name]) : [])]);
}

t.test('every command and subcommand answers --help and -h with its usage, exit 0', async (t) => {
  const all = paths(COMMANDS);
  t.ok(all.length >= 19, `${all.length} commands`);
  for (const path of all) {
    for (const flag of ['--help', '-h']) {
      const r = rdbg([...path, flag]);
      t.equal(r.code, 0, `rdbg ${path.join(' ')} ${flag}: ${r.stderr}`);
      t.match(r.stdout, `Usage:\n  rdbg ${path.join(' ')}`, `rdbg ${path.join(' ')} ${flag} prints its usage`);
      t.equal(r.stderr, '', 'nothing on stderr');
    }
  }
  // --help after other arguments, and before them.
  t.match(rdbg(['intercept', 'echo', '--port', '8080', '--help']).stdout, 'Usage:\n  rdbg intercept');
  t.match(rdbg(['-h']).stdout, /Commands:[\s\S]*intercept/);
  // The commands list names no hidden one.
  t.notMatch(rdbg(['help']).stdout, /daemon-root|daemon-user|__complete/);
});

t.test('--help never acts: a component given --help starts nothing', async (t) => {
  // manager serve would listen here and never exit; daemon-root would change the network.
  const port = await new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
  const serve = rdbg(['manager', 'serve', '--listen', `127.0.0.1:${port}`, '--help']);
  t.equal(serve.code, 0, 'exits at once');
  t.match(serve.stdout, 'Usage:\n  rdbg manager serve');
  const free = await new Promise<boolean>((resolve) => {
    const s = createServer().once('error', () => resolve(false)).listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
  t.ok(free, 'the port was never taken');
  const root = rdbg(['daemon-root', '--user-socket', '/nonexistent', '-h']);
  t.equal(root.code, 0);
  t.match(root.stdout, 'Usage:\n  rdbg daemon-root');
  // An intercept -- COMMAND's own --help belongs to the command, not to rdbg.
  const intercept = rdbg(['intercept', 'echo', '--port', '8080', '--', 'node', '--help']);
  t.equal(intercept.code, 1, 'rdbg tries the intercept');
  t.match(intercept.stderr, /not connected|not running/);
});

t.test('an --env-file among rdbg\'s arguments is rdbg\'s, not Node\'s', async (t) => {
  // Node reads --env-file anywhere before a "--" and exits when the file is missing; the shebang's "--" stops it.
  const r = rdbg(['intercept', 'echo', '--port', '8080', '--env-file', join(scratch, 'not-yet-written.env')]);
  t.equal(r.code, 1, r.stderr);
  t.match(r.stderr, /^rdbg: /, 'rdbg answers');
  t.notMatch(r.stderr, /not found/, "node's own error is not seen");
});

t.test('rdbg help COMMAND is the command\'s --help; an unknown one is a usage error', async (t) => {
  t.equal(rdbg(['help', 'intercept']).stdout, rdbg(['intercept', '--help']).stdout);
  t.equal(rdbg(['help', 'manager', 'install']).stdout, rdbg(['manager', 'install', '--help']).stdout);
  t.match(rdbg(['help', 'manager']).stdout, /install[\s\S]*upgrade[\s\S]*serve/, 'a command with subcommands lists them');
  const bad = rdbg(['help', 'nosuch']);
  t.equal(bad.code, 2);
  t.match(bad.stderr, 'unknown command "nosuch"');
  t.match(bad.stderr, /hint: the commands: connect, status, intercept/);
});

t.test('--version and version -o json|yaml name this package\'s version', async (t) => {
  const v = rdbg(['--version']);
  t.equal(v.code, 0);
  t.equal(v.stdout.trim(), `rdbg ${VERSION}`);
  const json = rdbg(['version', '--client', '-o', 'json']);
  t.equal(json.code, 0, json.stderr);
  const data = JSON.parse(json.stdout) as Record<string, unknown>;
  t.equal(data.client_version, VERSION);
  t.type(data.protocol, 'number');
  t.equal(data.node, process.versions.node, 'the Node the shebang found (this one, first on PATH)');
  t.same(yaml.load(rdbg(['version', '--client', '-o', 'yaml']).stdout), data, 'yaml has the same fields');
  // Without --client and without a daemon: this rdbg's version, and no manager.
  const noDaemon = JSON.parse(rdbg(['version', '-o', 'json']).stdout) as Record<string, unknown>;
  t.equal(noDaemon.client_version, VERSION);
  t.notOk(noDaemon.manager_version, 'no manager version without a session');
});

t.test('exit codes: 2 for usage errors, 1 for failures; one sentence and a hint, no stack', async (t) => {
  const cases: [string[], number, RegExp][] = [
    [['nosuch'], 2, /^rdbg: unknown command "nosuch"\n  hint: /],
    [['manager', 'nosuch'], 2, /^rdbg: unknown command "manager nosuch"\n  hint: the commands: install, upgrade, serve/],
    [['status', '--nosuch'], 2, /^rdbg: status: unknown flag "--nosuch"\n  hint: run "rdbg status --help"/],
    [['intercept', 'echo', '--port'], 2, /^rdbg: intercept: --port needs a value\n/],
    [['list', '--all=yes'], 2, /^rdbg: list: --all takes no value\n/],
    [['status', 'extra'], 2, /^rdbg: status: unexpected argument "extra"\n/],
    [['status', '-o', 'xml'], 2, /^rdbg: status: -o "xml" is not one of json, yaml\n/],
    [['list', '-o', 'xml'], 2, /^rdbg: list: -o "xml" is not one of json, yaml, wide\n/],
    [['version', '-o', 'wide'], 2, /-o "wide" is not one of json, yaml/],
    [['manager', 'install', '--dry-run', '-o', 'xml'], 2, /-o "xml" is not one of yaml, json/],
    [['manager', 'install', '--dry-run', '--grant-namespace', 'team-a'], 2, /--grant-namespace says where a grant holds\n  hint: add --grant-user USER or --grant-group GROUP/],
    [['manager', 'install', '--dry-run', '--grant-user', 'a', '--grant-namespace', 'rdbg'], 2, /--grant-namespace rdbg is the manager's namespace/],
    [['manager', 'install', '--dry-run', '--grant-user', 'a', '--grant-namespace', 'Team_A'], 2, /"Team_A" is not a valid namespace name/],
    [['connect', '--dns', 'bogus'], 2, /--dns "bogus" is not one of auto, resolv.conf, none/],
    [['completion', 'tcsh'], 2, /completion takes one shell: bash, zsh, fish/],
    [['intercept'], 2, /intercept takes exactly one/],
    [['leave', 'echo'], 1, /^rdbg: leave: the rdbg daemon is not running\n  hint: run "rdbg connect" first/],
    [['list'], 1, /not running/],
  ];
  for (const [args, code, err] of cases) {
    const r = rdbg(args);
    t.equal(r.code, code, `rdbg ${args.join(' ')} exits ${code}`);
    t.match(r.stderr, err, `rdbg ${args.join(' ')}: ${r.stderr}`);
    t.notMatch(r.stderr, STACK, 'no stack trace');
    t.equal(r.stdout, '', 'nothing on stdout');
  }
  const debug = rdbg(['status', '--nosuch', '--debug']);
  t.equal(debug.code, 2, '--debug keeps the exit code');
  t.match(debug.stderr, STACK, '--debug shows the stack');
});

t.test('a reader that goes away ends the output quietly (no EPIPE trace)', async (t) => {
  const child = spawn('rdbg', ['completion', 'bash'], { env: ENV, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.destroy(); // closed before rdbg writes: every write meets EPIPE
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  t.equal(stderr, '', 'nothing on stderr');
  t.equal(code, 141, 'the exit code of a program stopped by SIGPIPE');
});

t.test('manager install --dry-run prints the same objects as yaml and json', async (t) => {
  const y = rdbg(['manager', 'install', '--dry-run']);
  t.equal(y.code, 0, y.stderr);
  const fromYaml = yaml.loadAll(y.stdout);
  const j = rdbg(['manager', 'install', '--dry-run', '-o', 'json']);
  t.equal(j.code, 0, j.stderr);
  const fromJson = JSON.parse(j.stdout) as { kind: string; items: unknown[] };
  t.equal(fromJson.kind, 'List', 'json is one kubectl List');
  // Each run makes its own webhook certificate: everything else is the same.
  const fresh = new Set(['ca.crt', 'tls.crt', 'tls.key', 'caBundle', 'rdbg.dev/tls-checksum']);
  const masked = (o: unknown): unknown => JSON.parse(JSON.stringify(o, (k, v: unknown) => (fresh.has(k) ? 'fresh' : v)));
  t.same(masked(fromJson.items), masked(fromYaml), 'the same objects');
  const kinds = fromYaml.map((o) => (o as { kind: string }).kind);
  for (const k of ['Namespace', 'ServiceAccount', 'ClusterRole', 'Deployment', 'Service', 'MutatingWebhookConfiguration']) t.ok(kinds.includes(k), `has a ${k}`);
});

t.test('completion scripts pass their shells\' own syntax checks', async (t) => {
  for (const [shell, check] of [['bash', ['-n']], ['zsh', ['-n']], ['fish', ['-n']]] as const) {
    const r = rdbg(['completion', shell]);
    t.equal(r.code, 0, r.stderr);
    const file = join(scratch, `completion.${shell}`);
    writeFileSync(file, r.stdout);
    const c = spawnSync(shell, [...check, file], { encoding: 'utf8' });
    t.equal(c.status, 0, `${shell} -n: ${c.stderr}`);
  }
});

/** What bash offers for the words typed (the last one being completed), through the script rdbg prints. */
function bashComplete(words: string[], cwdFiles: string[] = []): string[] {
  const script = join(scratch, 'completion.bash');
  writeFileSync(script, rdbg(['completion', 'bash']).stdout);
  for (const f of cwdFiles) writeFileSync(join(scratch, 'work', f), '');
  const q = (w: string): string => `'${w.replace(/'/g, `'\\''`)}'`;
  const cmd = `source ${q(script)}; COMP_WORDS=(${words.map(q).join(' ')}); COMP_CWORD=${words.length - 1}; ` +
    `_rdbg; printf '%s\\n' "\${COMPREPLY[@]}"; complete -p ${words[0]}`;
  const r = spawnSync('bash', ['-c', cmd], { env: ENV, cwd: join(scratch, 'work'), encoding: 'utf8' });
  const lines = r.stdout.split('\n').filter(Boolean);
  const registered = lines.pop() ?? '';
  if (!registered.includes('-F _rdbg')) throw new Error(`the script registers no completion for ${words[0]}: ${registered} ${r.stderr}`);
  return lines.sort();
}

t.test('bash completes commands, subcommands, flags and choices through compgen', async (t) => {
  t.same(bashComplete(['rdbg', 'inter']), ['intercept']);
  t.same(bashComplete(['rdbg', 'l']), ['leave', 'list']);
  t.notOk(bashComplete(['rdbg', 'd']).includes('daemon-root'), 'hidden commands are not offered');
  t.same(bashComplete(['rdbg', 'manager', '']), ['install', 'serve', 'upgrade']);
  t.same(bashComplete(['rdbg', 'status', '-o', '']), ['json', 'yaml']);
  t.same(bashComplete(['rdbg', 'list', '--output', 'w']), ['wide']);
  t.same(bashComplete(['rdbg', 'connect', '--dns', '']), ['auto', 'none', 'resolv.conf']);
  const flags = bashComplete(['rdbg', 'intercept', 'echo', '--']);
  for (const f of ['--port', '--header', '--path-prefix', '--env-file', '--help']) t.ok(flags.includes(f), `offers ${f}`);
  t.same(bashComplete(['rdbg', 'intercept', 'echo', '--env-file', 'ap'], ['app.env', 'api.env', 'other']), ['api.env', 'app.env'], 'file names for a file flag');
  t.same(bashComplete(['rdbg', 'intercept', 'echo', '--port', '']), [], 'no file names for a port');
  // No cluster reachable: a name completion offers nothing, quietly.
  t.same(bashComplete(['rdbg', 'intercept', '']), []);
  t.same(bashComplete(['kubectl-rdbg', 'qu']), ['quit'], 'kubectl-rdbg completes too');
});

t.test('fish completes through its own complete -C', async (t) => {
  const script = join(scratch, 'completion.fish');
  writeFileSync(script, rdbg(['completion', 'fish']).stdout);
  const r = spawnSync('fish', ['--no-config', '-c', `source ${script}; complete -C 'rdbg manager '`], { env: ENV, encoding: 'utf8' });
  t.same(r.stdout.split('\n').filter(Boolean).map((l) => l.split('\t')[0]).sort(), ['install', 'serve', 'upgrade'], r.stderr);
});

t.test('kubectl-rdbg is rdbg; kubectl_complete-rdbg answers cobra\'s __complete', async (t) => {
  const v = rdbg(['--version'], 'kubectl-rdbg');
  t.equal(v.stdout.trim(), `rdbg ${VERSION}`);
  t.match(rdbg(['intercept', '--help'], 'kubectl-rdbg').stdout, 'Usage:\n  rdbg intercept');
  const c = rdbg(['inter'], 'kubectl_complete-rdbg');
  t.equal(c.code, 0);
  t.equal(c.stdout, 'intercept\n:4\n', 'candidates, then the directive (4: no file names)');
  t.equal(rdbg(['intercept', 'x', '--env-file', ''], 'kubectl_complete-rdbg').stdout, ':0\n', 'directive 0: file names');
});

/** A loopback port that something holds for the test's length. */
async function heldPort(t: { teardown: (f: () => void) => void }): Promise<number> {
  const s = createServer().listen(0, '127.0.0.1');
  await new Promise((r) => s.once('listening', r));
  t.teardown(() => s.close());
  return (s.address() as { port: number }).port;
}

t.test('manager serve: an address it cannot listen on is one sentence and a hint', async (t) => {
  const notHere = rdbg(['manager', 'serve', '--listen', '203.0.113.1:18081']);
  t.equal(notHere.code, 1);
  t.equal(notHere.stderr, 'rdbg: --listen 203.0.113.1:18081: that is not an address of this host\n' +
    "  hint: give --listen one of this host's addresses (ip -brief address), or 0.0.0.0:18081\n", 'nothing else: no grpc-js line, no stack');
  const held = await heldPort(t);
  const inUse = rdbg(['manager', 'serve', '--listen', `127.0.0.1:${held}`]);
  t.equal(inUse.code, 1);
  t.match(inUse.stderr, new RegExp(`^rdbg: --listen 127.0.0.1:${held}: the port is in use\n  hint: stop what listens there`));
  t.notMatch(inUse.stderr, STACK);
  const data = rdbg(['manager', 'serve', '--listen', '127.0.0.1:0', '--data-listen', `127.0.0.1:${held}`]);
  t.equal(data.code, 1);
  t.match(data.stderr, `rdbg: --data-listen 127.0.0.1:${held}: the port is in use`);
});

t.test('connect to a manager that is not there: the reason in words, not grpc-js text', async (t) => {
  const closed = await new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
  const env = { ...ENV, RDBG_HOME: join(scratch, 'home-refused') };
  t.teardown(() => spawnSync('rdbg', ['quit'], { env }));
  const r = spawnSync('rdbg', ['connect', '--manager', `127.0.0.1:${closed}`, '--socks', '127.0.0.1:0'], { env, encoding: 'utf8', timeout: 60_000 });
  t.equal(r.status, 1, r.stderr);
  t.match(r.stderr, `rdbg: cannot reach the traffic manager at 127.0.0.1:${closed}: connection refused\n  hint: `);
  t.notMatch(r.stderr, /No connection established|Resolution note|Last error/);
  t.notMatch(r.stderr, STACK);
});

t.test('gather-logs without a session or a cluster: an archive that says what it lacks', async (t) => {
  const out = join(scratch, 'logs.tar.gz');
  const r = rdbg(['gather-logs', '--no-cluster', '-o', out]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, `Wrote ${out}`);
  const list = spawnSync('tar', ['-tzf', out], { encoding: 'utf8' });
  t.equal(list.status, 0, 'the system tar reads it');
  t.same(list.stdout.split('\n').filter(Boolean).sort(), ['index.json', 'laptop/versions.json']);
  const index = JSON.parse(spawnSync('tar', ['-xzOf', out, 'index.json'], { encoding: 'utf8' }).stdout) as { missing: { what: string; why: string }[] };
  t.same(index.missing, [{ what: 'status', why: 'no user daemon is running' }]);
});
