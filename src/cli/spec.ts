/**
 * Every command of the rdbg binary, its flags and its help, as data: the
 * commands parse their arguments with these tables (src/cli/args.ts), `--help`
 * and `rdbg help` print them (src/cli/help.ts) and shell completion reads
 * them (src/cli/completion.ts). Nothing here loads a module: a `--help` or a
 * completion request costs no more than a Node start.
 */

/** What a value completes to: names asked of the cluster, files, or fixed choices. */
export type Completion = 'file' | 'namespace' | 'context' | 'workload' | 'intercept' | 'command';

export interface FlagSpec {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
  default?: string | boolean;
  /** the placeholder of a string flag's value in help, e.g. HOST:PORT */
  value?: string;
  /** the only values accepted (checked by parse, listed by help and completion) */
  choices?: readonly string[];
  complete?: Completion;
  help: string;
}

export type Flags = Record<string, FlagSpec>;

export interface CommandSpec {
  summary: string;
  /** the lines after "Usage:", without "rdbg " */
  usage: readonly string[];
  about?: string;
  examples?: readonly string[];
  flags: Flags;
  /** what the positional arguments complete to, in order */
  args?: readonly Completion[];
  /** takes positional arguments (checked by the command itself) */
  positionals?: boolean;
  /** the subcommands (manager install, agent run, ...); a command with them runs none itself */
  sub?: Record<string, CommandSpec>;
  /** started by rdbg itself, not by people: left out of the command list and completion */
  hidden?: boolean;
}

const KUBECONFIG = { type: 'string', value: 'FILE', complete: 'file', help: 'the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)' } as const satisfies FlagSpec;
const CONTEXT = { type: 'string', value: 'NAME', complete: 'context', help: "the kubeconfig context (default: the kubeconfig's current one)" } as const satisfies FlagSpec;
const MANAGER_NAMESPACE = { type: 'string', default: 'rdbg', value: 'NS', complete: 'namespace', help: 'where the traffic manager is installed' } as const satisfies FlagSpec;
const output = <C extends string>(...choices: C[]) =>
  ({ type: 'string', short: 'o', value: 'FORMAT', choices, help: `print ${choices.join(' or ')} instead of text (docs/cli.md lists the fields)` }) as const satisfies FlagSpec;

/** The TUN session's settings: `rdbg connect` takes them and hands them on to the root daemon unchanged. */
export const ROOT_FLAGS = {
  'also-proxy': { type: 'string', multiple: true, value: 'CIDR', help: 'route this subnet to the cluster too (the manager must allow it)' },
  'never-proxy': { type: 'string', multiple: true, value: 'CIDR', help: 'never route this subnet to the cluster' },
  'allow-conflicting-subnets': { type: 'boolean', help: "route cluster subnets that overlap this machine's routes anyway" },
  dns: { type: 'string', default: 'auto', value: 'MODE', choices: ['auto', 'resolv.conf', 'none'], help: 'how cluster names reach the resolver: auto (systemd-resolved or resolv.conf), resolv.conf, or none' },
  'dns-include': { type: 'string', multiple: true, value: 'SUFFIX', help: 'also resolve names under SUFFIX in the cluster' },
  'dns-exclude': { type: 'string', multiple: true, value: 'SUFFIX', help: 'never resolve names under SUFFIX in the cluster' },
  'tun-name': { type: 'string', default: 'rdbg0', value: 'NAME', help: 'the TUN device (a second session on one machine needs its own)' },
  'tun-cidr': { type: 'string', default: '169.254.83.0/24', value: 'CIDR', help: "the TUN device's IPv4 subnet (its own per session)" },
  'tun-cidr6': { type: 'string', default: 'fd72:6462:6700::/64', value: 'CIDR', help: "the TUN device's IPv6 subnet" },
} as const satisfies Flags;

