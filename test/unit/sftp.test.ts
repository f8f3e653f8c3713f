// The files of a mount end to end on one machine: Debian's sshfs (-o passive:
// SFTP on its stdin and stdout) mounting what the agent's SFTP server
// (agent/sftp-fs.ts over src/tunnel/sftp.ts) serves from a directory laid
// out as a pod's volumes are: a ConfigMap (..data symlinks), a Secret, a
// writable emptyDir. Reads, writes, listings, and the root's edge: nothing
// outside it can be read, whatever a symlink says. The server runs in this
// process, so everything done on the mount here is asynchronous (a sync call
// would block the very event loop that must answer it).
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, existsSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex, duplexPair } from 'node:stream';
import { serveFiles } from '../../agent/sftp-fs';
import { sftpOn } from '../../src/tunnel/sftp';

const haveSshfs = spawnSync('sshfs', ['--version']).status === 0 && existsSync('/dev/fuse');

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const mounted = (dir: string): boolean => readFileSync('/proc/self/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === dir);

t.test('sshfs mounts what the agent serves', { skip: haveSshfs ? false : 'sshfs or /dev/fuse missing' }, async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'rdbg-sftp-'));
  const root = join(base, 'app');
  const mnt = join(base, 'mnt');
  mkdirSync(mnt);
  // A ConfigMap volume as the kubelet writes it, a Secret, an emptyDir, and a secret of the agent's own outside the root.
  const cm = join(root, 'etc/config');
  mkdirSync(join(cm, '..2026_12_06_10_00_00.000'), { recursive: true });
  writeFileSync(join(cm, '..2026_12_06_10_00_00.000/app.yaml'), 'greeting: hello\nport: 8080\n');
  symlinkSync('..2026_12_06_10_00_00.000', join(cm, '..data'));
  symlinkSync('..data/app.yaml', join(cm, 'app.yaml'));
  mkdirSync(join(root, 'var/run/secrets/kubernetes.io/serviceaccount'), { recursive: true });
  writeFileSync(join(root, 'var/run/secrets/kubernetes.io/serviceaccount/token'), 'eyJhbGciOi.token');
  mkdirSync(join(root, 'data'));
  writeFileSync(join(base, 'agent-token'), 'the agent\'s own');
  symlinkSync(join(base, 'agent-token'), join(root, 'data/escape'));
  symlinkSync('../../agent-token', join(root, 'data/escape-relative'));
  const big = Buffer.alloc(8 * 1024 * 1024);
  for (let i = 0; i < big.length; i += 4) big.writeUInt32LE(i, i);
  writeFileSync(join(root, 'data/big'), big);

  const sshfs = spawn('sshfs', ['-f', '-o', 'passive,transform_symlinks', ':/', mnt], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  sshfs.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const stream = Duplex.from({ readable: sshfs.stdout!, writable: sshfs.stdin! });
  serveFiles(sftpOn(stream, 'server'), root);
  t.teardown(async () => {
    spawnSync('fusermount3', ['-u', '-z', mnt]);
    sshfs.kill('SIGKILL');
    await sleep(100);
    rmSync(base, { recursive: true, force: true });
  });
  for (let i = 0; i < 100 && !mounted(mnt); i++) await sleep(50);
  t.ok(mounted(mnt), `mounted (${stderr.trim()})`);

  t.equal(await fsp.readFile(join(mnt, 'etc/config/app.yaml'), 'utf8'), 'greeting: hello\nport: 8080\n', 'a ConfigMap key through its ..data symlinks');
  t.same((await fsp.readdir(join(mnt, 'etc/config'))).sort(), ['..2026_12_06_10_00_00.000', '..data', 'app.yaml']);
  t.equal(await fsp.readFile(join(mnt, 'var/run/secrets/kubernetes.io/serviceaccount/token'), 'utf8'), 'eyJhbGciOi.token', 'the service-account token');
  t.ok((await fsp.readFile(join(mnt, 'data/big'))).equals(big), '8 MiB read back byte for byte');

  await fsp.writeFile(join(mnt, 'data/from-laptop.txt'), 'written on the laptop\n');
  t.equal(readFileSync(join(root, 'data/from-laptop.txt'), 'utf8'), 'written on the laptop\n', 'a write lands in the pod\'s directory');
  await fsp.mkdir(join(mnt, 'data/sub'));
  await fsp.writeFile(join(mnt, 'data/sub/x'), 'x');
  await fsp.rm(join(mnt, 'data/sub'), { recursive: true });
  t.notOk(existsSync(join(root, 'data/sub')), 'mkdir, write, rm -r');

  // The kernel on the laptop follows the mount's symlinks (sshfs asks READLINK): a relative target stays in the mount.
  t.equal(await fsp.readlink(join(mnt, 'etc/config/app.yaml')), '..data/app.yaml');

  spawnSync('fusermount3', ['-u', mnt]);
  await new Promise((r) => (sshfs.exitCode !== null ? r(null) : sshfs.once('exit', r)));
  t.notOk(mounted(mnt), 'unmounted; sshfs exited');
});

t.test('the server keeps every path inside its root, whatever a client sends', async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'rdbg-sftp-'));
  const root = join(base, 'app');
  mkdirSync(join(root, 'data'), { recursive: true });
  writeFileSync(join(root, 'data/ok'), 'inside');
  writeFileSync(join(base, 'agent-token'), "the agent's own");
  symlinkSync(join(base, 'agent-token'), join(root, 'data/escape'));
  symlinkSync('../../agent-token', join(root, 'data/escape-relative'));
  t.teardown(() => rmSync(base, { recursive: true, force: true }));
  const [a, b] = duplexPair();
  serveFiles(sftpOn(a, 'server'), root);
  const client = sftpOn(b, 'client');
  await new Promise((r) => client.once('ready', r));
  const read = (p: string): Promise<string> => new Promise((resolve, reject) => client.readFile(p, 'utf8', (err, data) => (err ? reject(err) : resolve(String(data)))));
  const codeOf = (p: Promise<unknown>): Promise<unknown> => p.then(() => 'read', (e: { code?: unknown }) => e.code);
  t.equal(await read('/data/ok'), 'inside');
  t.equal(await read('/../../data/ok'), 'inside', '.. stops at the root');
  t.equal(await codeOf(read('/data/escape')), 3, 'an absolute symlink out of the root: PERMISSION_DENIED');
  t.equal(await codeOf(read('/data/escape-relative')), 3, 'a relative one too');
  await new Promise<void>((resolve, reject) => client.symlink('/etc/passwd', '/data/made', (err) => (err ? reject(err) : resolve())));
  t.equal(await codeOf(read('/data/made')), 3, 'a symlink the client made, to a file of the agent\'s: refused');
  t.equal(await codeOf(read('/data/made/../../../etc/passwd')), 2, 'paths are resolved against the root first');
  const names = await new Promise<string[]>((resolve, reject) => client.readdir('/data', (err, list) => (err ? reject(err) : resolve(list.map((x) => x.filename).sort()))));
  t.same(names, ['escape', 'escape-relative', 'made', 'ok'], 'readdir (client end of src/tunnel/sftp.ts, as --copy-files uses it)');
  a.destroy();
});
