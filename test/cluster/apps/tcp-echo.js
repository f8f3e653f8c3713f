'use strict';
// TCP echo for the rdbg test cluster: echoes every byte back. With
// GREETING set, it first sends that line (e.g. the pod name). No dependencies.
const net = require('node:net');
const os = require('node:os');

const port = Number(process.env.PORT || 9000);
const greeting = process.env.GREETING === 'pod' ? `${process.env.POD_NAME || os.hostname()}\n` : process.env.GREETING;

const server = net.createServer((sock) => {
  sock.on('error', () => sock.destroy());
  if (greeting) sock.write(greeting);
  sock.pipe(sock);
});
server.listen(port, () => console.log(`tcp-echo listening on :${port}`));
for (const s of ['SIGTERM', 'SIGINT']) process.on(s, () => { server.close(); process.exit(0); });
