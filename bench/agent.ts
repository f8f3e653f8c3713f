/**
 * The traffic agent's tax: median latency of small HTTP/1.1 requests and
 * throughput of a large response, each path beside its reference:
 *   app:    caller -> agent -> app            vs  caller -> app
 *   laptop: caller -> agent -> manager -> laptop daemon -> laptop server
 *                                            vs  caller -> laptop server
 * The manager, the agent and the laptop's daemon stand-in (FakeLaptop) run as
 * separate processes, as they would in real life; the caller and both servers
 * share this one. Everything is on 127.0.0.1. Medians of 5 rounds (the
 * figures move by +-50 us between runs on this shared machine). About 40 s.
 *
 * `node dist/bench/agent.js` prints the figures as JSON; `benchAgent()` returns them.
 */
import * as http from 'node:http';
import { AgentEnv, BIG, latencyUs, listen, median, request, server, warmUp } from './agent-env';

const ROUNDS = 5;

async function throughputMBs(port: number, headers: Record<string, string>): Promise<number> {
  const agent = new http.Agent({ keepAlive: false });
  const t0 = process.hrtime.bigint();
  const r = await request(agent, port, '/big', headers);
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.bytes !== BIG) throw new Error(`short response: ${r.bytes}`);
  return BIG / 1e6 / s;
}

export async function benchAgent(): Promise<Record<string, number>> {
  const cleanup: Array<() => unknown> = [];
  try {
    const app = server('app');
    const lap = server('laptop');
    const appPort = await listen(app);
    const lapPort = await listen(lap);
    cleanup.push(() => app.close(), () => lap.close(), () => app.closeAllConnections(), () => lap.closeAllConnections());

    const env = await AgentEnv.start();
    cleanup.push(() => env.close());
    const agentPort = await env.agent('bench', appPort);
    await env.laptop([{ workload: 'bench', port: appPort, header: { name: 'x-user', value: 'bench' }, localPort: lapPort }]);

    const mine = { 'x-user': 'bench' };
    const ka = new http.Agent({ keepAlive: true });
    cleanup.push(() => ka.destroy());
    for (let i = 0; i < 100 && (await request(ka, agentPort, '/small', mine)).who !== 'laptop'; i++) await new Promise((r) => setTimeout(r, 50));
    if ((await request(ka, agentPort, '/small', mine)).who !== 'laptop') throw new Error('the intercept never took effect');

    // Measured warm, as an agent in front of a service with steady traffic is: V8 compiles the
    // request path over the first couple of thousand requests (a fresh agent's tax: about
    // +400 us over the first 500 requests, +145 us after 2,500, on this machine).
    await warmUp(appPort, {});
    await warmUp(agentPort, {});
    await warmUp(lapPort, {});
    await warmUp(agentPort, mine);

    const lat = { directApp: [] as number[], agentApp: [] as number[], directLaptop: [] as number[], agentLaptop: [] as number[] };
    const tput = { directApp: [] as number[], agentApp: [] as number[], directLaptop: [] as number[], agentLaptop: [] as number[] };
    for (let round = 0; round < ROUNDS; round++) {
      lat.directApp.push(await latencyUs(appPort, {}));
      lat.agentApp.push(await latencyUs(agentPort, {}));
      lat.directLaptop.push(await latencyUs(lapPort, {}));
      lat.agentLaptop.push(await latencyUs(agentPort, mine));
      tput.directApp.push(await throughputMBs(appPort, {}));
      tput.agentApp.push(await throughputMBs(agentPort, {}));
      tput.directLaptop.push(await throughputMBs(lapPort, {}));
      tput.agentLaptop.push(await throughputMBs(agentPort, mine));
    }
    const m = (xs: number[]): number => Math.round(median(xs) * 10) / 10;
    const out = {
      agent_latency_direct_app_us: m(lat.directApp),
      agent_latency_via_agent_app_us: m(lat.agentApp),
      agent_added_latency_app_us: m(lat.agentApp.map((x, i) => x - lat.directApp[i])),
      agent_latency_direct_laptop_us: m(lat.directLaptop),
      agent_latency_via_agent_laptop_us: m(lat.agentLaptop),
      agent_added_latency_laptop_us: m(lat.agentLaptop.map((x, i) => x - lat.directLaptop[i])),
      agent_throughput_direct_app_MBps: m(tput.directApp),
      agent_throughput_via_agent_app_MBps: m(tput.agentApp),
      agent_throughput_app_ratio: Math.round((median(tput.agentApp) / median(tput.directApp)) * 100) / 100,
      agent_throughput_direct_laptop_MBps: m(tput.directLaptop),
      agent_throughput_via_agent_laptop_MBps: m(tput.agentLaptop),
      agent_throughput_laptop_ratio: Math.round((median(tput.agentLaptop) / median(tput.directLaptop)) * 100) / 100,
    };
    return out;
  } finally {
    for (const c of cleanup.reverse()) {
      try {
        await c();
      } catch {
        // best effort
      }
    }
  }
}

if (require.main === module) {
  benchAgent().then(
    (r) => {
      process.stdout.write(JSON.stringify(r, null, 2) + '\n');
      process.exit(0);
    },
    (err: Error) => {
      process.stderr.write(`bench agent: ${err.stack}\n`);
      process.exit(1);
    },
  );
}
