// The configuration table: typed parsing, clear errors, and the table against the code that reads it.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { COMMAND_VARIABLES, ConfigError, SYSTEM_VARIABLES, VARIABLES, bool, duration, list, readConfig, traceList, wholeNumber } from '../../src/core/config';
import { Codes } from '../../src/core/errors';
import { TRACE_CATEGORIES } from '../../src/core/log';
import { KubeCodes } from '../../src/kube/apply';
import { AgentCodes } from '../../agent/errors';
import { DnsCodes } from '../../daemon/root/dns/dns-errors';

const ROOT = join(__dirname, '../../..');
const PRODUCT = ['src', 'daemon', 'manager', 'agent', 'bin'];

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (p === join(ROOT, 'src/gen')) return [];
    return statSync(p).isDirectory() ? files(p) : /\.(ts|md)$/.test(name) ? [p] : [];
  });
}
const sources = PRODUCT.flatMap((d) => files(join(ROOT, d))).map((p) => ({ path: p.slice(ROOT.length + 1), text: readFileSync(p, 'utf8') }));

t.test('values are typed; unset or empty is the default', async (t) => {
  const c = readConfig('user', { RDBG_RAW_FLOWS_MAX: '0', RDBG_LOG_LEVEL: 'debug', RDBG_TRACE: 'dns, tun', RDBG_HOME: '/tmp/h' });
  t.equal(c.rawFlowsMax, 0);
  t.equal(c.logLevel, 'debug');
  t.same(c.trace, ['dns', 'tun'], 'a list, blanks dropped');
  t.equal(c.runtimeDir, '/tmp/h', 'RDBG_HOME wins');
  t.equal(readConfig('user', { XDG_RUNTIME_DIR: '/run/user/7' }).runtimeDir, '/run/user/7/rdbg', 'then XDG_RUNTIME_DIR');
  const a = readConfig('agent', {});
  t.equal(a.agentToken, '');
  t.same(a.agentEnv, []);
  t.equal(readConfig('manager', {}).agentPullPolicy, 'IfNotPresent');
  t.equal(readConfig('root', {}).tunReader, 'event-loop');
  t.equal(readConfig('root', { RDBG_TUN_READER: '' }).tunReader, 'event-loop', 'empty is unset');
  t.notOk('rawFlowsMax' in readConfig('agent', { RDBG_RAW_FLOWS_MAX: 'lots' }), 'a process reads only its own variables (and is not stopped by another\'s)');
});

t.test('a malformed value is an error naming the variable and what it takes, never NaN', async (t) => {
  t.throws(() => readConfig('user', { RDBG_RAW_FLOWS_MAX: 'lots' }), { name: 'ConfigError', code: Codes.BAD_ARGUMENT, message: 'RDBG_RAW_FLOWS_MAX="lots" is not valid: it takes a whole number from 0 to 1000000' });
  t.throws(() => readConfig('user', { RDBG_RAW_FLOWS_MAX: '-1' }), /RDBG_RAW_FLOWS_MAX="-1" is not valid/);
  t.throws(() => readConfig('root', { RDBG_TUN_READER: 'thread' }), /RDBG_TUN_READER="thread" is not valid: it takes one of event-loop, poll/);
  t.throws(() => readConfig('cli', { RDBG_LOG_LEVEL: 'verbose' }), /one of debug, info, warn, error/);
  t.throws(() => readConfig('agent', { RDBG_TRACE: 'dns,bogus' }), /RDBG_TRACE="dns,bogus" is not valid: it takes all or a comma-separated list of rootd, userd/);
  t.throws(() => readConfig('manager', { RDBG_AGENT_PULL_POLICY: 'always' }), /one of Always, IfNotPresent, Never/);
  const e = new ConfigError('RDBG_X', 'y', 'a number');
  t.match(e.hint, /set RDBG_X to a number, or unset it/);
  t.throws(() => traceList('nope', '--trace'), { message: '--trace "nope" is not valid: it takes all or a comma-separated list of ' + TRACE_CATEGORIES.join(', ') }, 'a flag reads as a flag');
});

