#!/usr/bin/env bash
# Brings up the single-node test cluster (or reuses a running one).
#
# Node namespace $NODE_NS: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, containerd, kubelet, kube-proxy (iptables), the CNI bridge
# and CoreDNS as a pod behind $DNS_SVC_IP. Laptop namespace $LAPTOP_NS: joined
# to the node only by a veth pair /30, and reaches the apiserver at
# $APISERVER_URL the way a laptop reaches a remote cluster; it has no route
# into the pod or service subnets. The machine's own namespace is not touched.
#
# Builds what is missing first (build.sh). On failure it tears down whatever
# it started (set RDBG_CLUSTER_KEEP=1 to keep it for debugging).
# Prints the kubeconfig paths; $STATE/cluster.env has every setting.
set -euo pipefail
. "$(dirname "$0")/env.sh"
need_root

# One cluster operation at a time (up.sh and down.sh share the lock).
{ exec 9>"/run/lock/rdbg-cluster.lock"; } 2>/dev/null || exec 9>"/tmp/rdbg-cluster.lock"
flock -w 600 9 || die "another cluster-up/down holds the lock"
export RDBG_CLUSTER_LOCKED=1   # down.sh, run from here, must not wait for it

PKI=$STATE/pki
LOGS=$STATE/logs
PIDS=$STATE/pids
T0=$SECONDS

kubectl_node() { NS_EXEC "$KUBECTL" --kubeconfig "$STATE/admin-local.kubeconfig" "$@"; }

print_info() {
  cat <<EOF
rdbg test cluster is up (Kubernetes v$K8S_VERSION)
  admin kubeconfig:   $ADMIN_KUBECONFIG
  user kubeconfig:    $USER_KUBECONFIG   (user $USER_NAME: admin of namespace $USER_NAMESPACE only)
  apiserver:          $APISERVER_URL   (from namespace $LAPTOP_NS)
  namespaces:         node=$NODE_NS laptop=$LAPTOP_NS
  node IP:            $NODE_IP   pod CIDR: $CLUSTER_CIDR (node $NODE_POD_CIDR)   service CIDR: $SERVICE_CIDR   DNS: $DNS_SVC_IP
  kubectl:            ip netns exec $LAPTOP_NS $KUBECTL --kubeconfig $ADMIN_KUBECONFIG get nodes
  settings:           $STATE/cluster.env    logs: $LOGS/
EOF
}

