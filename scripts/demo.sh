#!/usr/bin/env bash
# make demo: rdbg on a real Kubernetes cluster, every step printed as a user
# would type it. The cluster is the local single-node one of test/cluster
# (built on first use and cached in /var/cache/rdbg); the developer's laptop
# is the network namespace rdbg-laptop, which reaches only the apiserver.
# Everything the demo creates is removed at the end, also after a failure;
# the cluster itself is stopped too unless it was running before.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/cluster/env.sh
need_root
NS=demo
KUBECONFIG_FILE=$ADMIN_KUBECONFIG
export RDBG_HOME=$(mktemp -d /tmp/rdbg-demo.XXXXXX)
was_up=false
[ -f "$STATE/up.ok" ] && was_up=true

# `rdbg` and `kubectl` as the user has them on their PATH.
mkdir -p "$RDBG_HOME/bin"
ln -s "$PWD/dist/bin/rdbg.js" "$RDBG_HOME/bin/rdbg"
ln -s "$KUBECTL" "$RDBG_HOME/bin/kubectl"

step() { printf '\n\033[1m# %s\033[0m\n' "$*"; }
laptop() {
  printf '\033[36mlaptop$ %s\033[0m\n' "$*"
  ip netns exec "$LAPTOP_NS" env PATH="$RDBG_HOME/bin:$PATH" KUBECONFIG="$KUBECONFIG_FILE" \
    RDBG_HOME="$RDBG_HOME" bash -c "$*"
}
LOCAL_PID=
cleanup() {
  set +e
  [ -n "$LOCAL_PID" ] && kill "$LOCAL_PID" 2>/dev/null
  step "Cleaning up"
  laptop "rdbg quit"
  laptop "rdbg uninstall --all"
  laptop "kubectl delete namespace $NS --wait=false --ignore-not-found" >/dev/null
  if ! $was_up; then bash test/cluster/down.sh >/dev/null 2>&1; echo "(the local cluster is stopped again)"; fi
  rm -rf "$RDBG_HOME"
}
trap cleanup EXIT

step "Starting the local Kubernetes cluster (built on first use: about 25 minutes; then cached)"
bash test/cluster/up.sh

step "Deploying the sample app: frontend -> backend, passing the x-dev header on"
laptop "kubectl create namespace $NS"
sed "s|@TAG@|$IMAGE_TAG|g" examples/demo/app.yaml > "$RDBG_HOME/app.yaml"
laptop "kubectl -n $NS apply -f $RDBG_HOME/app.yaml"
laptop "kubectl -n $NS rollout status deploy/backend deploy/frontend --timeout=120s"

step "Installing the traffic manager (once per cluster, by an admin)"
laptop "rdbg manager install --image localhost/rdbg:$IMAGE_TAG"

step "Connecting this laptop to the cluster (TUN device, routes, cluster DNS)"
laptop "rdbg connect --namespace $NS"
laptop "rdbg status"

step "Reaching the backend by its cluster name, as a pod would"
laptop "curl -s http://backend/hello"
laptop "curl -s http://backend.$NS.svc.cluster.local/hello"

step "Starting a local copy of the backend that answers differently (in a real session: your IDE's debugger)"
printf '\033[36mlaptop$ %s\033[0m\n' "NAME=backend-on-my-laptop PORT=9090 node test/cluster/apps/echo-http.js &"
ip netns exec "$LAPTOP_NS" env NAME=backend-on-my-laptop PORT=9090 node test/cluster/apps/echo-http.js >/dev/null 2>&1 &
LOCAL_PID=$!
sleep 0.5

step "Intercepting the backend's requests that carry x-dev: me"
laptop "rdbg intercept backend --port 9090:80 --header x-dev=me --env-file $RDBG_HOME/backend.env"
laptop "rdbg list"
laptop "grep -E '^(GREETING|NAME)=' $RDBG_HOME/backend.env"

step "A request through the frontend WITH the header reaches the laptop's copy"
laptop "curl -s -H 'x-dev: me' http://frontend/ | node -e 'let s=\"\";process.stdin.on(\"data\",d=>s+=d).on(\"end\",()=>{const a=JSON.parse(s);console.log(\"frontend:\",a.pod,\"-> backend:\",a.call.body.name,a.call.body.pod)})'"

step "WITHOUT the header it reaches the cluster's backend"
laptop "curl -s http://frontend/ | node -e 'let s=\"\";process.stdin.on(\"data\",d=>s+=d).on(\"end\",()=>{const a=JSON.parse(s);console.log(\"frontend:\",a.pod,\"-> backend:\",a.call.body.name,a.call.body.pod)})'"

step "Ending the intercept"
laptop "rdbg leave backend"
laptop "curl -s -H 'x-dev: me' http://frontend/ | node -e 'let s=\"\";process.stdin.on(\"data\",d=>s+=d).on(\"end\",()=>{const a=JSON.parse(s);console.log(\"frontend:\",a.pod,\"-> backend:\",a.call.body.name,a.call.body.pod)})'"
