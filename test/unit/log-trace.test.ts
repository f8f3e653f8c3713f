// Trace categories: RDBG_TRACE=dns shows the DNS components' debug lines and no other component's.
import t from 'tap';
import { readConfig } from '../../src/core/config';
import { getLevel, logger, setLevel, setSink, setTrace, toggleDebugOnSignal } from '../../src/core/log';

const lines: { level: string; component: string; msg: string }[] = [];
setSink((l) => lines.push(JSON.parse(l)));
const dns = logger('rootd.dns');
const resolved = logger('rootd.dns.resolved');
const nat = logger('rootd.nat');
const socks = logger('userd.socks');

function debugFromAll(): string[] {
  lines.length = 0;
  for (const l of [dns, resolved, nat, socks]) l.debug('d');
  return lines.map((l) => l.component);
}

t.beforeEach(() => {
  setLevel('info');
  setTrace([]);
});

t.test('a category turns on the debug lines of the loggers with that word, and only those', async (t) => {
  t.same(debugFromAll(), [], 'no debug at info');
  setTrace(readConfig('root', { RDBG_TRACE: 'dns' }).trace);
  t.same(debugFromAll(), ['rootd.dns', 'rootd.dns.resolved'], 'dns: the DNS server and its parts, not NAT or SOCKS');
  setTrace(readConfig('root', { RDBG_TRACE: 'nat,socks' }).trace);
  t.same(debugFromAll(), ['rootd.nat', 'userd.socks']);
  setTrace(['rootd']);
  t.same(debugFromAll(), ['rootd.dns', 'rootd.dns.resolved', 'rootd.nat'], 'a process word: all of that process');
  setTrace(['all']);
  t.same(debugFromAll(), ['rootd.dns', 'rootd.dns.resolved', 'rootd.nat', 'userd.socks']);
});

t.test('the level still applies to every logger, and tracing does not lower warn/info', async (t) => {
  setTrace(['dns']);
  lines.length = 0;
  nat.info('i');
  dns.info('i');
  t.equal(lines.length, 2, 'info lines are written either way');
  setLevel('error');
  lines.length = 0;
  dns.warn('w');
  dns.debug('d');
  t.same(lines.map((l) => l.level), ['debug'], 'at error, a traced logger still writes debug, not warn');
  setLevel('debug');
  setTrace([]);
  t.same(debugFromAll(), ['rootd.dns', 'rootd.dns.resolved', 'rootd.nat', 'userd.socks'], 'RDBG_LOG_LEVEL=debug: everything');
});

t.test('enabled() answers before a message is built', async (t) => {
  let built = 0;
  const expensive = (): Record<string, unknown> => ({ n: ++built });
  for (const l of [dns, nat]) if (l.enabled('debug')) l.debug('x', expensive());
  t.equal(built, 0, 'nothing built with the category off');
  setTrace(['dns']);
  for (const l of [dns, nat]) if (l.enabled('debug')) l.debug('x', expensive());
  t.equal(built, 1, 'built for the traced logger only');
  t.notOk(nat.enabled('debug'));
  t.ok(nat.enabled('info'));
});

t.test('SIGUSR2 toggles debug for everyone and back to the configured level', async (t) => {
  setLevel('info');
  toggleDebugOnSignal();
  process.emit('SIGUSR2');
  t.equal(getLevel(), 'debug');
  t.same(debugFromAll(), ['rootd.dns', 'rootd.dns.resolved', 'rootd.nat', 'userd.socks']);
  process.emit('SIGUSR2');
  t.equal(getLevel(), 'info');
  t.same(debugFromAll(), []);
  process.removeAllListeners('SIGUSR2');
});
