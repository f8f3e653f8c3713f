import type { Options } from './args';

/**
 * The settings of the TUN connection: `rdbg connect` takes them from the user
 * and hands them on to the root daemon unchanged, so both parse one table.
 */
export const ROOT_OPTIONS = {
  'also-proxy': { type: 'string', multiple: true },
  'never-proxy': { type: 'string', multiple: true },
  'allow-conflicting-subnets': { type: 'boolean' },
  dns: { type: 'string', default: 'auto' },
  'dns-include': { type: 'string', multiple: true },
  'dns-exclude': { type: 'string', multiple: true },
  'tun-name': { type: 'string', default: 'rdbg0' },
  // A second TUN session on one machine needs its own name and addresses.
  'tun-cidr': { type: 'string', default: '169.254.83.0/24' },
  'tun-cidr6': { type: 'string', default: 'fd72:6462:6700::/64' },
} as const satisfies Options;

/** The command-line form of the ROOT_OPTIONS a user gave, for the root daemon. */
export function rootArgv(values: Record<string, string | boolean | (string | boolean)[] | undefined>): string[] {
  const argv: string[] = [];
  for (const [name, spec] of Object.entries(ROOT_OPTIONS)) {
    const v = values[name];
    if (v === undefined || v === false) continue;
    if (spec.type === 'boolean') argv.push(`--${name}`);
    else for (const x of Array.isArray(v) ? v : [v]) argv.push(`--${name}`, String(x));
  }
  return argv;
}
