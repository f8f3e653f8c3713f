import * as net from 'node:net';
import { splitHostPort } from '../core/address';
import type { H2FlowClient } from './h2-client';
import { SOCKET_HWM, joinSocket } from './h2-flows';
import { DialError } from './messages';
import { connectFlowSocket, DataPortError, openRawFlow, type JoinCounters, type JoinableFlow, type RawFlowBudget, type RawFlowRequest } from './raw-flow';

/**
 * Raw flows over port-forward, opened ahead of need.
 *
 * Through the apiserver's port-forward a new connection to the manager's
 * data port is a new stream pair through the apiserver and the kubelet, and
 * the kubelet's dial into the pod: 2-3 ms, too slow to wait for on every
 * flow, so there TCP flows are HTTP/2 streams on one forwarded connection.
 * But an HTTP/2 stream costs framing and flow control in both processes on
 * every read. The pool keeps a few connections to the data port opened
 * ahead; a new TCP flow takes one and is a raw flow (one request line, then
 * plain bytes both ways), or goes over HTTP/2 when the pool is empty. The
 * pool refills after each take.
 *
 * What it costs the cluster: an unused connection is closed after
 * IDLE_MS (before the manager's 10 s wait for a request would drop it), and
 * the pool refills only within DEMAND_WINDOW_MS of the last flow, so an idle
 * laptop holds no connections and opens none; at most OPENS_PER_SECOND new
 * port-forward streams a second come from the pool.
 *
 * Over port-forward the user daemon keeps no pool unless RDBG_RAW_POOL=N asks
 * for one (see DEFAULT_POOL_SIZE): there it is slower than HTTP/2.
 */
/** A pool's size unless its constructor is told otherwise. */
export const RAW_POOL_SIZE = 4;
/**
 * Off unless RDBG_RAW_POOL asks for it: over port-forward, pooled raw
 * connections carried bulk transfers slower than HTTP/2 streams and made
 * round trips no faster (docs/benchmarks.md, "Variants", says how to repeat it).
 */
export const DEFAULT_POOL_SIZE = 0;
const IDLE_MS = 5_000;
const DEMAND_WINDOW_MS = 30_000;
const OPENS_PER_SECOND = 20;

/** A connection opened ahead, with the budget it holds. */
export interface PooledConnection {
  sock: net.Socket;
  release: () => void;
}

interface Entry extends PooledConnection {
  timer: NodeJS.Timeout;
  onClose: () => void;
}

export class RawConnectionPool {
  private readonly idle: Entry[] = [];
  private opening = 0;
  private lastDemand = -Infinity;
  private second = 0;
  private openedThisSecond = 0;
  private retry?: NodeJS.Timeout;
  private closed = false;
  readonly stats = { opened: 0, taken: 0, expired: 0, broken: 0, empty: 0 };
  private readonly target: { host: string; port: number };

  constructor(
    readonly address: string,
    private readonly budget: RawFlowBudget,
    readonly size = RAW_POOL_SIZE,
    private readonly opts: { idleMs?: number; now?: () => number } = {},
  ) {
    this.target = splitHostPort(address, "the manager's data address");
  }

  private now(): number {
    return (this.opts.now ?? Date.now)();
  }

  /** The pool size from RDBG_RAW_POOL=N (0: none), else DEFAULT_POOL_SIZE. */
  static sizeFromEnv(env = process.env): number {
    const set = env.RDBG_RAW_POOL;
    return set !== undefined && /^\d{1,3}$/.test(set) ? Number(set) : DEFAULT_POOL_SIZE;
  }

  /**
   * The oldest connection opened ahead, or undefined when none is ready.
   * Asking counts as demand: the pool refills either way.
   */
  take(): PooledConnection | undefined {
    if (this.closed) return undefined;
    this.lastDemand = this.now();
    const e = this.idle.shift();
    if (e) {
      clearTimeout(e.timer);
      e.sock.removeListener('close', e.onClose);
      this.stats.taken++;
    } else this.stats.empty++;
    this.refill();
    return e && { sock: e.sock, release: e.release };
  }

  /** Drop the connections opened so far (they may lead to a manager that is gone); later ones refill it. */
  flush(): void {
    for (const e of this.idle.splice(0)) this.drop(e);
  }