t.test('the parsers', async (t) => {
  t.equal(wholeNumber(0, 10, '0-10')('7', 'N'), 7);
  t.throws(() => wholeNumber(0, 10, '0-10')('11', 'N'));
  t.throws(() => wholeNumber(0, 10, '0-10')('1.5', 'N'));
  t.throws(() => wholeNumber(0, 10, '0-10')(' 1', 'N'));
  t.equal(bool('YES', 'B'), true);
  t.equal(bool('0', 'B'), false);
  t.throws(() => bool('maybe', 'B'), /B="maybe" is not valid: it takes one of 1, true/);
  t.equal(duration('250ms', 'D'), 250);
  t.equal(duration('1.5s', 'D'), 1500);
  t.equal(duration('2m', 'D'), 120_000);
  t.equal(duration('1h', 'D'), 3_600_000);
  t.equal(duration('40', 'D'), 40, 'plain milliseconds');
  t.throws(() => duration('5 s', 'D'), /a duration such as 250ms/);
  t.throws(() => duration('-1s', 'D'));
  t.same(list(' a, ,b ,'), ['a', 'b']);
  t.same(traceList('all', 'T'), ['all']);
});

t.test('every RDBG_ variable the product code names is in the table, and every row is read somewhere', async (t) => {
  const codes = new Set<string>([...Object.values(Codes), ...Object.values(KubeCodes), ...Object.values(AgentCodes), ...Object.values(DnsCodes)]);
  const table = new Set(Object.values(VARIABLES).map((v) => v.name));
  const given = new Set(Object.keys(COMMAND_VARIABLES)); // set for a command, never read: documented there
  const named = new Map<string, string>();
  for (const f of sources) for (const m of f.text.matchAll(/\bRDBG_[A-Z0-9_]*[A-Z0-9]\b/g)) if (!codes.has(m[0]) && !given.has(m[0]) && !named.has(m[0])) named.set(m[0], f.path);
  for (const [name, where] of named) t.ok(table.has(name), `${name} (${where}) is in src/core/config.ts's table`);
  for (const name of table) t.ok(named.has(name), `${name} is named in the product code`);
  // A row's value must be used: its key is read outside the config module, or derives a setting there (runtimeDir).
  const outside = sources.filter((f) => f.path !== 'src/core/config.ts').map((f) => f.text).join('\n');
  const config = sources.find((f) => f.path === 'src/core/config.ts')!.text;
  for (const key of [...Object.keys(VARIABLES), ...Object.keys(SYSTEM_VARIABLES)]) {
    t.ok(new RegExp(`\\.${key}\\b`).test(outside) || config.includes(`out.${key} `), `the ${key} setting is used`);
  }
  const reads = sources.filter((f) => f.path !== 'src/core/config.ts' && /process\.env\.[A-Z]/.test(f.text)).map((f) => f.path);
  t.same(reads, [], 'no named variable is read from process.env outside the config module');
});

t.test('every word of every logger name is a trace category, and every category names a logger', async (t) => {
  const names = new Set<string>();
  for (const f of sources) for (const m of f.text.matchAll(/\blogger\('([^']+)'\)/g)) names.add(m[1]);
  t.ok(names.size > 20, 'the loggers are found');
  const words = new Set([...names].flatMap((n) => n.split('.')));
  for (const n of names) t.match(n, /^[a-z][a-z0-9-]*(\.[a-z][a-z0-9-]*)*$/, `${n}: dotted kebab-case words`);
  for (const n of names) t.ok(['rootd', 'userd', 'manager', 'agent', 'tunnel', 'kube'].includes(n.split('.')[0]), `${n} starts with its process or library`);
  t.same([...words].sort(), [...TRACE_CATEGORIES].sort(), 'TRACE_CATEGORIES lists exactly the words in use');
});
