#!/usr/bin/env bash
# Tears the test cluster down completely, also after a failed or half-done
# cluster-up: every process (by pid), every mount under the state dir (the
# kubelet's and containerd's mounts live in the machine's mount namespace),
# the kubelet's cgroups, both network namespaces (and with them every
# iptables rule kube-proxy and the CNI plugins wrote there), the state dir.
# Idempotent; exits non-zero if something could not be removed.
set -uo pipefail
. "$(dirname "$0")/env.sh"
need_root

# One cluster operation at a time (up.sh and down.sh share the lock).
if [ -z "${RDBG_CLUSTER_LOCKED:-}" ]; then
  { exec 9>"/run/lock/rdbg-cluster.lock"; } 2>/dev/null || exec 9>"/tmp/rdbg-cluster.lock"
  flock -w 600 9 || die "another cluster-up/down holds the lock"
fi

PIDS=$STATE/pids
failed=0
warn() { log "WARNING: $*"; failed=1; }

# Inodes of every network namespace that belongs to the cluster: the node and
# laptop namespaces and the pods' namespaces (containerd keeps their mounts
# under the state dir).
ns_inodes() {
  local f
  for f in "/run/netns/$NODE_NS" "/run/netns/$LAPTOP_NS" "$STATE"/containerd/state/io.containerd.grpc.v1.cri/netns/*; do
    [ -e "$f" ] && stat -L -c %i "$f" 2>/dev/null
  done | sort -u
}

# Every process of the cluster: the ones in our pid files, every process in
# one of the cluster's network namespaces (containerd shims, containers,
# whatever a test started in the laptop namespace) and every process in the
# kubelet's cgroups.
cluster_pids() {
  local f p inodes
  # pid files only count while the pid still runs our command (a stale file
  # after a reboot must not make us kill an unrelated process)
  for f in "$PIDS"/*.pid; do
    [ -e "$f" ] || continue
    p=$(cat "$f")
    tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -qF "$STATE" && echo "$p"
  done
  inodes=$(ns_inodes | tr '\n' ' ')
  if [ -n "$inodes" ]; then
    for p in /proc/[0-9]*; do
      local i; i=$(stat -L -c %i "$p/ns/net" 2>/dev/null) || continue
      case " $inodes " in *" $i "*) echo "${p#/proc/}" ;; esac
    done
  fi
  for f in /sys/fs/cgroup/*"$CGROUP_ROOT"; do
    [ -d "$f" ] && find "$f" -name cgroup.procs -exec cat {} + 2>/dev/null
  done
}

alive_pids() {
  local p
  for p in $(cluster_pids | sort -un); do
    [ "$p" = $$ ] && continue
    kill -0 "$p" 2>/dev/null && echo "$p"
  done
}

# 1. processes: the components first (TERM, so the kubelet and containerd can
# stop their children), then everything else that is left, then KILL.
stop_pids() {
  local sig=$1 waitfor=$2 p i
  local pids; pids=$(alive_pids)
  [ -z "$pids" ] && return 0
  for p in $pids; do kill "-$sig" "$p" 2>/dev/null; done
  for ((i = 0; i < waitfor * 10; i++)); do
    [ -z "$(alive_pids)" ] && return 0
    sleep 0.1
  done
  return 1
}
if [ -d "$PIDS" ]; then
  for c in kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do
    [ -f "$PIDS/$c.pid" ] || continue
    p=$(cat "$PIDS/$c.pid")
    tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -qF "$STATE" && kill -TERM "$p" 2>/dev/null
  done
fi
stop_pids TERM 10 || stop_pids KILL 10 || warn "processes still alive: $(alive_pids | tr '\n' ' ')"

# 2. mounts under the state dir (overlay rootfs, shm, pod netns, kubelet
# volumes, the kubelet's rshared bind of its root dir), deepest first.
mounts_under() { awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r; }
for ((round = 0; round < 5; round++)); do
  m=$(mounts_under "$STATE")
  [ -z "$m" ] && break
  while IFS= read -r mp; do
    mp=$(printf '%b' "${mp//\\/\\0}") # unescape \040 etc.
    umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null
  done <<<"$m"
done
[ -n "$(mounts_under "$STATE")" ] && warn "mounts left: $(mounts_under "$STATE" | tr '\n' ' ')"

# 3. cgroups made by the kubelet and runc (and the root up.sh made), deepest first.
for h in /sys/fs/cgroup/*"$CGROUP_ROOT"; do
  [ -d "$h" ] || continue
  find "$h" -depth -type d -exec rmdir {} \; 2>/dev/null
  [ -d "$h" ] && warn "cgroup left: $h"
done

# 4. network namespaces (their interfaces, routes and iptables rules go with them).
for ns in "$NODE_NS" "$LAPTOP_NS"; do
  if ip netns list | grep -qx -e "$ns" -e "$ns (id: [0-9]*)"; then
    ip netns del "$ns" || warn "could not delete netns $ns"
  fi
  rm -rf "/etc/netns/$ns"
done

# 5. files: CNI result cache entries of our sandboxes (containerd writes the
# loopback ones to /var/lib/cni), empty containerd runtime dirs, and the
# state dir (only when nothing is mounted below it, so that a bind mount can
# never make rm reach outside).
for id in $(find "$STATE/containerd/root/io.containerd.grpc.v1.cri/sandboxes" \
  "$STATE/containerd/state/io.containerd.grpc.v1.cri/sandboxes" -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -u); do
  rm -f /var/lib/cni/results/*-"$id"-* 2>/dev/null
done
rm -f /var/lib/cni/results/rdbg-pods-* 2>/dev/null
rmdir /run/containerd/s /run/containerd/fifo /run/containerd 2>/dev/null
if [ -d "$STATE" ] && [ -z "$(mounts_under "$STATE")" ]; then
  rm -rf --one-file-system "$STATE" || warn "could not remove $STATE"
fi

if [ $failed = 0 ]; then log "cluster down"; else log "cluster down with warnings"; fi
exit $failed