const connect = {
  summary: "reach the cluster's network from this machine",
  usage: ['connect [--context NAME] [--namespace NS] [flags]', 'connect --manager HOST:PORT [--socks [HOST:]PORT] [flags]'],
  about: `Starts the user daemon and opens a session with the traffic manager. Without
--manager, the manager is the one installed in the current kubeconfig context
("rdbg manager install"), reached through the apiserver's port-forward.
--manager HOST:PORT alone talks to a standalone manager ("rdbg manager serve");
together with --kubeconfig, --context or --kubernetes it is the address where
the cluster exposes the manager's data plane (the direct transport), while the
session still opens through the apiserver. With --socks, serves the cluster's
network as a SOCKS5 proxy (no root needed; names resolve in the cluster).
Without it, the root daemon (through sudo) routes the cluster's subnets into a
TUN device and answers cluster names, so every program on this machine
reaches the cluster.`,
  examples: [
    'rdbg connect --context staging && curl http://echo.default/',
    'rdbg connect --manager 10.0.0.1:8081 --socks 1080 && curl --socks5-hostname 127.0.0.1:1080 http://echo.default/',
  ],
  flags: {
    kubeconfig: KUBECONFIG,
    context: CONTEXT,
    namespace: { type: 'string', short: 'n', value: 'NS', complete: 'namespace', help: "the namespace short names resolve in (default: the context's)" },
    'manager-namespace': MANAGER_NAMESPACE,
    manager: { type: 'string', value: 'HOST:PORT', help: 'a standalone manager, or with Kubernetes the address of its data plane' },
    kubernetes: { type: 'boolean', help: 'open the session through the apiserver even with --manager' },
    socks: { type: 'string', value: '[HOST:]PORT', help: 'serve the cluster as a SOCKS5 proxy here instead of a TUN device (no root)' },
    ...ROOT_FLAGS,
  },
} as const satisfies CommandSpec;

const intercept = {
  summary: "send a workload's requests to this machine",
  usage: ['intercept NAME --port LOCAL[:REMOTE] [--header NAME=VALUE]... [flags] [-- COMMAND ARGS...]'],
  about: `Sends NAME's requests that match the rule (all of the port without a rule) to
LOCAL on this machine. With -- COMMAND, runs it with the pod's environment and
ends the intercept when it exits (rdbg then exits with its code).
On Kubernetes, NAME is a Service (or KIND/NAME of a Deployment, StatefulSet,
ReplicaSet, DaemonSet or Pod); the first intercept of a workload injects the
traffic agent into its pods (they restart once); later ones do not restart them.`,
  examples: [
    'rdbg intercept echo --port 8080:80 --header x-dev=me -- node --inspect app.js',
    'rdbg intercept deploy/api --port 9000:http --path-prefix /v2 --env-file api.env',
    'rdbg intercept api --port 9000 --header x-dev=me --mount /tmp/api -- node app.js   # reads $RDBG_ROOT/etc/config',
  ],
  args: ['workload'],
  positionals: true,
  flags: {
    port: { type: 'string', short: 'p', value: 'LOCAL[:REMOTE]', help: "the local port, and the workload's port (number or name) when it has several" },
    header: { type: 'string', multiple: true, value: 'NAME=VALUE', help: 'only requests with this header (NAME=~REGEX: matching it); repeat for all of several' },
    'path-prefix': { type: 'string', value: '/PATH', help: 'only requests whose path starts with it' },
    mirror: { type: 'boolean', help: 'send a copy of the requests here; the pods still answer them' },
    replace: { type: 'boolean', help: 'take every request and stop the app in the pods (see "rdbg replace")' },
    namespace: { type: 'string', short: 'n', value: 'NS', complete: 'namespace', help: "the workload's namespace (default: the session's)" },
    'env-file': { type: 'string', value: 'FILE', complete: 'file', help: "write the pod's environment to FILE (KEY=VALUE lines)" },
    'env-json': { type: 'string', value: 'FILE', complete: 'file', help: "write the pod's environment to FILE as JSON" },
    'local-host': { type: 'string', value: 'HOST', help: 'where the local process listens (default 127.0.0.1)' },
    mount: { type: 'string', value: 'DIR', complete: 'file', help: "mount the app container's volumes at DIR, live (sshfs); COMMAND gets it as RDBG_ROOT; false: none" },
    'copy-files': { type: 'string', value: 'DIR', complete: 'file', help: "copy the app container's volumes to DIR once (no FUSE needed)" },
  },
} as const satisfies CommandSpec;

