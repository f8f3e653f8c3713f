import t from 'tap';
import { parseH2load } from './clients';
import { relativeTrend } from './trend';
import { lineChartSvg } from './svg-chart';

// The soak's own arithmetic: h2load's summary, the RSS trend and the chart.

t.test('h2load summary: requests and status codes', async (t) => {
  const out = `finished in 21.32ms, 1876.17 req/s, 7.94MB/s
requests: 40 total, 40 started, 38 done, 37 succeeded, 3 failed, 2 errored, 1 timeout
status codes: 36 2xx, 0 3xx, 1 4xx, 0 5xx
`;
  t.same(parseH2load(out), { total: 40, succeeded: 37, failed: 3, errored: 2, timeout: 1, status2xx: 36 });
  t.equal(parseH2load('connect: Connection refused\n'), undefined, 'no summary: the caller counts the whole batch as failed');
});

t.test('trend: a flat noisy series passes, a steady climb of 10% does not', async (t) => {
  const flat = Array.from({ length: 60 }, (_, i) => ({ x: i / 2, y: 100 + (i % 3) - 1 }));
  t.ok(Math.abs(relativeTrend(flat, 20).trend) < 0.01, 'flat');
  const climb = Array.from({ length: 60 }, (_, i) => ({ x: i / 2, y: 100 + i / 2 / 2 })); // +0.5 per minute
  const r = relativeTrend(climb, 20);
  t.ok(r.trend > 0.05, `climb of 10 over 20 min of ~108 mean: ${(r.trend * 100).toFixed(1)}%`);
  t.equal(r.n, 41, 'only the points of the last 20 minutes');
  const warmup = [...Array.from({ length: 20 }, (_, i) => ({ x: i / 2, y: 50 + i * 2.5 })), ...flat.map((p) => ({ x: p.x + 10, y: p.y }))];
  t.ok(relativeTrend(warmup, 20).trend < 0.01, 'growth before the window does not count');
  t.ok(Number.isNaN(relativeTrend(flat.slice(0, 2), 20).trend), 'too few points');
});

t.test('chart: one polyline per series, a legend, axes in the given units', async (t) => {
  const svg = lineChartSvg([
    { name: 'manager', points: [{ x: 0, y: 80 }, { x: 1, y: 82 }] },
    { name: 'agent <1>', points: [{ x: 0, y: 60 }, { x: 1, y: 61 }] },
  ], { title: 'RSS', xLabel: 'minutes', yLabel: 'RSS (MB)' });
  t.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  t.equal(svg.match(/<polyline /g)?.length, 2);
  t.match(svg, />manager</);
  t.match(svg, />agent &lt;1&gt;</, 'names are escaped');
  t.match(svg, />minutes</);
  t.match(svg, />RSS \(MB\)</);
});
