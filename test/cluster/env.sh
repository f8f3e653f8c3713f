# Shared settings for the rdbg test cluster scripts. Sourced, not run.
# Every value can be overridden from the environment.

CLUSTER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

K8S_VERSION=${K8S_VERSION:-1.34.4}
COREDNS_VERSION=${COREDNS_VERSION:-1.14.7}

# Build cache, outside the repository, keyed by version and by a hash of the
# Go module files (so an edit of main.go or go.mod rebuilds).
RDBG_CACHE=${RDBG_CACHE:-/var/cache/rdbg}
_modhash() { cat "$CLUSTER_DIR/$1/go.mod" "$CLUSTER_DIR/$1/go.sum" "$CLUSTER_DIR/$1/main.go" | sha256sum | cut -c1-10; }
K8S_BIN_DIR=${K8S_BIN_DIR:-$RDBG_CACHE/k8s-v$K8S_VERSION-$(_modhash k8s)}
COREDNS_BIN_DIR=${COREDNS_BIN_DIR:-$RDBG_CACHE/coredns-v$COREDNS_VERSION-$(_modhash coredns)}
IMAGE_CACHE=${IMAGE_CACHE:-$RDBG_CACHE/images}
K8S=$K8S_BIN_DIR/k8s
KUBECTL=$K8S_BIN_DIR/kubectl
COREDNS=$COREDNS_BIN_DIR/coredns

# Runtime state: certificates, kubeconfigs, pids, logs, etcd data, containerd
# root and state. Removed by down.sh.
STATE=${RDBG_CLUSTER_STATE:-/run/rdbg-cluster}

# Network namespaces.
NODE_NS=${RDBG_NODE_NS:-rdbg-node}
LAPTOP_NS=${RDBG_LAPTOP_NS:-rdbg-laptop}
NODE_NAME=rdbg-node

# Addresses. All of them exist only inside the two namespaces above; nothing
# is added to the machine's own namespace.
NODE_IP=203.0.113.10           # node's primary address (dev node0, documentation range)
NODE_GW=203.0.113.1            # on-link default gateway that does not exist (nothing leaves)
LINK_NODE_IP=198.51.100.1     # node end of the laptop link (dev laptop0 in the node ns)
LINK_LAPTOP_IP=198.51.100.2   # laptop end (dev cluster0 in the laptop ns)
LINK_PREFIX=30
APISERVER_PORT=6443
APISERVER_URL=https://$LINK_NODE_IP:$APISERVER_PORT   # as the laptop sees it
CLUSTER_CIDR=10.244.0.0/16    # pods
NODE_POD_CIDR=10.244.0.0/24   # this node's pods (CNI bridge cni0, gateway 10.244.0.1)
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SVC_IP=10.96.0.1
DNS_SVC_IP=10.96.0.10
CLUSTER_DOMAIN=cluster.local

# The user with namespace-scoped rights only.
USER_NAME=rdbg-user
USER_NAMESPACE=rdbg-user

ADMIN_KUBECONFIG=$STATE/admin.kubeconfig
USER_KUBECONFIG=$STATE/user.kubeconfig

CONTAINERD_SOCK=$STATE/containerd/containerd.sock
CGROUP_ROOT=/rdbg-cluster     # kubelet's cgroupRoot, in every v1 hierarchy

IMAGE_TAG=${RDBG_IMAGE_TAG:-dev}
PAUSE_IMAGE=localhost/pause:3.10
COREDNS_IMAGE=localhost/coredns:v$COREDNS_VERSION

NS_EXEC() { nsenter --net=/run/netns/"$NODE_NS" -- "$@"; }
LAPTOP_EXEC() { ip netns exec "$LAPTOP_NS" "$@"; }

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (network namespaces, mounts, cgroups)"; }