const replace = {
  summary: "take a workload's place: every request here, its app stopped",
  usage: ['replace NAME --port LOCAL[:REMOTE] [flags] [-- COMMAND ARGS...]'],
  about: `Sends every request to NAME's port to LOCAL on this machine, and stops the
app in its pods (SIGSTOP: it consumes no queue and writes nothing) until you
leave, quit, or your session's lease runs out after a crash; then the app goes
on where it stopped. The pods stay, so the Service and the agent stay, and the
pod template is not changed. The agent answers the kubelet's probes that reach
it meanwhile. One replace per workload; others may still intercept it with
--header. Otherwise as intercept.`,
  examples: ['rdbg replace worker --port 8080 -- node --inspect worker.js'],
  args: ['workload'],
  positionals: true,
  flags: {
    port: intercept.flags.port,
    namespace: intercept.flags.namespace,
    'env-file': intercept.flags['env-file'],
    'env-json': intercept.flags['env-json'],
    'local-host': intercept.flags['local-host'],
    mount: intercept.flags.mount,
    'copy-files': intercept.flags['copy-files'],
  },
} as const satisfies CommandSpec;

const status = {
  summary: "the session's health, subnets and counters",
  usage: ['status [-o json|yaml]'],
  examples: ['rdbg status', 'rdbg status -o json | jq .state'],
  flags: { output: output('json', 'yaml') },
} as const satisfies CommandSpec;

const leave = {
  summary: 'end an intercept',
  usage: ['leave NAME [-n NS]'],
  examples: ['rdbg leave echo'],
  args: ['intercept'],
  positionals: true,
  flags: { namespace: { type: 'string', short: 'n', value: 'NS', complete: 'namespace', help: "the workload's namespace, when two intercepted workloads share a name" } },
} as const satisfies CommandSpec;

const list = {
  summary: 'intercepts with their rules and counters',
  usage: ['list [--all] [-o json|yaml|wide]'],
  examples: ['rdbg list', 'rdbg list --all -o wide'],
  flags: {
    all: { type: 'boolean', short: 'a', help: "every session's intercepts, not only this one's" },
    output: { ...output('json', 'yaml', 'wide'), help: 'print json or yaml instead of the table, or the wide table (with agents, ids and messages)' },
  },
} as const satisfies CommandSpec;

const quit = {
  summary: 'end the session and stop the daemons',
  usage: ['quit'],
  about: 'Ends the intercepts, closes the session, stops the user and root daemons and\nundoes what they changed on this machine (routes, DNS, the TUN device).',
  examples: ['rdbg quit'],
  flags: {},
} as const satisfies CommandSpec;

const doctor = {
  summary: 'what would fail, checked before changing anything',
  usage: ['doctor [NAME] [--context NAME] [--namespace NS] [-o json|yaml]'],
  about: `Checks, without changing anything, what connect and intercept need: the
apiserver, your RBAC rights, the traffic manager and its version, whether the
apiserver reaches the injection webhook, Pod Security levels that would reject
the agent (naming the Services whose intercept they would refuse), cluster
subnets that overlap this machine's routes, and DNS. With NAME (a Service or
KIND/NAME, as for intercept), also whether intercepting it would be admitted.
Exits 1 when something would fail.`,
  examples: ['rdbg doctor', 'rdbg doctor echo -n shop -o json'],
  args: ['workload'],
  positionals: true,
  flags: {
    kubeconfig: KUBECONFIG,
    context: CONTEXT,
    namespace: { type: 'string', short: 'n', value: 'NS', complete: 'namespace', help: "the namespace to check (default: the context's)" },
    'manager-namespace': MANAGER_NAMESPACE,
    output: output('json', 'yaml'),
  },
} as const satisfies CommandSpec;

