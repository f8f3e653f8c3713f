import t from 'tap';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { DnsServer, UDP_RECEIVE_BUFFER, type ClusterResult } from '../../daemon/root/dns/dns-server';
import { query } from './dns-client';

// A burst of queries that arrives while the daemon waits for the CPU (a busy
// laptop, a test suite opening hundreds of connections at once) is answered
// in full once it runs again: none is lost in the socket's receive buffer.

const BURST = 2000;
const lookupCluster = async (name: string): Promise<ClusterResult> => ({
  rcode: 0, name, answers: [{ name, type: 1, ttl: 5, address: '198.19.128.10' }],
});

// Sends BURST copies of one query (each with its own ID) at once, then
// counts the distinct IDs answered until the server has been quiet for 1.5 s.
const SENDER = `
import socket, struct, sys
port = int(sys.argv[1]); n = int(sys.argv[2]); q = bytes.fromhex(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
for i in range(n):
    s.sendto(struct.pack('>H', i) + q[2:], ('127.0.0.1', port))
s.settimeout(1.5)
seen = set()
try:
    while len(seen) < n:
        seen.add(struct.unpack('>H', s.recv(4096)[:2])[0])
except socket.timeout:
    pass
print(len(seen), flush=True)
`;

const rmemMax = Number(readFileSync('/proc/sys/net/core/rmem_max', 'utf8'));
const skip = rmemMax < UDP_RECEIVE_BUFFER && `net.core.rmem_max is ${rmemMax}: the kernel caps the buffer below what this burst needs`;

t.test(`${BURST} queries that arrive while the daemon is busy are all answered`, { skip }, async (t) => {
  const server = new DnsServer({ listen: [{ address: '127.0.0.1', port: 0 }], clusterDomain: 'cluster.local', namespaces: () => ['default'], lookupCluster, upstreams: [] });
  const [{ port }] = await server.start();
  t.teardown(() => server.stop());
  const py = spawn('python3', ['-c', SENDER, String(port), String(BURST), query('echo.default', 'A').toString('hex')], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  py.stdout.on('data', (d) => (out += d));
  // The event loop stays blocked while the whole burst lands in the kernel's buffer, as when the daemon waits for the CPU.
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1500);
  const answered = await new Promise<number>((resolve) => py.on('close', () => resolve(Number(out.trim().split('\n').pop()))));
  t.equal(answered, BURST, `every query of the burst answered (${answered} of ${BURST})`);
  t.ok(server.counters().queries >= BURST, 'the server saw them all');
});
