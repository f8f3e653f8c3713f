import { existsSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { asList, parse } from '../../src/cli/args';
import { COMMANDS } from '../../src/cli/spec';
import { parseCidr } from '../../src/core/cidr';
import { Codes, RdbgError, errorMessage } from '../../src/core/errors';
import { LOG_LEVELS, oneOf, readConfig, traceList } from '../../src/core/config';
import { logger, setLevel, setTrace } from '../../src/core/log';
import { ROOT_BASE, currentNetns, rootPaths, rootSessionId, type RootPaths } from '../../src/core/paths';
import type { StartupMessage } from '../../src/rpc/startup';
import { undoAll } from './cleanup';
import { Journal, RESOLV_CONF, TUN_NAME } from './journal';
import { linuxPlatform } from './platform/linux';
import type { RootOptions } from './engine';
import { journalUndoers } from './undoers';
import { ensureBaseDir, ensureSessionDir, validateUserSocket } from './state-dir';
import { runWatchdog } from './watchdog';

const log = logger('rootd');

/** One JSON line on stdout: sudo closes every other descriptor (an IPC channel included). */
function tell(msg: StartupMessage): void {
  try {
    writeSync(1, JSON.stringify(msg) + '\n');
  } catch {
    // `rdbg connect` is gone: nobody to tell
  }
}

/** The user on whose behalf root runs: sudo names them; run as root directly, it is root. */
function callerIds(env: NodeJS.ProcessEnv): { uid: number; gid: number } {
  const num = (v: string | undefined): number | undefined => (v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined);
  const uid = num(env.SUDO_UID) ?? process.getuid!();
  return { uid, gid: num(env.SUDO_GID) ?? (uid === process.getuid!() ? process.getgid!() : uid) };
}

/** A live watchdog of this session (its pid file names a process that is a root daemon). */
function runningWatchdog(paths: RootPaths): number | undefined {
  try {
    const pid = Number(readFileSync(paths.pid, 'utf8'));
    if (!pid || pid === process.pid) return undefined;
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('daemon-root') ? pid : undefined;
  } catch {
    return undefined;
  }
}

const OPTIONS = COMMANDS['daemon-root'].flags;

type Values = ReturnType<typeof parse<typeof OPTIONS>>['values'];

export async function rootDaemonMain(argv: string[]): Promise<void> {
  const { values } = parse('daemon-root', argv, OPTIONS);
  try {
    await rootDaemon(values);
  } catch (err) {
    const e = err instanceof RdbgError ? err : new RdbgError(Codes.DAEMON_START, errorMessage(err));
    log.error('root daemon refused to start', { code: e.code, err: e.message });
    if (values.cleanup) throw e;
    tell({ ready: false, code: e.code, message: e.message, hint: e.hint });
    process.exitCode = 1;
  }
}

async function rootDaemon(values: Values): Promise<void> {
  if (process.getuid?.() !== 0) throw new RdbgError(Codes.PERMISSION, 'the root daemon must run as root', 'run "rdbg connect"; it starts the root daemon through sudo');
  // Through sudo the environment is empty: the CLI hands on its log settings as flags, which win.
  const cfg = readConfig('root');
  const logLevel = values['log-level'] !== undefined ? oneOf(LOG_LEVELS)(values['log-level'], '--log-level') : (cfg.logLevel ?? 'info');
  const trace = values.trace !== undefined ? traceList(values.trace, '--trace') : cfg.trace;
  setLevel(logLevel);
  setTrace(trace);
  const { uid, gid } = callerIds(process.env);
  const userSocket = values['user-socket'] ?? '';
  // The user daemon may still be starting (connect starts both at once): the engine checks the socket again when it appears.
  validateUserSocket(userSocket, uid, false);
  const tunName = values['tun-name']!;
  if (!TUN_NAME.test(tunName)) throw new RdbgError(Codes.BAD_ARGUMENT, `--tun-name ${tunName} must match ${TUN_NAME.source}`);
  const tunCidr = parseCidr(values['tun-cidr']!);
  const tunCidr6 = values['tun-cidr6'] ? parseCidr(values['tun-cidr6']) : undefined;
  const engine: Omit<RootOptions, 'tunCidr' | 'tunCidr6' | 'resolvConf'> = {
    userSocket,
    callerUid: uid,
    tunName,
    alsoProxy: asList(values['also-proxy']).map((c) => parseCidr(c).text),
    neverProxy: asList(values['never-proxy']).map((c) => parseCidr(c).text),
    allowConflicts: values['allow-conflicting-subnets'] ?? false,
    dnsMode: values.dns as RootOptions['dnsMode'],
    dnsInclude: asList(values['dns-include']),
    dnsExclude: asList(values['dns-exclude']),
    tunReader: cfg.tunReader,
    tcpCapture: cfg.tcpCapture,
    rawFlowsMax: cfg.rawFlowsMax,
  };
  if (!['auto', 'resolv.conf', 'none'].includes(engine.dnsMode)) throw new RdbgError(Codes.BAD_ARGUMENT, `--dns ${engine.dnsMode} is not one of auto, resolv.conf, none`);

  const paths = rootPaths(rootSessionId(uid, userSocket, currentNetns()));
  ensureBaseDir(ROOT_BASE);
  ensureSessionDir(paths.dir);
  const other = runningWatchdog(paths);
  if (other) {
    throw new RdbgError(Codes.ALREADY_CONNECTED, `the root daemon of this session is running (pid ${other})`, 'run "rdbg quit" to stop it');
  }
  const journal = new Journal(paths.journal);
  const leftovers = undoAll(journal, linuxPlatform, journalUndoers(RESOLV_CONF));
  if (leftovers.length) log.warn('undid what an earlier root daemon left behind', { changes: leftovers });
  if (values.cleanup) {
    rmSync(paths.exitRecord, { force: true });
    rmSync(paths.socket, { force: true });
    if (journal.entries().length === 0) rmSync(paths.dir, { recursive: true, force: true });
    process.stdout.write(leftovers.length ? `Undid ${leftovers.length} leftover change(s): ${leftovers.join(', ')}\n` : 'Nothing to clean up.\n');
    return;
  }
  if (existsSync(paths.socket)) rmSync(paths.socket);
  process.exitCode = await runWatchdog({
    paths,
    config: { journal: paths.journal, socket: paths.socket, uid, gid, logLevel, trace, cpuProfile: cfg.cpuProfile, engine: { ...engine, tunCidr: tunCidr.text, tunCidr6: tunCidr6?.text } },
    tell,
  });
}
