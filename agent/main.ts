/** `rdbg agent run ...`: the traffic agent sidecar. */
export async function agentMain(argv: string[]): Promise<void> {
  process.stdout.write(`rdbg agent: not implemented yet (${argv.join(' ')})\n`);
  process.exitCode = 2;
}
