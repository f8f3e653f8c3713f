'use strict';
// TCP echo for the rdbg test cluster: echoes every byte back. With
// GREETING set, it first sends that line (e.g. the pod name). With
// ANSWER_AFTER_FIN_MS set, it echoes nothing: it reads until the client's
// half-close, waits that long, and answers "got N bytes". No dependencies.
const net = require('node:net');
const os = require('node:os');

const port = Number(process.env.PORT || 9000);
const greeting = process.env.GREETING === 'pod' ? `${process.env.POD_NAME || os.hostname()}\n` : process.env.GREETING;

const answerAfterFin = Number(process.env.ANSWER_AFTER_FIN_MS || 0);

const server = net.createServer({ allowHalfOpen: answerAfterFin > 0 }, (sock) => {
  sock.on('error', () => sock.destroy());
  if (answerAfterFin > 0) {
    let n = 0;
    sock.on('data', (d) => (n += d.length));
    sock.on('end', () => setTimeout(() => sock.end(`got ${n} bytes\n`), answerAfterFin));
    return;
  }
  if (greeting) sock.write(greeting);
  sock.pipe(sock);
});
server.listen(port, () => console.log(`tcp-echo listening on :${port}`));
for (const s of ['SIGTERM', 'SIGINT']) process.on(s, () => { server.close(); process.exit(0); });
