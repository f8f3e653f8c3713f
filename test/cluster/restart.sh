#!/usr/bin/env bash
# Restarts one component of the running test cluster as a crash and a
# supervisor would: SIGKILL, then the same command line as up.sh ran
# (from $PIDS/NAME.cmd). Used by the chaos tests.
#   test/cluster/restart.sh kube-apiserver|kubelet|containerd|... [DOWN_SECONDS]
set -euo pipefail
. "$(dirname "$0")/env.sh"
need_root
name=${1:?usage: restart.sh COMPONENT [DOWN_SECONDS]}
down=${2:-0}
PIDS=$STATE/pids
LOGS=$STATE/logs
[ -f "$PIDS/$name.cmd" ] || die "no command recorded for $name (is the cluster up, started by this up.sh?)"
pid=$(cat "$PIDS/$name.pid")
kill -KILL "$pid" 2>/dev/null || true
for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
sleep "$down"
mapfile -d '' cmd <"$PIDS/$name.cmd"
setsid nsenter --net="/run/netns/$NODE_NS" -- "${cmd[@]}" >>"$LOGS/$name.log" 2>&1 </dev/null 9>&- &
echo $! >"$PIDS/$name.pid"
echo "$name restarted (pid $!)"