const version = {
  summary: 'print the version',
  usage: ['version [-o json|yaml]'],
  about: "Prints this rdbg's version and Node's. Connected, also the traffic manager's.",
  examples: ['rdbg version', 'rdbg version -o json'],
  flags: {
    output: output('json', 'yaml'),
    client: { type: 'boolean', help: "only this rdbg's version: do not ask the daemon" },
  },
} as const satisfies CommandSpec;

const INSTALL_FLAGS = {
  namespace: { type: 'string', short: 'n', default: 'rdbg', value: 'NS', complete: 'namespace', help: "the manager's namespace" },
  kubeconfig: KUBECONFIG,
  context: CONTEXT,
  image: { type: 'string', value: 'IMAGE', help: "the manager's and the agents' image (default: this version's)" },
  'pull-policy': { type: 'string', default: 'IfNotPresent', value: 'POLICY', choices: ['Always', 'IfNotPresent', 'Never'], help: "the image's pull policy" },
  timeout: { type: 'string', default: '180', value: 'SECONDS', help: 'how long to wait for the manager to be ready' },
  'allow-cidr': { type: 'string', multiple: true, value: 'CIDR', help: "let clients reach this subnet beyond the cluster's service and pod subnets" },
} as const satisfies Flags;

const managerServe = {
  summary: 'run the traffic manager (in the cluster, or standalone)',
  usage: [
    'manager serve --listen HOST:PORT [--service-cidr CIDR]... [--pod-cidr CIDR]... [flags]',
    'manager serve --kubernetes [--kubeconfig FILE] [--listen HOST:PORT] [flags]',
  ],
  about: `Runs the traffic manager. It dials destinations and resolves names with the
network and resolver of wherever it runs. gRPC on --listen is the control
plane (sessions, DNS, intercepts); every flow goes on the data port, the next
port unless --data-listen says otherwise: a TCP connection of its own per
flow from a client that reaches the manager directly, HTTP/2 streams (one per
flow) over port-forward and from agents.

Clients reach the cluster's service and pod subnets, and beyond them only
the subnets named by --allow-cidr (a client's --also-proxy asks, this
allows). Loopback, link-local (169.254.169.254 included), multicast and the
manager's own addresses are always refused, also when a name resolves to them.

Standalone (without --kubernetes): subnets and namespaces come from the flags;
the token, when set in RDBG_MANAGER_TOKEN, must be presented by clients and agents.

--kubernetes: runs in the cluster (the rdbg-manager Deployment). Service and pod
subnets and namespaces come from the apiserver (watched); the cluster domain,
DNS server and own namespace from the pod's resolv.conf and service account.
Clients may only call over port-forward (loopback); agents present a projected
service-account token (TokenReview); intercepts need the workload's claim.
It also serves the agent-injection webhook; injected agents run the image in
RDBG_AGENT_IMAGE (the manager's own).`,
  examples: ['rdbg manager serve --listen 0.0.0.0:8081 --service-cidr 10.96.0.0/12 --pod-cidr 10.244.0.0/16'],
  flags: {
    listen: { type: 'string', default: '0.0.0.0:8081', value: 'HOST:PORT', help: 'the control plane (gRPC)' },
    'data-listen': { type: 'string', value: 'HOST:PORT', help: "the data plane (default: the next port on --listen's host)" },
    'service-cidr': { type: 'string', multiple: true, value: 'CIDR', help: "the cluster's service subnet (standalone)" },
    'pod-cidr': { type: 'string', multiple: true, value: 'CIDR', help: "the cluster's pod subnet (standalone)" },
    'cluster-domain': { type: 'string', value: 'DOMAIN', help: 'the cluster domain (default: cluster.local, or the resolv.conf search path)' },
    namespace: { type: 'string', value: 'NS', help: "the manager's own namespace" },
    'cluster-namespace': { type: 'string', multiple: true, value: 'NS', help: 'a namespace whose short names clients resolve (standalone)' },
    'lease-seconds': { type: 'string', default: '15', value: 'SECONDS', help: 'how long a silent session or agent is kept' },
    'allow-cidr': { type: 'string', multiple: true, value: 'CIDR', help: "let clients reach this subnet beyond the cluster's" },
    kubernetes: { type: 'boolean', default: false, help: 'run in (or against) a cluster: subnets, namespaces and agents from the apiserver' },
    kubeconfig: { ...KUBECONFIG, help: 'with --kubernetes, run outside a pod with this kubeconfig' },
    'resolv-conf': { type: 'string', value: 'FILE', complete: 'file', help: 'with --kubernetes, the file naming the cluster DNS server (default /etc/resolv.conf)' },
    'webhook-listen': { type: 'string', default: '0.0.0.0:8443', value: 'HOST:PORT', help: 'the agent-injection webhook ("none": no webhook)' },
    'tls-dir': { type: 'string', value: 'DIR', complete: 'file', help: "the webhook's certificate (tls.crt, tls.key; default /var/run/rdbg/tls)" },
    'metrics-listen': { type: 'string', default: 'none', value: 'HOST:PORT', help: 'serve Prometheus metrics at http://HOST:PORT/metrics ("none": not served; the rdbg-manager Deployment serves them on 0.0.0.0:9090)' },
  },
} as const satisfies CommandSpec;