  get idleCount(): number {
    return this.idle.length;
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retry);
    for (const e of this.idle.splice(0)) this.drop(e);
  }

  private refill(): void {
    if (this.closed || this.now() - this.lastDemand > DEMAND_WINDOW_MS) return;
    while (this.idle.length + this.opening < this.size) {
      const second = Math.floor(this.now() / 1000);
      if (second !== this.second) {
        this.second = second;
        this.openedThisSecond = 0;
      }
      if (this.openedThisSecond >= OPENS_PER_SECOND) {
        this.retry ??= setTimeout(() => {
          this.retry = undefined;
          this.refill();
        }, 1000 - (this.now() % 1000)).unref();
        return;
      }
      const release = this.budget.take();
      if (!release) return;
      this.openedThisSecond++;
      this.open(release);
    }
  }

  private open(release: () => void): void {
    const { host, port } = this.target;
    this.opening++;
    this.stats.opened++;
    const sock = connectFlowSocket({ host, port, noDelay: true, allowHalfOpen: true, highWaterMark: SOCKET_HWM } as net.NetConnectOpts);
    sock.on('error', () => sock.destroy());
    const failed = (): void => {
      // Not refilled here: a data port that refuses would make a loop. The next take() refills.
      this.opening--;
      this.stats.broken++;
      release();
    };
    sock.once('close', failed);
    sock.once('connect', () => {
      sock.removeListener('close', failed);
      this.opening--;
      if (this.closed) {
        release();
        return void sock.destroy();
      }
      const e: Entry = {
        sock,
        release,
        timer: setTimeout(() => {
          this.remove(e);
          this.stats.expired++;
          this.drop(e);
          this.refill();
        }, this.opts.idleMs ?? IDLE_MS).unref(),
        onClose: () => {
          // the forwarder could not reach the pod, or the manager went away
          this.remove(e);
          this.stats.broken++;
          this.drop(e);
        },
      };
      sock.once('close', e.onClose);
      this.idle.push(e);
    });
  }

  private remove(e: Entry): void {
    const i = this.idle.indexOf(e);
    if (i !== -1) this.idle.splice(i, 1);
  }

  private drop(e: Entry): void {
    clearTimeout(e.timer);
    e.sock.removeListener('close', e.onClose);
    if (!e.sock.destroyed) this.budget.closedFirst(); // our FIN goes first
    e.sock.destroy();
    e.release();
  }
}

/**
 * A TCP flow on a connection from the pool, or undefined when the pool is
 * empty, the pooled connection broke before the manager answered, or it
 * reached a manager that does not know the session (opened ahead to a
 * manager pod that is being replaced): the caller then opens the flow
 * another way. Any other dial error is the destination's, and is thrown.
 * The flow's half-close goes beside it through `halfClose` (the manager's
 * HTTP/2 data plane): a FIN through the port-forward would make the
 * container runtime close the pod's side of it a second later, cutting off
 * an answer that comes after a pause.
 */
export async function openPooledFlow(
  pool: RawConnectionPool,
  req: RawFlowRequest,
  halfClose: (flow: string, sentBytes: number) => Promise<boolean>,
  counters?: JoinCounters,
  onClosedFirst?: () => void,
): Promise<JoinableFlow | undefined> {
  const c = pool.take();
  if (!c) return undefined;
  try {
    return await openRawFlow(pool.address, req, c.release, { counters, opened: c.sock, halfClose, onClosedFirst });
  } catch (err) {
    if (err instanceof DataPortError || (err instanceof DialError && err.code === 'DENIED')) return undefined;
    throw err;
  }
}

/** How a process reaches the manager's data plane for TCP flows. */
export interface TcpDataPlane {
  address: string;
  h2: H2FlowClient;
  /** raw flows on connections of their own (the manager is reached directly) */
  rawFlows: boolean;
  budget: RawFlowBudget;
  /** where rawFlows is false: connections opened ahead */
  pool?: RawConnectionPool;
}

/**
 * A TCP flow on the manager's data plane: a raw flow on a connection of its
 * own where the manager is reached directly (within the budget), else on a
 * connection from the pool, else an HTTP/2 stream. A raw flow's half-close
 * goes beside it (h2.halfClose) and its FIN follows the manager's, so that the
 * manager, not the laptop, keeps the closed connection's TIME_WAIT (see
 * RawFlowBudget): over port-forward this is also what keeps the answer to a
 * half-closed request (see openPooledFlow).
 */
export async function openTcpFlow(dp: TcpDataPlane, req: RawFlowRequest, counters?: JoinCounters): Promise<JoinableFlow> {
  const release = dp.rawFlows ? dp.budget.take() : undefined;
  const halfClose = (flow: string, n: number): Promise<boolean> => dp.h2.halfClose(flow, n);
  const onClosedFirst = (): void => dp.budget.closedFirst();
  if (release) return openRawFlow(dp.address, req, release, { counters, halfClose, onClosedFirst });
  const pooled = dp.pool && (await openPooledFlow(dp.pool, req, halfClose, counters, onClosedFirst));
  if (pooled) return pooled;
  const stream = await dp.h2.open('tcp', req.host, req.port, req.source);
  return { join: (sock, onDone) => joinSocket(sock, stream, counters, onDone), cancel: () => stream.close() };
}
