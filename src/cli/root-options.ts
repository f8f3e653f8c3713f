import { ROOT_FLAGS } from './spec';

/** The command-line form of the TUN settings (ROOT_FLAGS) a user gave to connect, for the root daemon. */
export function rootArgv(values: Record<string, string | boolean | (string | boolean)[] | undefined>): string[] {
  const argv: string[] = [];
  for (const [name, spec] of Object.entries(ROOT_FLAGS)) {
    const v = values[name];
    if (v === undefined || v === false) continue;
    if (spec.type === 'boolean') argv.push(`--${name}`);
    else for (const x of Array.isArray(v) ? v : [v]) argv.push(`--${name}`, String(x));
  }
  return argv;
}
