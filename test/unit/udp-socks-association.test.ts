import t from 'tap';
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import { SocksServer } from '../../daemon/user/socks-server';
import { newCounters } from '../../daemon/user/counters';
import { encodeUdpDatagram, parseUdpDatagram } from '../../daemon/user/socks5';
import type { FlowOpener } from '../../daemon/user/flows';
import type { DatagramChannel } from '../../src/tunnel/h2/protocol';

// SOCKS5 UDP ASSOCIATE shares the TUN device's bounded flow table: one client
// that sends to 4,200 destinations holds at most 256 tunnel flows, and its
// association keeps working for a new destination. A stand-in for the
// manager echoes every datagram.

t.test('one association flooding 4,200 destinations holds 256 flows and still reaches a new one', async (t) => {
  let open = 0;
  let most = 0;
  const opener = {
    udp: async (): Promise<DatagramChannel> => {
      open++;
      most = Math.max(most, open);
      let deliver: (d: Buffer) => void = () => undefined;
      let closed = false;
      return {
        send: (d) => setImmediate(() => !closed && deliver(Buffer.concat([Buffer.from('echo:'), d]))),
        onDatagram: (fn) => (deliver = fn),
        onClose: () => undefined,
        close: () => {
          if (!closed) open--;
          closed = true;
        },
      };
    },
  } as unknown as FlowOpener;
  const server = new SocksServer(opener, newCounters());
  const { port } = await server.listen('127.0.0.1', 0);
  t.teardown(() => server.close());

  const ctrl = net.connect(port, '127.0.0.1');
  t.teardown(() => ctrl.destroy());
  await new Promise((r) => ctrl.once('connect', r));
  const read = (n: number): Promise<Buffer> =>
    new Promise((resolve) => {
      let buf = Buffer.alloc(0);
      const on = (d: Buffer): void => {
        buf = Buffer.concat([buf, d]);
        if (buf.length >= n) {
          ctrl.off('data', on);
          resolve(buf);
        }
      };
      ctrl.on('data', on);
    });
  ctrl.write(Buffer.from([5, 1, 0]));
  await read(2);
  ctrl.write(Buffer.from([5, 3, 0, 1, 0, 0, 0, 0, 0, 0])); // UDP ASSOCIATE
  const rep = await read(10);
  t.equal(rep[1], 0, 'associated');
  const relayPort = rep.readUInt16BE(8);

  const udp = dgram.createSocket('udp4');
  t.teardown(() => udp.close());
  await new Promise<void>((r) => udp.bind(0, '127.0.0.1', () => r()));
  for (let i = 0; i < 4200; i++) {
    udp.send(encodeUdpDatagram(`198.19.${128 + (i >> 8)}.${i & 255}`, 9999, Buffer.from('x')), relayPort, '127.0.0.1');
    if (i % 500 === 0) await new Promise((r) => setTimeout(r, 5));
  }
  const answer = new Promise<string>((resolve) =>
    udp.on('message', (m) => {
      const { addr, data } = parseUdpDatagram(m);
      if (addr.host === '198.19.200.1') resolve(data.toString());
    }),
  );
  await new Promise((r) => setTimeout(r, 200));
  udp.send(encodeUdpDatagram('198.19.200.1', 7, Buffer.from('ping')), relayPort, '127.0.0.1');
  t.equal(await answer, 'echo:ping', 'a new destination answers after the flood');
  t.ok(open <= 256, `at most 256 flows open at the end (${open})`);
  t.ok(most <= 257, `never much more than 256 at once (${most})`);
});
