// SFTP (version 3, as OpenSSH's sftp-server speaks it on stdio) straight on a
// byte stream: the files flow of a mount carries it between the agent and the
// laptop, where sshfs speaks it on its stdin and stdout (-o passive). No SSH:
// the flow is already authenticated and encrypted by the data plane, and SSH's
// own cipher would cost two to three times the throughput.
//
// The packets are ssh2's (its SFTP class parses and writes them for both
// ends); what it expects of an SSH channel is given here: a "protocol" with
// channelData/channelClose, an unbounded window, and an OpenSSH peer ident
// (so it takes sshfs's SYMLINK argument order and OpenSSH's packet sizes).
// These are ssh2's internals, pinned by package.json's range and held by
// test/unit/sftp.test.ts against real sshfs.
import type { Duplex } from 'node:stream';
import type { SFTPWrapper } from 'ssh2';

// ssh2's SFTP class is not exported by its index.
const { SFTP } = require('ssh2/lib/protocol/SFTP.js') as { SFTP: new (client: unknown, chan: unknown, cfg: { server: boolean }) => SftpSession };

/** ssh2's SFTP object: the request events and reply methods of SFTPWrapper, plus its stream input. */
export type SftpSession = SFTPWrapper & { push(data: Buffer | null): void };

const RESPONSE_VERSION = 2;
const RESPONSE_EXTENDED_REPLY = 201;
/** What the server announces beyond plain v3: the OpenSSH extensions sshfs uses when offered. */
const EXTENSIONS: Record<string, string> = {
  'posix-rename@openssh.com': '1',
  'statvfs@openssh.com': '2',
  'hardlink@openssh.com': '1',
  'fsync@openssh.com': '1',
};

function lengthPrefixed(s: string): Buffer {
  const b = Buffer.from(s);
  const l = Buffer.allocUnsafe(4);
  l.writeUInt32BE(b.length);
  return Buffer.concat([l, b]);
}

function versionPacket(): Buffer {
  const body = Buffer.concat([Buffer.from([RESPONSE_VERSION, 0, 0, 0, 3]), ...Object.entries(EXTENSIONS).flatMap(([k, v]) => [lengthPrefixed(k), lengthPrefixed(v)])]);
  const len = Buffer.allocUnsafe(4);
  len.writeUInt32BE(body.length);
  return Buffer.concat([len, body]);
}

/**
 * An SFTP session on `stream`: the server end (its requests arrive as
 * events) or the client end (ssh2's client methods: readdir, createReadStream ...).
 */
export function sftpOn(stream: Duplex, role: 'server' | 'client'): SftpSession & { extendedReply(reqid: number, payload: Buffer): void } {
  const outgoing = { id: 0, state: 'open', window: Infinity, packetSize: Infinity };
  let first = role === 'server';
  let paused = false;
  const protocol = {
    _remoteIdentRaw: 'SSH-2.0-OpenSSH_rdbg',
    channelData(_id: number, buf: Buffer): void {
      // The one packet a server sends unasked is VERSION: announce the extensions with it.
      if (first) {
        first = false;
        if (buf[4] === RESPONSE_VERSION) buf = versionPacket();
      }
      // Backpressure: no more requests are parsed while the answers wait to be sent.
      if (!stream.write(buf) && !paused) {
        paused = true;
        stream.pause();
      }
    },
    channelClose(): void {
      outgoing.state = 'closed';
      stream.destroy();
    },
    // the client end sends its INIT through these
    channelOpenConfirm(): void {},
  };
  stream.on('drain', () => {
    if (!paused) return;
    paused = false;
    stream.resume();
  });
  const sftp = new SFTP({ _protocol: protocol }, { type: 'session', incoming: {}, outgoing }, { server: role === 'server' }) as SftpSession & { extendedReply(reqid: number, payload: Buffer): void };
  sftp.extendedReply = (reqid, payload) => {
    const b = Buffer.allocUnsafe(9 + payload.length);
    b.writeUInt32BE(5 + payload.length, 0);
    b[4] = RESPONSE_EXTENDED_REPLY;
    b.writeUInt32BE(reqid, 5);
    payload.copy(b, 9);
    protocol.channelData(0, b);
  };
  stream.on('data', (c: Buffer) => sftp.push(c));
  stream.on('end', () => sftp.push(null));
  stream.on('error', (e) => sftp.emit('error', e));
  stream.on('close', () => {
    outgoing.state = 'closed';
    sftp.push(null);
    sftp.emit('close');
  });
  // The client speaks first (INIT); 'ready' follows the server's VERSION.
  if (role === 'client') (sftp as unknown as { _init(): void })._init();
  return sftp;
}
