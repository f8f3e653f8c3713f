import t from 'tap';
import { CLUSTER, Sandbox } from '../helpers/sandbox';

// Bad input and a manager that goes away: each fails only its own flow.

let sb: Sandbox;
const SOCKS = '127.0.0.1:1080';

t.before(async () => {
  sb = await Sandbox.create();
  const r = await sb.laptop.rdbg(['connect', '--manager', sb.laptop.managerAddress, '--socks', SOCKS]);
  if (r.code !== 0) throw new Error(`connect failed: ${r.stderr}`);
});
t.teardown(() => sb?.destroy());

const curl = (url: string, timeoutS = 20) =>
  sb.laptop.ns.run('curl', ['-sS', '--max-time', String(timeoutS), '--socks5-hostname', SOCKS, url], (timeoutS + 5) * 1000);

async function status(): Promise<{ state: string; reconnects: number; last_error: string; events: { event: string }[] }> {
  const r = await sb.laptop.rdbg(['status', '-o', 'json']);
  return JSON.parse(r.stdout);
}

t.test('garbage on the SOCKS port closes that connection only', async (t) => {
  const r = await sb.laptop.ns.run('bash', ['-c', `head -c 4096 /dev/urandom | sed 's/^./\\x04/' | timeout 5 nc -q 2 127.0.0.1 1080 | wc -c`]);
  t.equal(r.stdout.trim(), '0', 'nothing answered to a non-SOCKS5 client');
  const http = await sb.laptop.ns.run('curl', ['-sS', '--max-time', '5', 'http://127.0.0.1:1080/']);
  t.not(http.code, 0, 'an HTTP request to the SOCKS port is refused');
  const ok = await curl('http://echo.default/');
  t.equal(ok.code, 0, 'the proxy keeps serving');
  t.match(ok.stdout, /hello from/);
});

t.test('an unreachable address fails fast with a clear reply', async (t) => {
  const r = await curl('http://198.19.7.7/');
  t.not(r.code, 0);
  t.match(r.stderr, /\((3|4)\)|unreachable/i, r.stderr);
  t.ok(r.ms < 5000, `failed in ${r.ms} ms`);
  const ok = await curl('http://echo.default/');
  t.equal(ok.code, 0, 'others keep working');
});

t.test('the manager vanishes mid-transfer, then comes back', async (t) => {
  const big = curl('http://echo.default/bytes?n=8000000000&seed=x', 60);
  await new Promise((r) => setTimeout(r, 1500));
  await sb.killManager();
  const cut = await big;
  t.not(cut.code, 0, 'the transfer in flight fails instead of hanging');
  t.ok(cut.ms < 30_000, `it failed in ${cut.ms} ms`);
  const st = await status();
  t.not(st.state, 'DISCONNECTED', `the daemon is alive and trying (${st.state})`);
  const down = await curl('http://echo.default/', 10);
  t.not(down.code, 0, 'new connections fail while the manager is gone');

  await sb.startManager();
  const until = Date.now() + 15_000;
  let after = await status();
  while ((after.state !== 'CONNECTED' || after.reconnects < 1) && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 250));
    after = await status();
  }
  t.equal(after.state, 'CONNECTED', 'reconnected by itself');
  t.ok(after.reconnects >= 1, 'status counts the reconnect');
  t.ok(after.events.some((e) => /lost the manager/.test(e.event)), 'status tells what happened');
  t.ok(after.events.some((e) => /reconnected/.test(e.event)));
  const text = await sb.laptop.rdbg(['status']);
  t.match(text.stdout, /Reconnects:\s+[1-9]/);
  const ok = await curl('http://echo.default/');
  t.equal(ok.code, 0, `new connections work again: ${ok.stderr}`);
  t.match(ok.stdout, new RegExp(`hello from ${CLUSTER.echoIp}`));
});
