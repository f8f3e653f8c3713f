/**
 * One small batch of each real client, counted request by request. Each batch
 * returns how many requests it made and how many failed, with the first words
 * of what went wrong; the soak sums them per client.
 */

export type Run = (cmd: string, args: string[], timeoutMs?: number) => Promise<{ code: number; stdout: string; stderr: string }>;

export interface Batch {
  requests: number;
  failed: number;
  error?: string;
}

export interface H2loadCounts {
  total: number;
  succeeded: number;
  failed: number;
  errored: number;
  timeout: number;
  status2xx: number;
}

/** h2load's summary: "requests: 40 total, 40 started, 40 done, 40 succeeded, 0 failed, 0 errored, 0 timeout" and "status codes: 40 2xx, ...". */
export function parseH2load(text: string): H2loadCounts | undefined {
  const r = /requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(text);
  const s = /status codes: (\d+) 2xx/.exec(text);
  if (!r || !s) return undefined;
  return { total: +r[1], succeeded: +r[2], failed: +r[3], errored: +r[4], timeout: +r[5], status2xx: +s[1] };
}

const brief = (s: string): string => s.trim().split('\n').slice(-3).join(' | ').slice(0, 300);

/**
 * curl fetching `urls` on one connection, each answer followed by "|CODE":
 * a request counts as good when its body matches `expect[i]` and its code is 200.
 * `headers[i]` are the -H values of request i (curl's --next starts a new set).
 */
export async function curlBatch(run: Run, urls: string[], expect: RegExp[], headers: string[][] = []): Promise<Batch> {
  const args = ['-sS', '--max-time', '30'];
  urls.forEach((u, i) => {
    if (i > 0) args.push('--next', '-sS', '--max-time', '30');
    for (const h of headers[i] ?? []) args.push('-H', h);
    args.push('-w', '|%{http_code}\\n', u);
  });
  const r = await run('curl', args, 60_000);
  const answers = r.stdout.split(/\|(\d{3})\n/);
  let good = 0;
  let error: string | undefined;
  for (let i = 0; i < urls.length; i++) {
    const body = answers[2 * i] ?? '';
    const code = answers[2 * i + 1];
    if (code === '200' && expect[i].test(body)) good++;
    else error ??= `${urls[i]}: code ${code ?? '-'} body ${JSON.stringify(body.slice(0, 80))} curl exit ${r.code} ${brief(r.stderr)}`;
  }
  return { requests: urls.length, failed: urls.length - good, error };
}

/** A download checked by its SHA-256 (curl | sha256sum in one shell). */
export async function curlSha(run: Run, url: string, sha: string): Promise<Batch> {
  const r = await run('bash', ['-o', 'pipefail', '-c', `curl -sS --max-time 60 '${url}' | sha256sum`], 90_000);
  const got = r.stdout.split(' ')[0];
  return got === sha && r.code === 0 ? { requests: 1, failed: 0 } : { requests: 1, failed: 1, error: `${url}: sha ${got} exit ${r.code} ${brief(r.stderr)}` };
}

/** h2load: n requests over c connections, m streams at a time; every request must end 2xx. */
export async function h2loadBatch(run: Run, url: string, n: number, extra: string[] = []): Promise<Batch> {
  const r = await run('h2load', ['-n', String(n), '-c', '2', '-m', '4', '-T', '30', '-N', '20', ...extra, url], 60_000);
  const c = parseH2load(r.stdout);
  if (!c) return { requests: n, failed: n, error: `h2load exit ${r.code}: ${brief(r.stdout + r.stderr)}` };
  const bad = Math.max(c.total - c.succeeded, c.total - c.status2xx, n - c.total);
  return { requests: n, failed: bad, error: bad || r.code ? `h2load exit ${r.code}: ${brief(r.stdout)}` : undefined };
}

/** nghttp (HTTP/2 prior knowledge) fetching one URL; the body must match. */
export async function nghttpGet(run: Run, url: string, expect: RegExp, headers: string[] = []): Promise<Batch> {
  const r = await run('nghttp', ['-t', '30', ...headers.flatMap((h) => ['-H', h]), url], 60_000);
  return r.code === 0 && expect.test(r.stdout)
    ? { requests: 1, failed: 0 }
    : { requests: 1, failed: 1, error: `nghttp ${url} exit ${r.code}: ${JSON.stringify(r.stdout.slice(0, 80))} ${brief(r.stderr)}` };
}

/**
 * redis-benchmark: n requests of each test; it reports no per-request failures,
 * so a non-zero exit, an error line or a missing result line fails the whole batch.
 */
export async function redisBenchmarkBatch(run: Run, host: string, n: number, tests: string[]): Promise<Batch> {
  const requests = n * tests.length;
  const r = await run('redis-benchmark', ['-h', host, '-p', '6379', '-n', String(n), '-c', '2', '-t', tests.join(','), '--csv'], 60_000);
  const rows = r.stdout.split('\n').filter((l) => /^"[A-Z]+/.test(l));
  const errored = /error|could not|refused|reset/i.test(r.stdout + r.stderr);
  if (r.code !== 0 || errored || rows.length !== tests.length) {
    return { requests, failed: requests, error: `redis-benchmark exit ${r.code}, ${rows.length} rows: ${brief(r.stdout + r.stderr)}` };
  }
  return { requests, failed: 0 };
}

/** redis-cli: SET a fresh value, then GET it back (two requests). */
export async function redisSetGet(run: Run, host: string, key: string, value: string): Promise<Batch> {
  const r = await run('bash', ['-c', `printf 'SET ${key} ${value}\\nGET ${key}\\n' | redis-cli -h ${host} -p 6379`], 30_000);
  const lines = r.stdout.trim().split('\n');
  const failed = (lines[0] === 'OK' ? 0 : 1) + (lines[1] === value ? 0 : 1);
  return { requests: 2, failed, error: failed ? `redis-cli exit ${r.code}: ${JSON.stringify(r.stdout)} ${brief(r.stderr)}` : undefined };
}
