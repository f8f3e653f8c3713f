import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitForLine, type Netns } from './netns';

/** systemd-resolved and resolvectl unpacked by scripts/install-resolved.sh (never installed on the machine). */
export const RESOLVED_ROOT = '/var/cache/rdbg/resolved/root';

const DBUS_CONF = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
  </policy>
</busconfig>
`;

// LLMNR and mDNS off: they would answer single labels from the network and blur what the stub sends where.
const RESOLVED_CONF = '[Resolve]\nLLMNR=no\nMulticastDNS=no\nDNSSEC=no\nFallbackDNS=\n';

/**
 * The mount namespace of a host where systemd-resolved runs: /etc and /usr are
 * overlays (resolved's user, resolved.conf, /etc/resolv.conf a link to the
 * stub; resolved's binaries on top of /usr), /run/dbus and /run/systemd are
 * its own, /sys is the network namespace's. Nothing changes outside it.
 */
const HOLDER = `set -e
D="$1"; ROOT="$2"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$D/etc-upper,workdir=$D/etc-work" /etc
mount -t overlay overlay -o "lowerdir=$ROOT/usr:/usr" /usr
umount -l /sys; mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /run/dbus
mount -t tmpfs tmpfs /run/systemd
grep -q '^systemd-resolve:' /etc/passwd || {
  echo 'systemd-resolve:x:990:990:systemd Resolver:/:/usr/sbin/nologin' >> /etc/passwd
  echo 'systemd-resolve:x:990:' >> /etc/group
}
mkdir -p /etc/systemd; cp "$D/resolved.conf" /etc/systemd/resolved.conf
rm -f /etc/resolv.conf; ln -s ../run/systemd/resolve/stub-resolv.conf /etc/resolv.conf
dbus-daemon --config-file="$D/dbus.conf" --nofork --nopidfile 2>>"$D/dbus.log" &
i=0; until [ -S /run/dbus/system_bus_socket ]; do i=$((i+1)); [ $i -lt 100 ] || exit 1; sleep 0.05; done
env -u NOTIFY_SOCKET SYSTEMD_LOG_LEVEL=debug /usr/lib/systemd/systemd-resolved >>"$D/resolved.log" 2>&1 &
i=0; until resolvectl status --no-pager >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 100 ] || exit 1; sleep 0.05; done
echo READY
wait
`;

/**
 * A real systemd-resolved serving one sandbox namespace (the laptop): its stub
 * on 127.0.0.53 is the namespace's resolver inside this mount namespace, and
 * every command that should see it runs through run().
 */
export class ResolvedHost {
  private constructor(
    readonly ns: Netns,
    private readonly holder: ChildProcess,
    readonly dir: string,
  ) {}

  static available(): boolean {
    return existsSync(join(RESOLVED_ROOT, 'usr/lib/systemd/systemd-resolved')) && existsSync(join(RESOLVED_ROOT, 'usr/bin/resolvectl'));
  }

  static async start(ns: Netns): Promise<ResolvedHost> {
    if (!ResolvedHost.available()) throw new Error(`no systemd-resolved under ${RESOLVED_ROOT}: run scripts/install-resolved.sh`);
    const dir = mkdtempSync(join(tmpdir(), 'rdbg-resolved-'));
    writeFileSync(join(dir, 'dbus.conf'), DBUS_CONF);
    writeFileSync(join(dir, 'resolved.conf'), RESOLVED_CONF);
    for (const d of ['etc-upper', 'etc-work']) mkdirSync(join(dir, d));
    // nsenter and unshare exec: the child is the holder shell, whose mount namespace the others join.
    const holder = spawn('nsenter', [`--net=/var/run/netns/${ns.name}`, 'unshare', '--mount', '--propagation', 'private', 'sh', '-c', HOLDER, 'holder', dir, RESOLVED_ROOT], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const host = new ResolvedHost(ns, holder, dir);
    try {
      await waitForLine(holder, (l) => l === 'READY', 15_000, `systemd-resolved (log: ${host.log().slice(-500)})`);
    } catch (err) {
      host.stop();
      throw err;
    }
    return host;
  }

  /** Run a command in the laptop's network namespace and resolved's mount namespace. */
  run(cmd: string, args: string[], timeoutMs = 30_000): Promise<{ code: number; stdout: string; stderr: string; ms: number }> {
    const start = Date.now();
    return new Promise((resolve) => {
      const p = spawn('nsenter', [`--target=${this.holder.pid}`, '--mount', '--net', cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
      p.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code: code ?? -1, stdout, stderr, ms: Date.now() - start });
      });
    });
  }

  async resolvectl(args: string[]): Promise<string> {
    const r = await this.run('resolvectl', [...args, '--no-pager']);
    if (r.code !== 0) throw new Error(`resolvectl ${args.join(' ')}: ${r.stderr.trim()}`);
    return r.stdout;
  }

  log(): string {
    try {
      return readFileSync(join(this.dir, 'resolved.log'), 'utf8');
    } catch {
      return '';
    }
  }

  /** resolved and dbus live in the laptop's namespace and die with it; this ends the holder and removes the overlay. */
  stop(): void {
    this.holder.kill('SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
  }
}
