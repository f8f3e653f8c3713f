import t from 'tap';
import { ipToBytes } from '../../src/core/address';
import { UdpFlowTable, type EvictReason } from '../../src/tunnel/udp-flow-table';
import { UdpRelay } from '../../daemon/root/udp-relay';
import { buildUdp, parsePacket } from '../../daemon/root/packet';
import type { DatagramChannel } from '../../src/tunnel/h2/protocol';

// The UDP flow table's fairness: one source cannot hold more than its share,
// a full table makes room at the greediest source's oldest flow, idle flows go.

function table(max: number, perSource: number, idleMs = 60_000) {
  let now = 0;
  const evicted: [string, EvictReason][] = [];
  const tbl = new UdpFlowTable<string>({ max, perSource, idleMs, onEvict: (v, why) => evicted.push([v, why]), now: () => now });
  t.teardown(() => tbl.clear());
  return { tbl, evicted, advance: (ms: number) => (now += ms) };
}

t.test('one source flooding destinations keeps only its own limit and evicts only its own flows', async (t) => {
  const { tbl, evicted, advance } = table(4096, 256);
  tbl.add('dns>resolver', 'dns', 'dns>resolver');
  for (let i = 0; i < 4200; i++) {
    advance(1);
    tbl.add(`flood>${i}`, 'flood', `flood>${i}`);
  }
  t.equal(tbl.size, 257, 'the flood holds 256 flows, the DNS client its one');
  t.equal(tbl.get('dns>resolver'), 'dns>resolver', 'the other source\'s flow is still there');
  t.equal(evicted.length, 4200 - 256);
  t.ok(evicted.every(([v, why]) => v.startsWith('flood>') && why === 'source-limit'), 'only the flooding source lost flows');
  t.same(evicted.slice(0, 2).map(([v]) => v), ['flood>0', 'flood>1'], 'its oldest first');
  t.match(tbl.stats(), { active: 257, max: 4096, perSource: 256, evictedSourceLimit: 3944, evictedTableFull: 0 });
});

t.test('a full table takes room from the source with the most flows, its flow idle the longest', async (t) => {
  const { tbl, evicted, advance } = table(8, 4);
  tbl.add('b1', 'b', 'b1'); // the oldest flow of all, but b holds only two
  advance(1);
  tbl.add('b2', 'b', 'b2');
  for (const k of ['a1', 'a2', 'a3', 'a4', 'c1', 'c2']) {
    advance(1);
    tbl.add(k, k[0], k);
  }
  tbl.touch('a1'); // a's oldest is now a2
  advance(1);
  tbl.add('d1', 'd', 'd1');
  t.same(evicted, [['a2', 'table-full']], 'the greedy source pays, with its least recently used flow');
  for (const k of ['b1', 'b2', 'c1', 'c2', 'd1', 'a1']) t.ok(tbl.get(k), `${k} kept`);
  // Now a, b, c hold 3, 2, 2 of 8 with d's 1: a pays again.
  advance(1);
  tbl.add('e1', 'e', 'e1');
  t.same(evicted[1], ['a3', 'table-full']);
  // a, b, c tie at 2: the one whose oldest flow is idle the longest (b1) pays.
  advance(1);
  tbl.add('f1', 'f', 'f1');
  t.same(evicted[2], ['b1', 'table-full']);
  t.match(tbl.stats(), { active: 8, evictedTableFull: 3, evictedSourceLimit: 0 });
});

t.test('many sources of one flow each (a scan from many sockets): a new flow still gets in, the oldest goes', async (t) => {
  const { tbl, evicted, advance } = table(100, 10);
  for (let i = 0; i < 100; i++) {
    advance(1);
    tbl.add(`s${i}`, `s${i}`, `s${i}`);
  }
  tbl.add('dns', 'dns', 'dns');
  t.ok(tbl.get('dns'), 'the new flow is in');
  t.same(evicted, [['s0', 'table-full']]);
});

t.test('idle flows are let go; a datagram keeps a flow; delete() is not an eviction', async (t) => {
  const { tbl, evicted, advance } = table(10, 10, 1000);
  tbl.add('old', 's', 'old');
  tbl.add('busy', 's', 'busy');
  tbl.add('gone', 's', 'gone');
  t.ok(tbl.delete('gone'));
  t.notOk(tbl.delete('gone'), 'twice: nothing');
  advance(600);
  tbl.touch('busy');
  advance(600);
  tbl.sweep();
  t.same(evicted, [['old', 'idle']], 'the flow without a datagram for 1.2 s went; the touched one stayed');
  t.ok(tbl.get('busy'));
  t.equal(tbl.stats().expired, 1);
  advance(1000);
  tbl.sweep();
  t.equal(tbl.size, 0);
});

t.test('a limit above the table is reported as the table', async (t) => {
  t.equal(table(4, 256).tbl.stats().perSource, 4);
  t.throws(() => new UdpFlowTable({ max: 0, perSource: 1, idleMs: 1, onEvict: () => undefined }), RangeError);
});

// The root daemon's relay with a dialer standing in for the manager: every flow answers its own datagrams.
t.test('UdpRelay: after one socket sent to 4,200 destinations, another socket\'s flow is dialled and answered', async (t) => {
  const dialled: string[] = [];
  let closed = 0;
  const dialer = {
    dial: async (host: string, port: number, source: string): Promise<DatagramChannel> => {
      dialled.push(`${source}>${host}:${port}`);
      let deliver: (d: Buffer) => void = () => undefined;
      return {
        send: (d) => setImmediate(() => deliver(Buffer.concat([Buffer.from('echo:'), d]))),
        onDatagram: (fn) => (deliver = fn),
        onClose: () => undefined,
        close: () => closed++,
      };
    },
  };
  const written: Buffer[] = [];
  const relay = new UdpRelay(dialer, (pkt) => written.push(pkt) > 0);
  t.teardown(() => relay.close());
  const app = ipToBytes('169.254.83.1');
  const send = (srcPort: number, dst: string, dstPort: number, data: string): void =>
    relay.onPacket(parsePacket(buildUdp(4, app, srcPort, ipToBytes(dst), dstPort, Buffer.from(data)))!);
  for (let i = 0; i < 4200; i++) send(40000, `198.19.${128 + (i >> 8)}.${i & 255}`, 9999, 'x');
  await new Promise((r) => setImmediate(r));
  t.equal(relay.active, 256, 'the flooding socket holds its per-source limit');
  send(40001, '198.19.128.10', 7, 'ping');
  await new Promise((r) => setTimeout(r, 20));
  t.ok(dialled.includes('169.254.83.1:40001>198.19.128.10:7'), 'the other socket\'s flow was dialled');
  const answer = written.map((w) => parsePacket(w)!).find((p) => p.dstPort === 40001);
  t.equal(answer?.buf.subarray(answer.payloadOffset).toString(), 'echo:ping', 'and its answer came back');
  t.match(relay.table(), { active: 257, max: 4096, perSource: 256, evictedSourceLimit: 4200 - 256 });
  t.ok(closed >= 4200 - 256 - 1, `evicted flows were closed (${closed})`);
});