const manager = {
  summary: 'install, upgrade or run the traffic manager',
  usage: ['manager install|upgrade|serve [flags]'],
  flags: {},
  sub: {
    install: {
      summary: 'install the traffic manager in the cluster (needs cluster-admin)',
      usage: [
        'manager install [--namespace rdbg] [--image IMAGE] [--allow-cidr CIDR]... [flags]',
        'manager install --grant-user USER|--grant-group GROUP ... [--grant-namespace NS]...',
        'manager install --dry-run [-o yaml|json]',
      ],
      about: `Installs the traffic manager: namespace, service account, read-only cluster
role, webhook certificate, Deployment, Service and the agent injector webhook;
waits until the manager is ready. Running it again changes nothing.
--dry-run prints the objects and touches no cluster. --allow-cidr lets clients
reach a subnet beyond the cluster's service and pod subnets (the manager refuses
every other destination, whatever a client's --also-proxy asks).
It also creates the ClusterRole rdbg-developer (what a developer needs where
they intercept) and the Role rdbg-developer in the manager's namespace (connect).
--grant-user and --grant-group bind both to a user or group, in each
--grant-namespace, or with none in every namespace; grants add to earlier ones.`,
      examples: [
        'rdbg manager install',
        'rdbg manager install --grant-group developers --grant-namespace team-a --grant-namespace team-b',
        'rdbg manager install --dry-run -o yaml | kubectl apply -f -',
      ],
      flags: {
        ...INSTALL_FLAGS,
        'grant-user': { type: 'string', multiple: true, value: 'USER', help: 'let this user connect and intercept (binds rdbg-developer)' },
        'grant-group': { type: 'string', multiple: true, value: 'GROUP', help: 'let this group connect and intercept (binds rdbg-developer)' },
        'grant-namespace': { type: 'string', multiple: true, value: 'NS', complete: 'namespace', help: 'where the granted may intercept (default: every namespace)' },
        'dry-run': { type: 'boolean', help: 'print the objects instead of applying them' },
        output: output('yaml', 'json'),
      },
    },
    upgrade: {
      summary: "apply this version's manager objects and roll the manager",
      usage: ['manager upgrade [--namespace rdbg] [--image IMAGE] [--allow-cidr CIDR]... [flags]'],
      about: "Applies this version's objects, renews the webhook certificate and rolls the\nmanager. Without --allow-cidr it keeps the installed manager's allow list.",
      examples: ['rdbg manager upgrade'],
      flags: INSTALL_FLAGS,
    },
    serve: managerServe,
  },
} as const satisfies CommandSpec;

