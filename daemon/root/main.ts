import * as grpc from '@grpc/grpc-js';
import { chmodSync, chownSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { asList, parse } from '../../src/cli/args';
import { ROOT_OPTIONS } from '../../src/cli/root-options';
import { parseCidr } from '../../src/core/cidr';
import { Codes, RdbgError, errorMessage } from '../../src/core/errors';
import { logger, toggleDebugOnSignal } from '../../src/core/log';
import { raiseFileLimit } from '../../src/core/rlimit';
import { startProfile, stopProfile } from '../../src/core/profile';
import { rootJournalPath, rootSocketPath, rootStateDir } from '../../src/core/paths';
import { daemonPackage } from '../../src/rpc/services';
import type { StartupMessage } from '../../src/rpc/startup';
import type { RootDaemonHandlers } from '../../src/gen/rdbg/v1/RootDaemon';
import { undoAll } from './cleanup';
import { Journal } from './journal';
import { linuxPlatform } from './platform/linux';
import { RootEngine, type RootOptions } from './engine';

const log = logger('rootd');


function tell(msg: StartupMessage): void {
  if (process.send) process.send(msg, () => process.disconnect?.());
}

export const ROOT_USAGE = `rdbg daemon-root --user-socket PATH [--tun-name rdbg0] [--tun-cidr 169.254.83.0/24] [--tun-cidr6 fd72:6462:6700::/64]
                 [--also-proxy CIDR]... [--never-proxy CIDR]... [--allow-conflicting-subnets]
                 [--dns auto|resolv.conf|none] [--dns-include SUFFIX]... [--dns-exclude SUFFIX]...
                 [--resolv-conf /etc/resolv.conf] [--cleanup]
Started by "rdbg connect" as root; --cleanup only undoes what a crashed daemon left behind.`;

export async function rootDaemonMain(argv: string[]): Promise<void> {
  const { values } = parse('daemon-root', argv, {
    'user-socket': { type: 'string' },
    'tun-cidr': { type: 'string', default: '169.254.83.0/24' },
    'tun-cidr6': { type: 'string', default: 'fd72:6462:6700::/64' },
    ...ROOT_OPTIONS,
    'resolv-conf': { type: 'string', default: '/etc/resolv.conf' },
    cleanup: { type: 'boolean' },
  });
  const dir = rootStateDir();
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const journal = new Journal(rootJournalPath());
  const engineUndo = RootEngine.undoers(values['resolv-conf']!);
  const leftovers = undoAll(journal, linuxPlatform, engineUndo);
  if (leftovers.length) log.warn('undid what an earlier root daemon left behind', { changes: leftovers });
  if (values.cleanup) {
    process.stdout.write(leftovers.length ? `Undid ${leftovers.length} leftover change(s): ${leftovers.join(', ')}\n` : 'Nothing to clean up.\n');
    return;
  }
  raiseFileLimit();
  startProfile();
  toggleDebugOnSignal();
  const opts: RootOptions = {
    userSocket: values['user-socket'] ?? '',
    tunName: values['tun-name']!,
    tunCidr: parseCidr(values['tun-cidr']!),
    tunCidr6: values['tun-cidr6'] ? parseCidr(values['tun-cidr6']) : undefined,
    alsoProxy: asList(values['also-proxy']).map((c) => parseCidr(c).text),
    neverProxy: asList(values['never-proxy']).map((c) => parseCidr(c).text),
    allowConflicts: values['allow-conflicting-subnets'] ?? false,
    dnsMode: values.dns as RootOptions['dnsMode'],
    dnsInclude: asList(values['dns-include']),
    dnsExclude: asList(values['dns-exclude']),
    resolvConf: values['resolv-conf']!,
  };
  const engine = new RootEngine(opts, journal, linuxPlatform);
  try {
    if (!opts.userSocket) throw new RdbgError(Codes.BAD_ARGUMENT, 'the root daemon needs --user-socket');
    await engine.start();
  } catch (err) {
    const e = err instanceof RdbgError ? err : new RdbgError(Codes.DAEMON_START, errorMessage(err));
    log.error('root daemon failed to start', { code: e.code, err: e.message });
    await engine.stop().catch(() => undefined);
    tell({ ready: false, code: e.code, message: e.message, hint: e.hint });
    process.exitCode = 1;
    setTimeout(() => process.exit(1), 100).unref();
    return;
  }

  const server = new grpc.Server();
  let quitting = false;
  const quit = async (reason: string): Promise<void> => {
    if (quitting) return;
    quitting = true;
    log.info('quitting', { reason });
    await engine.stop();
    server.forceShutdown();
    rmSync(rootSocketPath(), { force: true });
    rmSync(join(dir, 'root.pid'), { force: true });
    await stopProfile('root-daemon');
    setTimeout(() => process.exit(0), 50);
  };
  const handlers: RootDaemonHandlers = {
    Status: (_call, cb) => cb(null, engine.status()),
    Quit: (_call, cb) => {
      cb(null, {});
      void quit('rdbg quit');
    },
  };
  server.addService(daemonPackage().RootDaemon.service, handlers);
  rmSync(rootSocketPath(), { force: true });
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix://${rootSocketPath()}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
  );
  // Only root and the user who ran `sudo rdbg connect` may reach it.
  chmodSync(rootSocketPath(), 0o600);
  if (process.env.SUDO_UID) chownSync(rootSocketPath(), Number(process.env.SUDO_UID), Number(process.env.SUDO_GID ?? 0));
  writeFileSync(join(dir, 'root.pid'), String(process.pid));
  engine.on('fatal', (why: string) => void quit(why));
  process.once('SIGTERM', () => void quit('SIGTERM'));
  process.once('SIGINT', () => void quit('SIGINT'));
  tell({ ready: true });
}
