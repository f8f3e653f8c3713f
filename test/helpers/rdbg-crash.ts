import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Netns } from './netns';

/** Every rdbg process in a namespace (CLI, user daemon, root daemon and whatever it forks): whatever runs this build. */
export function rdbgPids(ns: Netns): number[] {
  const build = resolve(__dirname, '../..');
  return ns.pids().filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(build);
    } catch {
      return false;
    }
  });
}

/** kill -9 of all of them, stopped first so that none (a watchdog) can clean up after another. Returns how many. */
export async function killEveryRdbgProcess(ns: Netns): Promise<number> {
  const pids = rdbgPids(ns);
  const signal = (sig: NodeJS.Signals): void => {
    for (const pid of pids) {
      try {
        process.kill(pid, sig);
      } catch {
        // already gone
      }
    }
  };
  signal('SIGSTOP');
  signal('SIGKILL');
  const until = Date.now() + 10_000;
  while (rdbgPids(ns).length > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  return pids.length;
}

const GO_RESOLVE = `// Resolves one name with net.DefaultResolver; run with GODEBUG=netdns=go (Go's own resolver, not glibc's).
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, os.Args[1])
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	fmt.Println(addrs)
}
`;

/** A Go program that resolves its argument with Go's own resolver; returns its path and a function that removes it. */
export function buildGoResolver(): { bin: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'rdbg-go-resolve-'));
  writeFileSync(join(dir, 'main.go'), GO_RESOLVE);
  writeFileSync(join(dir, 'go.mod'), 'module resolve\n\ngo 1.21\n');
  execFileSync('go', ['build', '-o', 'resolve', '.'], { cwd: dir, env: { ...process.env, GOFLAGS: '-mod=mod', CGO_ENABLED: '0' }, stdio: 'pipe', timeout: 300_000 });
  return { bin: join(dir, 'resolve'), remove: () => rmSync(dir, { recursive: true, force: true }) };
}
