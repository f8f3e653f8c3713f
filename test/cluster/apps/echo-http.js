'use strict';
// HTTP echo for the rdbg test cluster. Plain Node, no dependencies.
//
//   GET /anything            -> JSON: who answered (pod, ip) and what it got
//   GET /call?url=URL        -> calls URL (e.g. http://other-svc:8080/x) with
//                               the propagated headers and returns both answers
//   GET /healthz             -> ok
//
// Env: PORT (8080), NAME (the service name to report), PROPAGATE (comma-
// separated header names copied from the request to the outgoing call;
// default "x-request-id,x-rdbg-intercept,traceparent"), CALL (a URL: every
// request other than /healthz and /call also calls it, as a frontend calls
// its backend), TICK (milliseconds: log "tick N" that often, as a worker that
// writes while it runs).
const http = require('node:http');
const os = require('node:os');

const port = Number(process.env.PORT || 8080);
const name = process.env.NAME || 'echo-http';
const propagate = (process.env.PROPAGATE || 'x-request-id,x-rdbg-intercept,traceparent')
  .split(',').map((h) => h.trim().toLowerCase()).filter(Boolean);

function who() {
  const addrs = Object.values(os.networkInterfaces()).flat()
    .filter((a) => a && !a.internal && a.family === 'IPv4').map((a) => a.address);
  return { name, pod: process.env.POD_NAME || os.hostname(), ip: addrs[0] || null };
}

function call(url, headers) {
  return new Promise((resolve) => {
    const req = http.get(url, { headers, timeout: 10000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => {
        let parsed = body;
        try { parsed = JSON.parse(body); } catch { /* keep text */ }
        resolve({ status: res.statusCode, body: parsed });
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ status: 0, error: e.message }));
  });
}

const server = http.createServer(async (req, res) => {
  const u = new URL(req.url, 'http://x');
  if (u.pathname === '/healthz') { res.end('ok\n'); return; }
  let body = '';
  for await (const c of req) body += c;
  const answer = {
    ...who(), method: req.method, path: req.url, headers: req.headers,
    remote: req.socket.remoteAddress, body,
  };
  const target = u.pathname === '/call' ? u.searchParams.get('url') : process.env.CALL;
  if (target) {
    const out = {};
    for (const h of propagate) if (req.headers[h] !== undefined) out[h] = req.headers[h];
    answer.call = { url: target, sent: out, ...(await call(target, out)) };
  }
  res.setHeader('content-type', 'application/json');
  res.setHeader('x-served-by', answer.pod);
  res.end(JSON.stringify(answer) + '\n');
});

server.listen(port, () => console.log(`${name} listening on :${port}`));
if (Number(process.env.TICK) > 0) {
  let n = 0;
  setInterval(() => console.log(`tick ${++n} ${Date.now()}`), Number(process.env.TICK));
}
for (const s of ['SIGTERM', 'SIGINT']) process.on(s, () => { server.close(); process.exit(0); });
