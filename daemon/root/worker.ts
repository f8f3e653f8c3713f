// First: the bundled gRPC and the compile cache, as bin/rdbg.js sets them up (see worker-setup.ts).
import './worker-setup';
import * as grpc from '@grpc/grpc-js';
import { rmSync } from 'node:fs';
import { parseCidr } from '../../src/core/cidr';
import { Codes, RdbgError, errorMessage } from '../../src/core/errors';
import { logger, setLevel, setTrace, toggleDebugOnSignal, type Level } from '../../src/core/log';
import { raiseFileLimit } from '../../src/core/rlimit';
import { startProfile, stopProfile } from '../../src/core/profile';
import { daemonPackage } from '../../src/rpc/services';
import { listenLocalApi, type LocalApi } from '../../src/rpc/local-api';
import type { RootDaemonHandlers } from '../../src/gen/rdbg/v1/RootDaemon';
import { Journal, RESOLV_CONF } from './journal';
import { linuxPlatform } from './platform/linux';
import { RootEngine, type RootOptions } from './engine';

const log = logger('rootd');

/** What the watchdog hands its worker: every field already validated by the watchdog. */
export interface WorkerConfig {
  journal: string;
  socket: string;
  uid: number;
  gid: number;
  watchdogPid: number;
  logLevel: Level;
  trace: string[];
  cpuProfile?: string;
  engine: Omit<RootOptions, 'tunCidr' | 'tunCidr6' | 'resolvConf'> & { tunCidr: string; tunCidr6?: string };
}

/** Worker -> watchdog. */
export type WorkerMessage =
  | { type: 'ready' }
  | { type: 'failed'; code: string; message: string; hint?: string }
  | { type: 'stopping'; reason: string };

function send(msg: WorkerMessage): void {
  process.send?.(msg);
}

/**
 * The root daemon's worker: the engine (TUN, NAT, DNS) and the root socket.
 * It runs only as the child of a watchdog (daemon/root/watchdog.ts), which
 * undoes what it did if it dies; it is not reachable through `rdbg`'s command
 * line, so the sudo rule for `rdbg daemon-root` cannot start it without one.
 */
async function runWorker(cfg: WorkerConfig): Promise<void> {
  setLevel(cfg.logLevel);
  setTrace(cfg.trace);
  raiseFileLimit();
  startProfile(cfg.cpuProfile);
  toggleDebugOnSignal();
  const opts: RootOptions = {
    ...cfg.engine,
    tunCidr: parseCidr(cfg.engine.tunCidr),
    tunCidr6: cfg.engine.tunCidr6 ? parseCidr(cfg.engine.tunCidr6) : undefined,
    resolvConf: RESOLV_CONF,
  };
  const engine = new RootEngine(opts, new Journal(cfg.journal), linuxPlatform);
  try {
    await engine.start();
  } catch (err) {
    const e = err instanceof RdbgError ? err : new RdbgError(Codes.DAEMON_START, errorMessage(err));
    log.error('root daemon failed to start', { code: e.code, err: e.message });
    send({ type: 'stopping', reason: `failed to start: ${e.message}` });
    await engine.stop().catch(() => undefined);
    send({ type: 'failed', code: e.code, message: e.message, hint: e.hint });
    setTimeout(() => process.exit(0), 50);
    return;
  }

  const server = new grpc.Server();
  /** the socket's listener, once it listens */
  const local: { api?: LocalApi } = {};
  let quitting = false;
  const quit = async (reason: string): Promise<void> => {
    if (quitting) return;
    quitting = true;
    log.info('quitting', { reason });
    send({ type: 'stopping', reason });
    await engine.stop();
    local.api?.close();
    server.forceShutdown();
    rmSync(cfg.socket, { force: true });
    await stopProfile('root-daemon');
    setTimeout(() => process.exit(0), 50);
  };
  const handlers: RootDaemonHandlers = {
    Status: (_call, cb) => cb(null, { ...engine.status(), watchdog_pid: cfg.watchdogPid }),
    Quit: (_call, cb) => {
      cb(null, {});
      void quit('rdbg quit');
    },
  };
  const service = daemonPackage().RootDaemon.service;
  server.addService(service, handlers);
  // The base directory is root's and not writable by anyone else, so nobody can plant a link here.
  // Only root and the user who ran `rdbg connect` may reach the socket (mode 0600, theirs).
  local.api = await listenLocalApi(server, { path: cfg.socket, service, handlers, owner: { uid: cfg.uid, gid: cfg.gid }, log: logger('rootd.api') });
  engine.on('fatal', (why: string) => void quit(why));
  process.once('SIGTERM', () => void quit('SIGTERM'));
  process.once('SIGINT', () => void quit('SIGINT'));
  // Without its watchdog nothing would undo this worker's changes if it died: stop cleanly now.
  process.once('disconnect', () => void quit('the watchdog is gone'));
  if (!process.connected) return void quit('the watchdog is gone');
  send({ type: 'ready' });
}

if (require.main === module) {
  if (!process.send) {
    process.stderr.write('the root daemon worker runs only under its watchdog ("rdbg daemon-root")\n');
    process.exit(2);
  }
  process.once('message', (m: { type: 'start'; config: WorkerConfig }) => {
    if (m?.type !== 'start') return;
    runWorker(m.config).catch((err: unknown) => {
      log.error('root daemon worker failed', { err: errorMessage(err) });
      process.exit(1);
    });
  });
}
