#!/usr/bin/env bash
# make demo: rdbg end to end on this machine, every step printed as a user
# would type it. A pretend cluster lives in network namespaces made here (a
# `cluster` with DNS, a frontend and the traffic manager; a `pod` with the
# backend and its traffic agent); the developer's `laptop` is a namespace too.
# Everything is removed at the end, also after a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
RDBG="$PWD/dist/bin/rdbg.js"
TINY="$PWD/dist/test/helpers/tiny-http.js"
ECHO_APP="$PWD/test/cluster/apps/echo-http.js"
P=rdbgdemo
export RDBG_HOME=$(mktemp -d /tmp/rdbg-demo.XXXXXX)

cleanup() {
  set +e
  disown -a 2>/dev/null
  ip netns exec $P-laptop env RDBG_HOME=$RDBG_HOME $RDBG quit >/dev/null 2>&1
  for ns in laptop pod cluster; do
    for pid in $(ip netns pids $P-$ns 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
    ip netns del $P-$ns 2>/dev/null
    rm -rf /etc/netns/$P-$ns
  done
  rm -rf "$RDBG_HOME"
}
trap cleanup EXIT
cleanup 2>/dev/null || true
RDBG_HOME=$(mktemp -d /tmp/rdbg-demo.XXXXXX)

# `rdbg` as a user would have it on their PATH (npm install -g puts the same entry there).
mkdir -p "$RDBG_HOME/bin"
ln -s "$PWD/dist/bin/rdbg.js" "$RDBG_HOME/bin/rdbg"
export PATH="$RDBG_HOME/bin:$PATH"

step() { printf '\n\033[1m# %s\033[0m\n' "$*"; }
laptop() { printf '\033[36mlaptop$ %s\033[0m\n' "$*"; ip netns exec $P-laptop env RDBG_HOME=$RDBG_HOME bash -c "$*"; }

step "Setting up a pretend cluster in network namespaces (cluster, pod) and a laptop"
for ns in cluster pod laptop; do
  ip netns add $P-$ns
  ip -n $P-$ns link set lo up
  mkdir -p /etc/netns/$P-$ns
done
printf 'nameserver 127.0.0.1\nsearch default.svc.cluster.local svc.cluster.local cluster.local\n' > /etc/netns/$P-cluster/resolv.conf
printf 'nameserver 127.0.0.1\n' > /etc/netns/$P-pod/resolv.conf
printf 'nameserver 127.0.0.53\n' > /etc/netns/$P-laptop/resolv.conf
ip -n $P-cluster link add to-laptop type veth peer name eth0 netns $P-laptop
ip -n $P-cluster link add to-pod type veth peer name eth0 netns $P-pod
ip -n $P-cluster addr add 198.18.1.1/24 dev to-laptop; ip -n $P-laptop addr add 198.18.1.2/24 dev eth0
ip -n $P-cluster addr add 198.19.0.1/24 dev to-pod;    ip -n $P-pod addr add 198.19.0.5/24 dev eth0
for l in "$P-cluster to-laptop" "$P-cluster to-pod" "$P-laptop eth0" "$P-pod eth0"; do set -- $l; ip -n $1 link set $2 up; done
ip -n $P-pod route add default via 198.19.0.1
ip netns exec $P-cluster dnsmasq --no-daemon --no-resolv --no-hosts --bind-interfaces --listen-address=127.0.0.1 \
  --local=/cluster.local/ --local-ttl=5 --host-record=backend.default.svc.cluster.local,198.19.0.5 \
  --host-record=frontend.default.svc.cluster.local,198.19.128.20 >/dev/null 2>&1 &
ip netns exec $P-laptop dnsmasq --no-daemon --no-resolv --no-hosts --bind-interfaces --listen-address=127.0.0.53 \
  --host-record=www.example.test,192.0.2.80 >/dev/null 2>&1 &
echo "cluster: DNS for *.cluster.local, the traffic manager on 198.18.1.1:8081, the frontend service at 198.19.128.20:80"
ip -n $P-cluster addr add 198.19.128.20/32 dev lo
ip netns exec $P-cluster $RDBG manager serve --listen 0.0.0.0:8081 --service-cidr 198.19.128.0/24 --pod-cidr 198.19.0.0/24 \
  --cluster-namespace default >/dev/null 2>"$RDBG_HOME/manager.log" &
ip netns exec $P-cluster env PORT=80 NAME=frontend PROPAGATE=x-dev node "$ECHO_APP" >/dev/null 2>&1 &
echo "pod: the backend on 127.0.0.1:8080, and rdbg's traffic agent owning the pod's port 80"
ip netns exec $P-pod node "$TINY" 127.0.0.1 8080 "backend-in-the-cluster" >/dev/null &
sleep 1
ip netns exec $P-pod env -i PATH="$PATH" APP_SECRET=from-the-pod $RDBG agent run --manager 198.19.0.1:8081 \
  --workload backend --namespace default --app-port 8080 --listen-port 80 >/dev/null 2>"$RDBG_HOME/agent.log" &
sleep 2

step "Connect the laptop to the cluster (TUN device, routes, DNS)"
laptop "rdbg connect --manager 198.18.1.1:8081"
laptop "rdbg status"

step "Reach the cluster's backend by its name, as a pod would"
laptop "curl -sS http://backend.default/"

step "Run a local copy of the backend that answers differently"
ip netns exec $P-laptop node "$TINY" 127.0.0.1 8080 "backend-on-my-laptop" >/dev/null &
sleep 1
laptop "curl -sS http://127.0.0.1:8080/"

step "Intercept the backend's requests that carry x-dev: me"
laptop "rdbg intercept backend --port 8080:80 --header x-dev=me --env-file \$RDBG_HOME/backend.env"
laptop "rdbg list"
laptop "grep APP_SECRET \$RDBG_HOME/backend.env   # the pod's environment, for the local process"

step "Through the frontend: with the header the laptop answers, without it the cluster does"
laptop "curl -sS -H 'x-dev: me' 'http://frontend.default/call?url=http://backend.default.svc.cluster.local/hello' | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"call\"][\"body\"])'"
laptop "curl -sS 'http://frontend.default/call?url=http://backend.default.svc.cluster.local/hello' | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"call\"][\"body\"])'"

step "Leave and quit: the laptop's routes and DNS are as before"
laptop "rdbg leave backend"
laptop "rdbg quit"
laptop "cat /etc/resolv.conf; ip route"
step "Done."
