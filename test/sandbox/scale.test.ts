import t from 'tap';
import { runScale } from '../helpers/scale-run';

// The scale tier, bounded: one manager, 200 sessions each holding a header
// intercept on one of 20 workloads (an agent each), for a minute. Every
// heartbeat is answered, every lease kept, every intercept ACTIVE and seen by
// its agent. Its cost per session is a figure of `make bench` (bench/scale.ts), not asserted here.

const SESSIONS = 200;
const WORKLOADS = 20;

t.test('200 sessions and 200 intercepts on one manager for a minute: nothing lost', async (t) => {
  const r = await runScale({ sessions: SESSIONS, workloads: WORKLOADS, durationMs: 60_000, sampleMs: 10_000 });
  const rep = r.report;
  t.same(rep.failures, [], 'no failure of any call, no warning from the manager');
  t.equal(rep.sessions, SESSIONS);
  t.equal(rep.intercepts, SESSIONS, 'every intercept created');
  t.equal(rep.sessionsLost, 0, 'no session lost');
  t.equal(rep.agentsLost, 0, 'no agent lost');
  t.equal(rep.heartbeatsFailed, 0, 'no failed heartbeat');
  t.equal(rep.agentHeartbeatsFailed, 0, 'no failed agent heartbeat');
  // A minute of heartbeats every 3 s: about 20 per session; at least most of them were sent.
  t.ok(rep.heartbeats >= SESSIONS * 15, `${rep.heartbeats} heartbeats`);
  t.equal(rep.interceptsListed, SESSIONS, 'the manager lists every intercept');
  t.equal(rep.interceptsActive, SESSIONS, 'every intercept ACTIVE');
  t.equal(rep.interceptsSeenByAgents, SESSIONS, 'each agent holds its workload\'s intercepts');
  t.comment(`manager: heap ${r.idle.heapMb.toFixed(1)} -> ${r.load.heapMb.toFixed(1)} MB (${r.heapPerSessionKb.toFixed(1)} KB/session), RSS ${r.idle.rssMb.toFixed(1)} -> ${r.load.rssMb.toFixed(1)} MB, ` +
    `CPU ${r.load.cpuPercent.toFixed(2)}% (${r.cpuUsPerSessionPerS.toFixed(1)} us/session/s); heartbeat p50 ${rep.heartbeatMs.p50.toFixed(1)} ms, p99 ${rep.heartbeatMs.p99.toFixed(1)} ms`);
});
