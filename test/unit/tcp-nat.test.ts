import * as net from 'node:net';
import t from 'tap';
import { TCP_SYN, parsePacket } from '../../daemon/root/packet';
import { TcpNat, type TcpDialer } from '../../daemon/root/tcp-nat';
import { tcpSegment } from '../helpers/packets';

/**
 * The NAT's bookkeeping around a flow's end, with a real listener on loopback:
 * the kernel's accepted connection comes from the fake source the NAT chose
 * (127.0.0.2:1024, its first), as it would after the rewrite on the TUN. The
 * dialer stands in for the tunnel and records what the NAT asks of it.
 */
async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

function setup(listenPort: number): { nat: TcpNat; cancels: string[]; joined: Promise<void>; written: Buffer[] } {
  const cancels: string[] = [];
  const written: Buffer[] = [];
  let onJoined!: () => void;
  const joined = new Promise<void>((r) => (onJoined = r));
  const dialer: TcpDialer = {
    dial: async (host, port) => ({
      join: (sock, onDone) => {
        // The flow carries nothing and ends: the tunnel side reports it done.
        sock.on('error', () => undefined);
        sock.end();
        sock.once('close', () => {
          onDone();
          onJoined();
        });
        sock.resume();
      },
      cancel: () => void cancels.push(`${host}:${port}`),
    }),
  };
  const nat = new TcpNat({ listen4: '127.0.0.1', fakes4: ['127.0.0.2'], fakes6: [], listenPort, dialer, write: (p) => (written.push(p), true) });
  return { nat, cancels, joined, written };
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

t.test('a flow that ended is not cancelled when its lingering entry goes', async (t) => {
  const port = await freePort();
  const { nat, cancels, joined, written } = setup(port);
  await nat.start();
  t.teardown(() => nat.close());
  const syn = (): void => nat.onPacket(parsePacket(tcpSegment(4, '10.1.1.1', 40000, '198.19.128.10', 80, TCP_SYN))!);
  syn();
  await tick();
  const rewritten = parsePacket(written[0])!;
  t.equal(rewritten.dstPort, port, 'the held SYN went to the listener once the dial succeeded');
  t.equal(rewritten.srcPort, 1024, 'from the first fake source port');
  // The kernel's side of it: the program's connection, as the listener sees it after the rewrite.
  const c = net.connect({ host: '127.0.0.1', port, localAddress: '127.0.0.2', localPort: rewritten.srcPort });
  c.on('error', () => undefined);
  c.resume();
  c.on('end', () => c.end());
  await joined;
  // The program reuses its port: the old entry goes and a new flow starts.
  syn();
  await tick();
  t.same(cancels, [], 'the finished flow was not cancelled again (a cancel counts it as closed first and destroys its connection)');
  t.equal(written.length, 2, 'the new SYN started a new flow');
  nat.close();
  t.same(cancels, ['198.19.128.10:80'], 'the new flow, dialled but never accepted, is cancelled when the NAT closes');
});
