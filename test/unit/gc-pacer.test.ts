import t from 'tap';
import { execFileSync } from 'node:child_process';
import { resolve } from 'node:path';

// The pacer in a process of its own, as the user daemon runs it: with
// --expose-gc, garbage that V8 would keep in a small old generation under
// steady allocation is collected once the heap has grown past the last full
// collection's result; without the flag the pacer does nothing.

const PACER = resolve(__dirname, '../../src/core/gc-pacer.js');

const script = `
const { startGcPacer } = require(${JSON.stringify(PACER)});
const v8 = require('node:v8');
const pacer = startGcPacer({ everyMs: 50, growth: 1.3, minBytes: 2 * 1024 * 1024 });
if (!pacer) { console.log(JSON.stringify({ pacer: false })); process.exit(0); }
// Steady load: objects that live long enough to be promoted, then die.
let keep = [];
const peak = [];
const timer = setInterval(() => {
  for (let i = 0; i < 2000; i++) keep.push({ a: 'x'.repeat(64) + i, b: [i, i + 1] });
  if (keep.length > 20000) keep = [];
  peak.push(v8.getHeapStatistics().used_heap_size);
}, 5);
setTimeout(() => {
  clearInterval(timer);
  pacer.stop();
  console.log(JSON.stringify({ pacer: true, collections: pacer.collections, maxMb: Math.max(...peak) / 1048576 }));
}, 3000);
`;

function run(flags: string[]): { pacer: boolean; collections?: number; maxMb?: number } {
  return JSON.parse(execFileSync(process.execPath, [...flags, '-e', script], { encoding: 'utf8' })) as { pacer: boolean; collections?: number; maxMb?: number };
}

t.test('without --expose-gc the pacer is off', async (t) => {
  t.same(run([]), { pacer: false });
});

t.test('with --expose-gc it collects when the heap has grown past the last collection', async (t) => {
  const r = run(['--expose-gc']);
  t.ok(r.pacer);
  t.ok((r.collections ?? 0) >= 1, `full collections asked for: ${r.collections}`);
  t.comment(`peak heap ${r.maxMb?.toFixed(1)} MB`);
});
