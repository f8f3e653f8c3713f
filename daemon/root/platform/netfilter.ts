import { execFileSync } from 'node:child_process';

/**
 * The root daemon's netfilter rules (iptables/ip6tables, either backend),
 * all in chains of its own named after its TUN device, so one session's
 * rules never touch another's or the host's and go with two deletions:
 * - mangle OUTPUT -o DEV -> RDBG-DEV: the SYNs to the cluster go to the
 *   netfilter queue (`--queue-bypass`: with no daemon bound they pass);
 * - nat OUTPUT -o DEV -> RDBG-DEV: TCP to the cluster is redirected to the
 *   daemon's listener on the loopback address.
 * `-o DEV` matches exactly what the routes send into the TUN, so the rules
 * follow route changes and never catch the tunnel's own connection to the
 * manager (pinned to its real device).
 */
export interface CaptureRules {
  family: 4 | 6;
  dev: string;
  queue: number;
  port: number;
}

export function chainName(dev: string): string {
  return `RDBG-${dev}`;
}

function tables(family: 4 | 6): string {
  return family === 4 ? 'iptables' : 'ip6tables';
}

function run(family: 4 | 6, args: string[], input?: string): void {
  const cmd = input === undefined ? tables(family) : `${tables(family)}-restore`;
  execFileSync(cmd, ['-w', '5', ...args], { input, stdio: [input === undefined ? 'ignore' : 'pipe', 'ignore', 'pipe'], timeout: 10_000 });
}

/** True when DEV's chain exists in the nat table (a crashed daemon's, if not ours). */
function present(family: 4 | 6, dev: string): boolean {
  try {
    run(family, ['-t', 'nat', '-S', chainName(dev)]);
    return true;
  } catch {
    return false;
  }
}

/**
 * Install the rules, each table in one atomic iptables-restore (one process
 * per family: connect waits for this); on failure nothing is left and the
 * error is thrown.
 */
export function installCapture(r: CaptureRules): void {
  const chain = chainName(r.dev);
  if (present(r.family, r.dev)) removeCapture(r.family, r.dev);
  // The SYN queue (mangle) comes before the redirect (nat) in OUTPUT: a SYN is not redirected before its dial is known.
  const batch = [
    '*mangle',
    `:${chain} - [0:0]`,
    `-A ${chain} -p tcp --syn -j NFQUEUE --queue-num ${r.queue} --queue-bypass`,
    `-I OUTPUT -o ${r.dev} -j ${chain}`,
    'COMMIT',
    '*nat',
    `:${chain} - [0:0]`,
    `-A ${chain} -p tcp -j REDIRECT --to-ports ${r.port}`,
    `-I OUTPUT -o ${r.dev} -j ${chain}`,
    'COMMIT',
    '',
  ].join('\n');
  try {
    run(r.family, ['--noflush'], batch);
  } catch (err) {
    removeCapture(r.family, r.dev);
    const stderr = String((err as { stderr?: Buffer }).stderr ?? '').trim();
    throw new Error(`${tables(r.family)}-restore: ${stderr || (err as Error).message}`);
  }
}

/** Remove the rules of DEV's chains, if any (also those a crashed daemon left). */
export function removeCapture(family: 4 | 6, dev: string): boolean {
  const chain = chainName(dev);
  // As installed: one process. Anything else (a half-made or edited set) rule by rule.
  const tablesBatch = ['mangle', 'nat'].flatMap((t) => [`*${t}`, `-D OUTPUT -o ${dev} -j ${chain}`, `-F ${chain}`, `-X ${chain}`, 'COMMIT']);
  try {
    run(family, ['--noflush'], [...tablesBatch, ''].join('\n'));
    return true;
  } catch {
    // fall through
  }
  let found = false;
  for (const table of ['nat', 'mangle']) {
    for (let i = 0; i < 16; i++) {
      try {
        run(family, ['-t', table, '-D', 'OUTPUT', '-o', dev, '-j', chain]);
        found = true;
      } catch {
        break;
      }
    }
    try {
      run(family, ['-t', table, '-F', chain]);
      run(family, ['-t', table, '-X', chain]);
      found = true;
    } catch {
      // no such chain
    }
  }
  return found;
}
