import { PROTOCOL, VERSION } from '../../core/version';
import { parse } from '../args';
import type { CliContext } from '../context';
import { daemonSocketExists } from '../daemon-client';
import { printData, say } from '../output';
import { COMMANDS } from '../spec';

/**
 * `rdbg version`: this rdbg's version and Node's; connected, also the
 * manager's, as the daemon last heard it. The daemon is asked only when its
 * socket is there, so a version without a session loads no gRPC.
 */
export async function versionCommand(argv: string[], ctx: CliContext): Promise<void> {
  const { values } = parse('version', argv, COMMANDS.version.flags);
  const out: Record<string, string | number | null> = { client_version: VERSION, protocol: PROTOCOL, node: process.versions.node };
  if (!values.client && daemonSocketExists(ctx.config.runtimeDir)) {
    const st = await (await import('./connect')).getStatus(ctx);
    out.manager_version = st?.manager?.version || null;
    out.manager_address = st?.manager_address || null;
  }
  if (values.output) return printData(values.output, out);
  say(`rdbg ${VERSION} (protocol ${PROTOCOL}, Node ${process.versions.node})`);
  if (out.manager_version) say(`traffic manager ${out.manager_version} at ${out.manager_address}`);
}
