/**
 * The laptop side of kube-portforward.test.ts, run inside the rdbg-laptop
 * netns (only there is the apiserver reachable):
 *
 *   node kube-portforward-client.js MODE '{"kubeconfig":...,"namespace":...}'
 *
 * Starts a PodForwarder (or opens one port-forward), runs MODE and prints one
 * JSON line with what it saw; the test asserts on it.
 */
import { execFileSync } from 'node:child_process';
import * as net from 'node:net';
import { RdbgError, errorMessage } from '../../src/core/errors';
import { setLevel } from '../../src/core/log';
import { loadKube } from '../../src/kube/config';
import { PodForwarder } from '../../src/kube/forwarder';
import { openPortForward } from '../../src/kube/portforward';
import { bulkEcho } from '../helpers/echo-load';

interface Args {
  kubeconfig: string;
  namespace: string;
  selector: string;
  port: number;
  pod?: string;
  mib?: number;
  n?: number;
  kubectl?: string;
}

/** Everything a connection saw: bytes, whether it ended or was reset, and when. */
interface Seen { data: Buffer; ended: boolean; error?: string; ms: number }

/** One connection: sends, then collects until the end, an error, `until` bytes or waitMs. */
function converse(port: number, send: Buffer | string, opts: { end?: boolean; waitMs?: number; until?: number } = {}): Promise<Seen> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let ended = false;
    let error: string | undefined;
    let got = 0;
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const done = (): void => {
      clearTimeout(timer);
      s.destroy();
      resolve({ data: Buffer.concat(chunks), ended, error, ms: Date.now() - t0 });
    };
    const timer = setTimeout(done, opts.waitMs ?? 15_000);
    s.on('data', (d: Buffer) => {
      chunks.push(d);
      got += d.length;
      if (opts.until !== undefined && got >= opts.until) done();
    });
    s.on('end', () => { ended = true; done(); });
    s.on('error', (err: NodeJS.ErrnoException) => { error = err.code ?? err.message; done(); });
    s.on('connect', () => { if (opts.end) s.end(send); else s.write(send); });
  });
}

/** Reads the tcp-echo greeting (the pod name) of a new connection. */
async function greeting(port: number): Promise<string> {
  const seen = await converse(port, '', { waitMs: 5000 });
  return seen.data.toString().split('\n')[0] || `(none: ${seen.error ?? 'no data'})`;
}

async function main(): Promise<unknown> {
  setLevel('warn');
  const [mode, json] = process.argv.slice(2);
  const a = JSON.parse(json) as Args;
  const kube = loadKube({ kubeconfig: a.kubeconfig });

  if (mode === 'open') {
    // One port-forward to a named pod, without pod listing: what RBAC says about pods/portforward.
    try {
      const s = await openPortForward(kube, { namespace: a.namespace, pod: a.pod!, port: a.port });
      const echoed = await new Promise<string>((resolve) => { s.once('data', (d: Buffer) => resolve(d.toString())); s.write('rbac-ok'); });
      s.destroy();
      return { ok: true, echoed };
    } catch (err) {
      return { ok: false, code: err instanceof RdbgError ? err.code : undefined, message: errorMessage(err), hint: err instanceof RdbgError ? err.hint : undefined };
    }
  }

  const f = await PodForwarder.start(kube, { namespace: a.namespace, selector: a.selector, port: a.port, readyTimeoutMs: 60_000 });
  const failures: string[] = [];
  f.on('failure', (err: unknown) => failures.push(errorMessage(err)));
  try {
    switch (mode) {
      case 'bulk': {
        try {
          const r = await bulkEcho(f.port, (a.mib ?? 64) * 1024 * 1024);
          return { ...r, stats: f.stats(), failures };
        } catch (err) {
          return { error: errorMessage(err), failures };
        }
      }
      case 'concurrent': {
        // n connections at once, each with its own pattern, each checked byte for byte.
        const results = await Promise.all(Array.from({ length: a.n ?? 50 }, async (_, i) => {
          const payload = Buffer.alloc(256 * 1024, `conn-${i}-`);
          const seen = await converse(f.port, payload, { waitMs: 60_000, until: payload.length });
          return { i, same: seen.data.equals(payload), got: seen.data.length, error: seen.error };
        }));
        return { ok: results.filter((r) => r.same).length, bad: results.filter((r) => !r.same), stats: f.stats(), failures };
      }
      case 'half-close': {
        // Send 1 MiB then FIN: the echo must come back whole, then the connection ends.
        const payload = Buffer.alloc(1024 * 1024, 'half-close-');
        const seen = await converse(f.port, payload, { end: true, waitMs: 20_000 });
        return { sent: payload.length, got: seen.data.length, same: seen.data.equals(payload), ended: seen.ended, error: seen.error, ms: seen.ms };
      }
      case 'pod-close': {
        // HTTP/1.0: the pod answers and closes; the whole answer must arrive, then the end.
        const seen = await converse(f.port, 'GET /pod-close HTTP/1.0\r\nHost: x\r\n\r\n', { waitMs: 20_000 });
        const text = seen.data.toString();
        const body = text.slice(text.indexOf('\r\n\r\n') + 4);
        return { status: text.split('\r\n')[0], bodyJson: (() => { try { return JSON.parse(body) as unknown; } catch { return undefined; } })(), ended: seen.ended, error: seen.error, ms: seen.ms };
      }
      case 'refused': {
        const seen = await converse(f.port, 'anyone?', { waitMs: 15_000 });
        return { got: seen.data.length, ended: seen.ended, error: seen.error, failures, stats: f.stats() };
      }
      case 'failover': {
        // Delete the pod the forwarder uses; new connections must reach the replacement.
        const before = await greeting(f.port);
        execFileSync(a.kubectl!, ['--kubeconfig', a.kubeconfig, '-n', a.namespace, 'delete', 'pod', before, '--wait=false']);
        const t0 = Date.now();
        let after = before;
        const seenPods = new Set<string>();
        while (Date.now() - t0 < 90_000) {
          after = await greeting(f.port);
          seenPods.add(after);
          if (after !== before && !after.startsWith('(none')) break;
          await new Promise((r) => setTimeout(r, 200));
        }
        return { before, after, ms: Date.now() - t0, seen: [...seenPods], stats: f.stats(), failures: failures.length };
      }
      default:
        throw new Error(`unknown mode ${mode}`);
    }
  } finally {
    await f.close();
  }
}

main().then(
  (out) => { process.stdout.write(`${JSON.stringify(out)}\n`); process.exit(0); },
  (err: unknown) => { process.stdout.write(`${JSON.stringify({ error: errorMessage(err), code: err instanceof RdbgError ? err.code : undefined })}\n`); process.exit(1); },
);
