#!/usr/bin/env bash
# Deploys the sample apps (manifests/samples.yaml) into a namespace of the
# running test cluster and waits until they are ready.
#   samples.sh [NAMESPACE]        default: demo
set -euo pipefail
. "$(dirname "$0")/env.sh"
need_root
ns=${1:-demo}
[ -f "$STATE/up.ok" ] || die "the cluster is not up: run up.sh (make cluster-up)"
k() { LAPTOP_EXEC "$KUBECTL" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }
k create namespace "$ns" --dry-run=client -o yaml | k apply -f - >/dev/null
sed "s|@TAG@|$IMAGE_TAG|g" "$CLUSTER_DIR/manifests/samples.yaml" | k -n "$ns" apply -f -
for d in echo front tcp-echo grpc-echo; do k -n "$ns" rollout status "deployment/$d" --timeout=120s; done
log "sample apps ready in namespace $ns; try:"
echo "  ip netns exec $LAPTOP_NS $KUBECTL --kubeconfig $ADMIN_KUBECONFIG -n $ns exec deploy/front -- wget -qO- 'http://front/call?url=http://echo/x'"
