// Shell completion. The scripts `rdbg completion bash|zsh|fish` prints are
// thin: they hand the words typed so far to the hidden `rdbg __complete`,
// which answers in cobra's protocol (kubectl's): one candidate per line, then
// ":DIRECTIVE". The same protocol lets `kubectl rdbg <TAB>` complete through
// the kubectl_complete-rdbg plugin helper.
import { Codes, RdbgError } from '../core/errors';
import type { CliContext } from './context';
import { parse } from './args';
import { say } from './output';
import { COMMANDS, GLOBAL_FLAGS, type CommandSpec, type Completion, type FlagSpec } from './spec';

/** cobra's ShellCompDirective: 0 lets the shell complete file names, 4 does not. */
const FILES = 0;
const NO_FILES = 4;

interface Answer {
  candidates: string[];
  directive: number;
}

const visibleCommands = (cmds: Record<string, CommandSpec>): string[] =>
  Object.entries(cmds).filter(([, c]) => !c.hidden).map(([n]) => n);

/** What the word being typed (the last of words) can be, from the table alone; `ask` names what only the cluster or daemon knows. */
export function completeWords(words: readonly string[]): Answer & { ask?: { what: Completion; flags: Record<string, string> } } {
  const cur = words.at(-1) ?? '';
  const before = words.slice(0, -1);
  if (before.includes('--')) return { candidates: [], directive: FILES };
  const filter = (xs: string[]): string[] => xs.filter((x) => x.startsWith(cur));
  const first = before[0];
  if (first === undefined) return { candidates: filter(visibleCommands(COMMANDS)), directive: NO_FILES };
  if (!Object.hasOwn(COMMANDS, first)) return { candidates: [], directive: NO_FILES };
  let spec: CommandSpec = COMMANDS[first as keyof typeof COMMANDS];
  let i = 1;
  while (spec.sub && i < before.length && Object.hasOwn(spec.sub, before[i])) spec = spec.sub[before[i++]];
  if (spec.sub) return { candidates: i === before.length ? filter(visibleCommands(spec.sub)) : [], directive: NO_FILES };

  const flags: Record<string, FlagSpec> = { ...GLOBAL_FLAGS, ...spec.flags };
  const byShort = (s: string): string | undefined => Object.keys(flags).find((n) => flags[n].short === s);
  // The flags given so far (for --namespace, --context, --kubeconfig), and the positionals.
  const given: Record<string, string> = {};
  const positionals: string[] = [];
  let pending: string | undefined;
  for (const w of before.slice(i)) {
    if (pending) {
      given[pending] = w;
      pending = undefined;
    } else if (w.startsWith('--')) {
      const [name, value] = w.slice(2).split(/=(.*)/s, 2);
      if (flags[name]?.type !== 'string') continue;
      if (value === undefined) pending = name;
      else given[name] = value;
    } else if (/^-[a-zA-Z]$/.test(w)) {
      const name = byShort(w[1]);
      if (name && flags[name].type === 'string') pending = name;
    } else positionals.push(w);
  }
  const value = (f: FlagSpec | undefined, prefix = ''): Answer & { ask?: { what: Completion; flags: Record<string, string> } } => {
    const typed = cur.slice(prefix.length);
    if (f?.choices) return { candidates: f.choices.filter((c) => c.startsWith(typed)).map((c) => prefix + c), directive: NO_FILES };
    if (f?.complete === 'file' || !f?.complete) return { candidates: [], directive: f?.complete === 'file' ? FILES : NO_FILES };
    return { candidates: [], directive: NO_FILES, ask: { what: f.complete, flags: given } };
  };
  if (pending) return value(flags[pending]);
  if (cur.startsWith('--') && cur.includes('=')) {
    const name = cur.slice(2, cur.indexOf('='));
    return value(flags[name], `--${name}=`);
  }
  if (cur.startsWith('-')) {
    return { candidates: filter(Object.entries(flags).flatMap(([n, f]) => [`--${n}`, ...(f.short ? [`-${f.short}`] : [])])), directive: NO_FILES };
  }
  const what = spec.args?.[Math.min(positionals.length, spec.args.length - 1)];
  if (!spec.args || positionals.length >= spec.args.length) return { candidates: [], directive: spec.positionals ? FILES : NO_FILES };
  if (what === 'command') return { candidates: filter(visibleCommands(COMMANDS)), directive: NO_FILES };
  return { candidates: [], directive: NO_FILES, ask: what ? { what, flags: given } : undefined };
}