const uninstall = {
  summary: 'take rdbg out of a workload, or out of the cluster',
  usage: ['uninstall WORKLOAD [-n NS] [flags]', 'uninstall --all [--namespace rdbg] [--agent-namespace NS]... [flags]'],
  about: `With WORKLOAD (KIND/NAME or a name), takes the agent out of it: its pod
template is restored exactly and its pods restart once, without the agent.
With --all, removes rdbg's marks from every workload (or those in
--agent-namespace), which restores their pod templates, then deletes the
manager's objects.`,
  examples: ['rdbg uninstall deploy/echo -n shop', 'rdbg uninstall --all'],
  args: ['workload'],
  positionals: true,
  flags: {
    namespace: { type: 'string', short: 'n', default: 'rdbg', value: 'NS', complete: 'namespace', help: "the workload's namespace; with --all, the manager's" },
    kubeconfig: KUBECONFIG,
    context: CONTEXT,
    timeout: { type: 'string', default: '180', value: 'SECONDS', help: 'how long to wait for objects to go' },
    all: { type: 'boolean', help: 'every workload, and the manager' },
    'agent-namespace': { type: 'string', multiple: true, value: 'NS', complete: 'namespace', help: 'with --all, only the workloads in these namespaces' },
  },
} as const satisfies CommandSpec;

const agent = {
  summary: 'run a traffic agent beside an app',
  usage: ['agent run --manager HOST:PORT --workload NAME --namespace NS --app-port P --listen-port Q [flags]'],
  flags: {},
  sub: {
    run: {
      summary: 'run the traffic agent (the sidecar of an intercepted pod)',
      usage: ['agent run --manager HOST:PORT --workload NAME --namespace NS --app-port P --listen-port Q [flags]'],
      about: `Listens on the port the Service targets (Q) and forwards to the app (P);
requests that match an intercept go to the laptop that owns it. RDBG_MANAGER
may stand for --manager, RDBG_AGENT_TOKEN carries the agent credential (or
RDBG_AGENT_TOKEN_FILE names a file holding it, read again at every
re-arrival: a projected service-account token rotates). Diverted flows go on
the manager's data port, an HTTP/2 stream each.`,
      examples: ['rdbg agent run --manager 127.0.0.1:8081 --workload echo --namespace default --app-port 8080 --listen-port 9000'],
      flags: {
        manager: { type: 'string', value: 'HOST:PORT', help: "the manager's control plane (or RDBG_MANAGER)" },
        workload: { type: 'string', value: 'NAME', help: 'the workload this agent serves' },
        namespace: { type: 'string', value: 'NS', help: "the workload's namespace" },
        'app-port': { type: 'string', value: 'PORT', help: "the app's port" },
        'listen-port': { type: 'string', value: 'PORT', help: 'the port the agent takes (the one the Service targets)' },
        'app-host': { type: 'string', default: '127.0.0.1', value: 'HOST', help: "the app's address" },
        'pod-name': { type: 'string', value: 'NAME', help: "the pod's name (default: the host name)" },
      },
    },
  },
} as const satisfies CommandSpec;

const gatherLogs = {
  summary: "the daemons', the manager's and the agents' logs in one archive, for a bug report",
  usage: ['gather-logs [-o FILE] [--since SECONDS] [--context NAME] [--no-cluster]'],
  about: `Writes a .tar.gz with this machine's daemon logs, the session's status and
intercepts (without the pods' environments), and, from the cluster, the
manager's logs and every agent's (the last run too, after a restart). What
cannot be read (no session, no rights) is named in its index.json.`,
  examples: ['rdbg gather-logs -o rdbg-logs.tar.gz', 'rdbg gather-logs --since 600'],
  flags: {
    output: { type: 'string', short: 'o', value: 'FILE', complete: 'file', help: 'the archive (default: rdbg-logs-TIME.tar.gz here)' },
    since: { type: 'string', value: 'SECONDS', help: 'only the cluster logs of the last SECONDS' },
    kubeconfig: KUBECONFIG,
    context: CONTEXT,
    'manager-namespace': MANAGER_NAMESPACE,
    'no-cluster': { type: 'boolean', help: "only this machine's logs" },
  },
} as const satisfies CommandSpec;

