// Runs a WebhookServer as its own process (the cluster tier runs it in the
// node's network namespace, where the apiserver calls it):
//   node webhook-runner.js TLS_DIR SETTINGS_JSON
// Listens on 127.0.0.1, a free port; prints "listening PORT" when ready.
import type { InjectSettings } from '../../manager/kube/inject';
import { WebhookServer } from '../../manager/kube/webhook-server';

async function main(): Promise<void> {
  const [tlsDir, settings] = process.argv.slice(2);
  const server = new WebhookServer({ settings: JSON.parse(settings) as InjectSettings, tlsDir, host: '127.0.0.1', port: 0, reloadMs: 2000 });
  const port = await server.start();
  process.stdout.write(`listening ${port}\n`);
  process.once('SIGTERM', () => void server.stop().then(() => process.exit(0)));
}

main().catch((err: unknown) => {
  process.stderr.write(`webhook-runner: ${String(err)}\n`);
  process.exit(1);
});
