import * as dgram from 'node:dgram';
import * as net from 'node:net';
import * as dnsPacket from 'dns-packet';

// Test-side DNS clients (UDP, TCP) and small servers standing in for the laptop's original resolver.

export function query(name: string, type: dnsPacket.RecordType, opts: { id?: number; edns?: number; rd?: boolean } = {}): Buffer {
  return dnsPacket.encode({
    id: opts.id ?? 4242,
    type: 'query',
    flags: opts.rd === false ? 0 : dnsPacket.RECURSION_DESIRED,
    questions: [{ name, type, class: 'IN' }],
    additionals: opts.edns
      ? [{ type: 'OPT', name: '.', udpPayloadSize: opts.edns, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }]
      : [],
  });
}

export function udpAsk(port: number, msg: Buffer, timeoutMs = 3000, host = '127.0.0.1'): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    const timer = setTimeout(() => {
      s.close();
      resolve(undefined);
    }, timeoutMs);
    s.on('message', (m) => {
      clearTimeout(timer);
      s.close();
      resolve(m);
    });
    s.send(msg, port, host);
  });
}

export function tcpAsk(port: number, msgs: Buffer[], timeoutMs = 3000, host = '127.0.0.1'): Promise<Buffer[]> {
  return new Promise((resolve) => {
    const out: Buffer[] = [];
    let buf = Buffer.alloc(0);
    const c = net.connect({ port, host });
    const finish = (): void => {
      clearTimeout(timer);
      c.destroy();
      resolve(out);
    };
    const timer = setTimeout(finish, timeoutMs);
    c.on('error', finish);
    c.on('close', finish);
    c.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        out.push(buf.subarray(2, 2 + buf.readUInt16BE(0)));
        buf = buf.subarray(2 + buf.readUInt16BE(0));
        if (out.length === msgs.length) finish();
      }
    });
    for (const m of msgs) {
      const p = Buffer.alloc(2);
      p.writeUInt16BE(m.length);
      c.write(Buffer.concat([p, m]));
    }
  });
}

/** An "original resolver" on loopback: records every query's bytes, answers A 192.0.2.1 (or stays silent). */
export class FakeUpstream {
  readonly udpSeen: Buffer[] = [];
  readonly tcpSeen: Buffer[] = [];
  lastAnswer?: Buffer;
  silent = false;
  private udp = dgram.createSocket('udp4');
  private tcp = net.createServer((c) => {
    let buf = Buffer.alloc(0);
    c.on('error', () => undefined);
    c.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) return;
      const q = buf.subarray(2, 2 + buf.readUInt16BE(0));
      this.tcpSeen.push(Buffer.from(q));
      const a = this.answer(q);
      const p = Buffer.alloc(2);
      p.writeUInt16BE(a.length);
      c.end(Buffer.concat([p, a]));
    });
  });
  port = 0;

  async start(): Promise<number> {
    await new Promise<void>((r) => this.udp.bind(0, '127.0.0.1', () => r()));
    this.port = this.udp.address().port;
    await new Promise<void>((r) => this.tcp.listen(this.port, '127.0.0.1', () => r()));
    this.udp.on('message', (m, rinfo) => {
      this.udpSeen.push(Buffer.from(m));
      if (!this.silent) this.udp.send(this.answer(m), rinfo.port, rinfo.address);
    });
    return this.port;
  }

  private answer(q: Buffer): Buffer {
    const p = dnsPacket.decode(q);
    this.lastAnswer = dnsPacket.encode({
      id: p.id,
      type: 'response',
      flags: dnsPacket.RECURSION_AVAILABLE | dnsPacket.AUTHORITATIVE_ANSWER,
      questions: p.questions,
      answers: [{ name: p.questions![0].name, type: 'A', ttl: 300, data: '192.0.2.1' }],
    });
    return this.lastAnswer;
  }

  stop(): void {
    this.udp.close();
    this.tcp.close();
  }
}