is_running() {
  [ -f "$STATE/up.ok" ] || return 1
  local f
  for f in "$PIDS"/*.pid; do
    [ -e "$f" ] || return 1
    kill -0 "$(cat "$f")" 2>/dev/null || return 1
  done
  kubectl_node get --raw /readyz >/dev/null 2>&1
}

if is_running; then
  log "cluster already running; reusing it"
  # RDBG_CLUSTER_NO_SYNC=1: keep the images as they are (a second checkout,
  # e.g. a git worktree, must not replace the shared localhost/rdbg:dev)
  [ -n "${RDBG_CLUSTER_NO_SYNC:-}" ] || "$CLUSTER_DIR/images.sh" sync
  print_info
  exit 0
fi

# ---------------------------------------------------------------- failure
ok=0
on_exit() {
  [ $ok = 1 ] && return
  log "cluster-up FAILED after $((SECONDS - T0))s"
  local f
  for f in "$LOGS"/*.log; do
    [ -e "$f" ] || continue
    echo "---- last lines of $f" >&2
    tail -15 "$f" >&2
  done
  if [ "${RDBG_CLUSTER_KEEP:-}" = 1 ]; then
    log "RDBG_CLUSTER_KEEP=1: leaving it as it is; run down.sh to clean up"
  else
    log "tearing down"
    "$CLUSTER_DIR/down.sh" >&2 || true
  fi
}
trap on_exit EXIT

# Leftovers from an earlier run that died are removed first.
if [ -e "$STATE" ] || ip netns list | grep -qw -e "$NODE_NS" -e "$LAPTOP_NS"; then
  log "cleaning up leftovers of an earlier run"
  "$CLUSTER_DIR/down.sh"
fi

"$CLUSTER_DIR/build.sh"
"$CLUSTER_DIR/images.sh" build

mkdir -p "$PKI" "$LOGS" "$PIDS" "$STATE/etcd" "$STATE/cni/net.d" "$STATE/kubelet" "$STATE/containerd" "$STATE/sysctl"
# The state dir is a shared mount: the kubelet runs in a mount namespace of
# its own (see below), and its volume mounts must reach containerd's.
mount --bind "$STATE" "$STATE"
mount --make-rshared "$STATE"

# ---------------------------------------------------------------- network
log "network namespaces $NODE_NS and $LAPTOP_NS"
ip netns add "$NODE_NS"
ip netns add "$LAPTOP_NS"
# Each namespace gets its own resolv.conf and hosts for `ip netns exec`, so
# nothing run there can touch the machine's own files.
for ns in "$NODE_NS" "$LAPTOP_NS"; do
  mkdir -p "/etc/netns/$ns"
  printf '# rdbg test cluster (%s): no upstream resolver\n' "$ns" >"/etc/netns/$ns/resolv.conf"
  printf '127.0.0.1 localhost\n::1 localhost\n' >"/etc/netns/$ns/hosts"
done
ip -n "$NODE_NS" link set lo up
ip -n "$LAPTOP_NS" link set lo up
# The node's primary interface: a veth pair with both ends in the node ns and
# an on-link default route, so the kubelet finds a node IP and locally
# generated service traffic has a route. Nothing is behind it.
ip -n "$NODE_NS" link add node0 type veth peer name node0p
ip -n "$NODE_NS" addr add "$NODE_IP/24" dev node0
ip -n "$NODE_NS" link set node0 up
ip -n "$NODE_NS" link set node0p up
ip -n "$NODE_NS" route add default via "$NODE_GW" dev node0 onlink
# The laptop link: created directly inside the two namespaces.
ip -n "$LAPTOP_NS" link add cluster0 type veth peer name laptop0 netns "$NODE_NS"
ip -n "$LAPTOP_NS" addr add "$LINK_LAPTOP_IP/$LINK_PREFIX" dev cluster0
ip -n "$LAPTOP_NS" link set cluster0 up
ip -n "$NODE_NS" addr add "$LINK_NODE_IP/$LINK_PREFIX" dev laptop0
ip -n "$NODE_NS" link set laptop0 up
NS_EXEC sysctl -q -w net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 \
  net.bridge.bridge-nf-call-ip6tables=1 net.ipv4.conf.all.rp_filter=0 \
  net.ipv4.conf.default.rp_filter=0 || die "sysctl in $NODE_NS failed (br_netfilter loaded?)"
# The node does not forward anything between the laptop link and the pod or
# service networks (a laptop reaches a remote cluster only via the apiserver).
NS_EXEC iptables -w -N RDBG-LAPTOP
NS_EXEC iptables -w -A RDBG-LAPTOP -j DROP
NS_EXEC iptables -w -I FORWARD 1 -i laptop0 -j RDBG-LAPTOP
NS_EXEC iptables -w -I FORWARD 1 -o laptop0 -j RDBG-LAPTOP

# ---------------------------------------------------------------- certificates
log "certificates"
cert() { # name subject extendedKeyUsage [SANs]
  local name=$1 subj=$2 eku=$3 san=${4:-}
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$PKI/$name.key" -out "$PKI/$name.csr" -subj "$subj" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [ -n "$san" ] && echo "subjectAltName=$san"
  } >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 365 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}
openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
  -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 3650 -subj "/CN=rdbg-test-cluster-ca" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
cert apiserver "/CN=kube-apiserver" serverAuth \
  "IP:127.0.0.1,IP:$NODE_IP,IP:$LINK_NODE_IP,IP:$KUBERNETES_SVC_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
cert admin "/O=system:masters/CN=rdbg-admin" clientAuth
cert user "/O=rdbg-users/CN=$USER_NAME" clientAuth
cert controller-manager "/CN=system:kube-controller-manager" clientAuth
cert scheduler "/CN=system:kube-scheduler" clientAuth
cert kube-proxy "/CN=system:kube-proxy" clientAuth
cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
cert kubelet-serving "/CN=$NODE_NAME" serverAuth "IP:$NODE_IP,IP:127.0.0.1,DNS:$NODE_NAME"
openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
chmod 600 "$PKI"/*.key

kubeconfig() { # out server name cert
  local out=$1 server=$2 user=$3 c=$4
  cat >"$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: rdbg-test
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$c.crt")
    client-key-data: $(base64 -w0 "$PKI/$c.key")
contexts:
- name: $user@rdbg-test
  context:
    cluster: rdbg-test
    user: $user
current-context: $user@rdbg-test
EOF
  chmod 600 "$out"
}
LOCAL_URL=https://127.0.0.1:$APISERVER_PORT
kubeconfig "$ADMIN_KUBECONFIG" "$APISERVER_URL" rdbg-admin admin
kubeconfig "$USER_KUBECONFIG" "$APISERVER_URL" "$USER_NAME" user
kubeconfig "$STATE/admin-local.kubeconfig" "$LOCAL_URL" rdbg-admin admin
kubeconfig "$STATE/controller-manager.kubeconfig" "$LOCAL_URL" system:kube-controller-manager controller-manager
kubeconfig "$STATE/scheduler.kubeconfig" "$LOCAL_URL" system:kube-scheduler scheduler
kubeconfig "$STATE/kube-proxy.kubeconfig" "$LOCAL_URL" system:kube-proxy kube-proxy
kubeconfig "$STATE/kubelet.kubeconfig" "$LOCAL_URL" "system:node:$NODE_NAME" kubelet
# Sourceable settings for scripts and tests.
cat >"$STATE/cluster.env" <<EOF
K8S_VERSION=$K8S_VERSION
KUBECTL=$KUBECTL
ADMIN_KUBECONFIG=$ADMIN_KUBECONFIG
USER_KUBECONFIG=$USER_KUBECONFIG
USER_NAME=$USER_NAME
USER_NAMESPACE=$USER_NAMESPACE
NODE_NS=$NODE_NS
LAPTOP_NS=$LAPTOP_NS
NODE_NAME=$NODE_NAME
NODE_IP=$NODE_IP
LINK_NODE_IP=$LINK_NODE_IP
LINK_LAPTOP_IP=$LINK_LAPTOP_IP
APISERVER_URL=$APISERVER_URL
CLUSTER_CIDR=$CLUSTER_CIDR
NODE_POD_CIDR=$NODE_POD_CIDR
SERVICE_CIDR=$SERVICE_CIDR
DNS_SVC_IP=$DNS_SVC_IP
CLUSTER_DOMAIN=$CLUSTER_DOMAIN
CONTAINERD_SOCK=$CONTAINERD_SOCK
IMAGE_TAG=$IMAGE_TAG
STATE=$STATE
EOF

# ---------------------------------------------------------------- processes
# start NAME CMD...: runs CMD in the node namespace, detached, logging to
# $LOGS/NAME.log, its pid in $PIDS/NAME.pid (nsenter and setsid exec, so the
# pid is the component's own), its command line in $PIDS/NAME.cmd.
start() {
  local name=$1; shift
  setsid nsenter --net="/run/netns/$NODE_NS" -- "$@" >"$LOGS/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$PIDS/$name.pid"
  printf '%s\0' "$@" >"$PIDS/$name.cmd"   # for restart.sh
}

# wait_for WHAT SECONDS CMD...: polls CMD once a second, bounded.
wait_for() {
  local what=$1 limit=$2 i; shift 2
  for ((i = 0; i < limit; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    local f
    for f in "$PIDS"/*.pid; do
      kill -0 "$(cat "$f")" 2>/dev/null || die "$(basename "$f" .pid) exited while waiting for $what"
    done
    sleep 1
  done
  die "timed out after ${limit}s waiting for $what"
}

log "etcd"
start etcd "$K8S" etcd --name rdbg --data-dir "$STATE/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster rdbg=http://127.0.0.1:2380 --listen-metrics-urls= \
  --unsafe-no-fsync --log-level warn
wait_for etcd 60 NS_EXEC bash -c 'exec 3<>/dev/tcp/127.0.0.1/2379'

log "kube-apiserver"
start kube-apiserver "$K8S" kube-apiserver \
  --etcd-servers=http://127.0.0.1:2379 \
  --bind-address=0.0.0.0 --secure-port="$APISERVER_PORT" --advertise-address="$NODE_IP" \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority="$PKI/ca.crt" \
  --kubelet-preferred-address-types=InternalIP \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --allow-privileged=true --authorization-mode=Node,RBAC \
  --enable-admission-plugins=NodeRestriction \
  --service-account-issuer="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --profiling=false --v=1
wait_for "kube-apiserver /readyz" 120 kubectl_node get --raw /readyz

log "kube-controller-manager, kube-scheduler"
start kube-controller-manager "$K8S" kube-controller-manager \
  --kubeconfig="$STATE/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --use-service-account-credentials=true \
  --allocate-node-cidrs=true --cluster-cidr="$CLUSTER_CIDR" --node-cidr-mask-size=24 \
  --service-cluster-ip-range="$SERVICE_CIDR" --profiling=false --v=1
start kube-scheduler "$K8S" kube-scheduler \
  --kubeconfig="$STATE/scheduler.kubeconfig" \
  --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
  --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false --profiling=false --v=1

# ---------------------------------------------------------------- containerd
log "containerd"
cat >"$STATE/cni/net.d/10-rdbg-bridge.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "rdbg-pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$STATE/cni/ipam",
        "ranges": [[{"subnet": "$NODE_POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
cat >"$STATE/containerd/config.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$STATE/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
EOF
start containerd containerd --config "$STATE/containerd/config.toml"
wait_for containerd 60 ctr --address "$CONTAINERD_SOCK" version
"$CLUSTER_DIR/images.sh" import

# ---------------------------------------------------------------- kubelet
log "kubelet"
# kubelet's cgroupRoot must exist in every v1 hierarchy.
for h in /sys/fs/cgroup/*/; do
  h=${h%/}
  [ "$(stat -f -c %T "$h")" = cgroupfs ] || continue
  mkdir -p "$h$CGROUP_ROOT"
  if [ -f "$h/cpuset.cpus" ]; then
    cat "$h/cpuset.cpus" >"$h$CGROUP_ROOT/cpuset.cpus"
    cat "$h/cpuset.mems" >"$h$CGROUP_ROOT/cpuset.mems"
  fi
done
cat >"$STATE/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
cgroupRoot: $CGROUP_ROOT
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
failSwapOn: false
failCgroupV1: false
oomScoreAdj: 0
clusterDNS: [$DNS_SVC_IP]
clusterDomain: $CLUSTER_DOMAIN
resolvConf: ""
podLogsDir: $STATE/pod-logs
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
evictionPressureTransitionPeriod: 10s
nodeStatusUpdateFrequency: 5s
syncFrequency: 10s
fileCheckFrequency: 10s
volumeStatsAggPeriod: 1m
maxPods: 110
rotateCertificates: false
serverTLSBootstrap: false
protectKernelDefaults: false
EOF
# The kubelet "fixes" six kernel-wide sysctls (vm.overcommit_memory,
# kernel.panic, kernel.panic_on_oops, ...) that are not ours to change. It
# runs in its own mount namespace where files with the values it wants are
# bind-mounted over those sysctls (on a private /proc), so the machine's stay
# as they are. Its other mounts are under the shared state dir and propagate.
binds=""
for kv in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
  kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
  k=${kv%=*} v=${kv#*=}
  if [ "$(cat "/proc/sys/$k")" != "$v" ]; then
    echo "$v" >"$STATE/sysctl/${k//\//.}"
    binds+="mount --bind $STATE/sysctl/${k//\//.} /proc/sys/$k && "
  fi
done
start kubelet unshare --mount --propagation unchanged -- \
  sh -c "mount --make-rprivate /proc && $binds exec \"\$0\" \"\$@\"" \
  "$K8S" kubelet \
  --config="$STATE/kubelet/config.yaml" --kubeconfig="$STATE/kubelet.kubeconfig" \
  --root-dir="$STATE/kubelet" --cert-dir="$STATE/kubelet/pki" \
  --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1

log "kube-proxy"
cat >"$STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $STATE/kube-proxy.kubeconfig
mode: iptables
hostnameOverride: $NODE_NAME
clusterCIDR: $CLUSTER_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [primary]
oomScoreAdj: 0
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
start kube-proxy "$K8S" kube-proxy --config="$STATE/kube-proxy.yaml" --v=1

# ---------------------------------------------------------------- add-ons
log "waiting for node $NODE_NAME to be Ready"
wait_for "node $NODE_NAME registered" 90 kubectl_node get node "$NODE_NAME"
wait_for "node $NODE_NAME Ready" 120 kubectl_node wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s

log "CoreDNS, RBAC for $USER_NAME"
sed -e "s|@DNS_SVC_IP@|$DNS_SVC_IP|g" -e "s|@COREDNS_IMAGE@|$COREDNS_IMAGE|g" \
  -e "s|@CLUSTER_DOMAIN@|$CLUSTER_DOMAIN|g" -e "s|@USER_NAME@|$USER_NAME|g" \
  -e "s|@USER_NAMESPACE@|$USER_NAMESPACE|g" \
  "$CLUSTER_DIR/manifests/addons.yaml" >"$STATE/addons.yaml"
wait_for "addons applied" 60 kubectl_node apply -f "$STATE/addons.yaml"
wait_for "CoreDNS rollout" 180 kubectl_node -n kube-system rollout status deployment/coredns --timeout=5s
wait_for "CoreDNS answers on $DNS_SVC_IP" 60 \
  NS_EXEC busybox nslookup "kubernetes.default.svc.$CLUSTER_DOMAIN" "$DNS_SVC_IP"

# For the teardown test: fail at this point on request (everything runs).
[ "${RDBG_CLUSTER_FAIL_AT:-}" = after-coredns ] && die "failing on purpose (RDBG_CLUSTER_FAIL_AT=after-coredns)"
touch "$STATE/up.ok"
ok=1
log "cluster up in $((SECONDS - T0))s"
print_info
