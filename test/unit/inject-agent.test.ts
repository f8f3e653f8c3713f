// The injected agent's side: the app environment it reports and the rotating token file.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { readConfig } from '../../src/core/config';
import { tokenSource } from '../../agent/main';
import { appEnvironment } from '../../agent/traffic-agent';

t.test('the reported environment is the app\'s copy, without the agent\'s own variables', async (t) => {
  const env = {
    LITERAL: 'x', POD_NAME: 'echo-1', POD_IP: '10.244.0.9', PATH: '/usr/bin', NODE_ENV: 'production', HOME: '/',
    HOSTNAME: 'echo-1', RDBG_MANAGER: 'm:8081', RDBG_AGENT_TOKEN_FILE: '/t', RDBG_AGENT_ENV: 'POD_IP,PATH,NODE_ENV,HOME',
  };
  t.same(appEnvironment(env, readConfig('agent', env).agentEnv), { LITERAL: 'x', POD_NAME: 'echo-1', HOSTNAME: 'echo-1' });
  t.same(appEnvironment({ A: '1', PATH: '/bin', RDBG_X: 'y' }), { A: '1', PATH: '/bin' }, 'outside a pod: everything but rdbg\'s');
});

t.test('the token file is read again at every arrival', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'rdbg-token-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'token');
  writeFileSync(file, 'first\n');
  const cfg = readConfig('agent', { RDBG_AGENT_TOKEN_FILE: file });
  const token = tokenSource(cfg.agentTokenFile, cfg.agentToken);
  t.equal(token(), 'first');
  writeFileSync(file, 'rotated');
  t.equal(token(), 'rotated');
  rmSync(file);
  t.equal(token(), '', 'unreadable: empty (the manager refuses, the agent retries)');
  const fixed = readConfig('agent', { RDBG_AGENT_TOKEN: 'fixed' });
  t.equal(tokenSource(fixed.agentTokenFile, fixed.agentToken)(), 'fixed');
});