/** Names only the cluster (or the daemon) knows; none, quietly, when it cannot be asked. */
async function ask(what: Completion, flags: Record<string, string>, cur: string, ctx: CliContext): Promise<string[]> {
  if (what === 'intercept') {
    const { callDaemon, daemonClient, daemonSocketExists } = await import('./daemon-client');
    if (!daemonSocketExists(ctx.config.runtimeDir)) return [];
    const client = daemonClient(ctx.config.runtimeDir);
    const r = await callDaemon(client, 'List', { session_id: '', all: false }, 2000);
    return [...new Set(r.intercepts.map((i) => i.spec?.workload ?? ''))].filter((n) => n && n.startsWith(cur));
  }
  const { loadKube } = await import('../kube/config');
  const kube = loadKube({ kubeconfig: flags.kubeconfig, kubeconfigList: ctx.config.kubeconfig, context: what === 'context' ? undefined : flags.context });
  if (what === 'context') return kube.kc.getContexts().map((c) => c.name).filter((n) => n.startsWith(cur));
  const k8s = await import('@kubernetes/client-node');
  const core = kube.kc.makeApiClient(k8s.CoreV1Api);
  if (what === 'namespace') return (await core.listNamespace()).items.map((n) => n.metadata?.name ?? '').filter((n) => n.startsWith(cur));
  // workload: Services by name, as intercept takes them; KIND/NAME once a "/" is typed.
  const namespace = flags.namespace ?? kube.namespace;
  const slash = cur.indexOf('/');
  if (slash < 0) return (await core.listNamespacedService({ namespace })).items.map((s) => s.metadata?.name ?? '').filter((n) => n.startsWith(cur));
  const kind = cur.slice(0, slash).toLowerCase();
  const apps = kube.kc.makeApiClient(k8s.AppsV1Api);
  const lists: Record<string, () => Promise<{ items: { metadata?: { name?: string } }[] }>> = {
    deployment: () => apps.listNamespacedDeployment({ namespace }),
    deploy: () => apps.listNamespacedDeployment({ namespace }),
    statefulset: () => apps.listNamespacedStatefulSet({ namespace }),
    sts: () => apps.listNamespacedStatefulSet({ namespace }),
    daemonset: () => apps.listNamespacedDaemonSet({ namespace }),
    ds: () => apps.listNamespacedDaemonSet({ namespace }),
    replicaset: () => apps.listNamespacedReplicaSet({ namespace }),
    rs: () => apps.listNamespacedReplicaSet({ namespace }),
    pod: () => core.listNamespacedPod({ namespace }),
    po: () => core.listNamespacedPod({ namespace }),
  };
  const list = lists[kind];
  if (!list) return [];
  return (await list()).items.map((o) => `${cur.slice(0, slash)}/${o.metadata?.name ?? ''}`).filter((n) => n.startsWith(cur));
}

/** `rdbg __complete WORDS... CURRENT`: the candidates for CURRENT, then ":DIRECTIVE". */
export async function completeCommand(words: string[], ctx: CliContext): Promise<void> {
  const answer = completeWords(words.length ? words : ['']);
  let candidates = answer.candidates;
  if (answer.ask) {
    try {
      candidates = await ask(answer.ask.what, answer.ask.flags, words.at(-1) ?? '', ctx);
    } catch {
      // No cluster, no daemon, no rights: nothing to offer, and nothing printed into the user's command line.
      candidates = [];
    }
  }
  for (const c of candidates) say(c);
  say(`:${answer.directive}`);
}

const BASH = `# rdbg completion for bash: source <(rdbg completion bash)
_rdbg() {
  local cur=\${COMP_WORDS[COMP_CWORD]} out directive
  out=$("\${COMP_WORDS[0]}" __complete "\${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null) || return
  directive=\${out##*:}
  out=\${out%:*}
  local IFS=$'\\n'
  COMPREPLY=($(compgen -W "$out" -- "$cur"))
  if [[ \${#COMPREPLY[@]} -eq 0 && $directive == 0 ]]; then
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}
complete -F _rdbg rdbg kubectl-rdbg
`;

const ZSH = `#compdef rdbg kubectl-rdbg
# rdbg completion for zsh: rdbg completion zsh > "\${fpath[1]}/_rdbg", or source <(rdbg completion zsh)
_rdbg() {
  local -a out
  out=("\${(@f)$(\${words[1]} __complete "\${(@)words[2,CURRENT]}" 2>/dev/null)}")
  local directive=\${out[-1]#:}
  out=("\${(@)out[1,-2]}")
  if (( \${#out} == 0 )) && [[ $directive == 0 ]]; then
    _files
  else
    compadd -- "\${out[@]}"
  fi
}
if [[ "\${funcstack[1]}" == "_rdbg" ]]; then
  _rdbg "$@"
else
  compdef _rdbg rdbg kubectl-rdbg
fi
`;

const FISH = `# rdbg completion for fish: rdbg completion fish > ~/.config/fish/completions/rdbg.fish
function __rdbg_complete
    set -l words (commandline -opc)
    set -l cmd $words[1]
    set -e words[1]
    set -l cur (commandline -ct)
    set -l out (command $cmd __complete $words "$cur" 2>/dev/null)
    or return
    set -l directive (string replace -r '^:' '' -- $out[-1])
    set -e out[-1]
    if test (count $out) -eq 0 -a "$directive" = 0
        __fish_complete_path "$cur"
    else
        printf '%s\\n' $out
    end
end
complete -c rdbg -f -a '(__rdbg_complete)'
complete -c kubectl-rdbg -f -a '(__rdbg_complete)'
`;

const SCRIPTS: Record<string, string> = { bash: BASH, zsh: ZSH, fish: FISH };

/** `rdbg completion bash|zsh|fish` */
export async function completionCommand(argv: string[]): Promise<void> {
  const { positionals } = parse('completion', argv, COMMANDS.completion.flags, true);
  const shells = Object.keys(SCRIPTS);
  if (positionals.length !== 1 || !Object.hasOwn(SCRIPTS, positionals[0])) {
    throw new RdbgError(Codes.BAD_ARGUMENT, `completion takes one shell: ${shells.join(', ')}`, 'e.g. source <(rdbg completion bash)');
  }
  process.stdout.write(SCRIPTS[positionals[0]]);
}