const completion = {
  summary: 'print the shell completion script',
  usage: ['completion bash|zsh|fish'],
  about: `Prints a script that completes rdbg's commands and flags, and workload,
intercept, namespace and context names (asked of the cluster, as kubectl's
completion does). Load it in the shell's start-up file.`,
  examples: ['echo \'source <(rdbg completion bash)\' >> ~/.bashrc', 'rdbg completion zsh > "${fpath[1]}/_rdbg"', 'rdbg completion fish > ~/.config/fish/completions/rdbg.fish'],
  positionals: true,
  flags: {},
} as const satisfies CommandSpec;

const help = {
  summary: "print a command's help",
  usage: ['help [COMMAND [SUBCOMMAND]]'],
  examples: ['rdbg help intercept', 'rdbg help manager install'],
  args: ['command'],
  positionals: true,
  flags: {},
} as const satisfies CommandSpec;

const daemonUser = {
  summary: 'the user daemon (started by "rdbg connect")',
  usage: ['daemon-user [--manager HOST:PORT] [--kubernetes ...]'],
  hidden: true,
  flags: {
    manager: connect.flags.manager,
    socks: connect.flags.socks,
    namespace: { type: 'string', value: 'NS', help: "the namespace short names resolve in" },
    kubernetes: connect.flags.kubernetes,
    kubeconfig: KUBECONFIG,
    context: CONTEXT,
    'manager-namespace': MANAGER_NAMESPACE,
  },
} as const satisfies CommandSpec;

const daemonRoot = {
  summary: 'the root daemon (started by "rdbg connect" through sudo)',
  usage: ['daemon-root --user-socket PATH [--cleanup] [TUN flags]'],
  about: `Started by "rdbg connect" as root (through sudo); --cleanup only undoes what a
crashed daemon of the session of PATH left behind. Its state is
/var/run/rdbg/<session>/, where <session> is derived from the calling user
(SUDO_UID), PATH and the network namespace; PATH must be that user's socket.`,
  hidden: true,
  flags: {
    'user-socket': { type: 'string', value: 'PATH', help: "the user daemon's socket" },
    ...ROOT_FLAGS,
    'log-level': { type: 'string', value: 'LEVEL', help: 'debug, info, warn or error' },
    trace: { type: 'string', value: 'CATEGORY,...', help: 'trace categories' },
    cleanup: { type: 'boolean', help: 'only undo what a crashed daemon of this session left' },
  },
} as const satisfies CommandSpec;

/** The commands, in the order `rdbg help` lists them. */
export const COMMANDS = {
  connect,
  status,
  intercept,
  replace,
  leave,
  list,
  quit,
  doctor,
  version,
  manager,
  uninstall,
  agent,
  'gather-logs': gatherLogs,
  completion,
  help,
  'daemon-user': daemonUser,
  'daemon-root': daemonRoot,
} as const satisfies Record<string, CommandSpec>;

/** Flags every command takes. */
export const GLOBAL_FLAGS: Flags = {
  help: { type: 'boolean', short: 'h', help: 'show this help' },
  debug: { type: 'boolean', help: 'show stack traces and debug logs' },
};

/**
 * The command an argument list names, as deep as it goes ("manager install"),
 * and where its own arguments start. Undefined for an unknown first word.
 */
export function findCommand(argv: readonly string[]): { path: string[]; spec: CommandSpec; rest: string[] } | undefined {
  const first = argv[0];
  if (first === undefined || !Object.hasOwn(COMMANDS, first)) return undefined;
  let spec: CommandSpec = COMMANDS[first as keyof typeof COMMANDS];
  const path = [first];
  let i = 1;
  while (spec.sub && argv[i] !== undefined && Object.hasOwn(spec.sub, argv[i])) {
    spec = spec.sub[argv[i]];
    path.push(argv[i++]);
  }
  return { path, spec, rest: argv.slice(i) };
}

/** The arguments before a `--` (those after it belong to the command intercept runs). */
export function ownArgs(argv: readonly string[]): readonly string[] {
  const dash = argv.indexOf('--');
  return dash >= 0 ? argv.slice(0, dash) : argv;
}

export function wantsHelp(argv: readonly string[]): boolean {
  return ownArgs(argv).some((a) => a === '--help' || a === '-h');
}
