#!/usr/bin/env bash
# Builds everything the test cluster needs into $RDBG_CACHE (outside the
# repository), keyed by version: one multi-call Kubernetes binary (apiserver,
# controller-manager, scheduler, kubelet, kube-proxy, kubectl, etcd), a
# minimal CoreDNS and a static pause binary. A warm cache skips the builds.
# Also installs the Debian packages the cluster needs (idempotent).
#
#   build.sh            packages + binaries
#   build.sh deps       packages only
set -euo pipefail
. "$(dirname "$0")/env.sh"
need_root

DEB_PACKAGES="containerd runc containernetworking-plugins iptables conntrack busybox-static openssl gcc libc6-dev iproute2 util-linux procps"

install_deps() {
  local missing=()
  for p in $DEB_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # Debian's containerd package starts a system containerd; we run our own
  # inside the node namespace and leave the system one alone.
  command -v go >/dev/null || die "Go toolchain not found (need go >= 1.25 on PATH)"
}

# Prints "[n] package" for every package go compiles, so a long cold build
# shows it is alive.
progress() {
  local what=$1 total=$2 n=0 start=$SECONDS
  while IFS= read -r line; do
    n=$((n + 1))
    if [ $((n % 50)) = 0 ]; then
      printf '[%s] %s: %d of at most %d packages compiled (%ds) %s\n' "$(date +%H:%M:%S)" "$what" "$n" "$total" $((SECONDS - start)) "$line" >&2
    fi
  done
  printf '[%s] %s: %d packages compiled in %ds\n' "$(date +%H:%M:%S)" "$what" "$n" $((SECONDS - start)) >&2
}

go_build() { # dir out what ldflags [cgo]
  local dir=$1 out=$2 what=$3 ldflags=$4 cgo=${5:-1}
  log "building $what (cold builds take 15-40 minutes on 2 cores) ..."
  local t0=$SECONDS total
  total=$(cd "$CLUSTER_DIR/$dir" && go list -mod=readonly -deps . | wc -l) ||
    die "go list failed in $dir: the module proxy may lack a module (see above)"
  (cd "$CLUSTER_DIR/$dir" &&
    CGO_ENABLED=$cgo GOFLAGS="-mod=readonly -buildvcs=false" nice -n 5 go build -v -trimpath -ldflags="-s -w $ldflags" -o "$out.tmp" . 2>&1) |
    tee "$out.log" | progress "$what" "$total"
  [ "${PIPESTATUS[0]}" = 0 ] && [ -x "$out.tmp" ] || { tail -30 "$out.log" >&2; die "$what build failed (log: $out.log)"; }
  mv "$out.tmp" "$out"
  log "$what built in $((SECONDS - t0))s: $out"
}

build_k8s() {
  if [ -x "$K8S" ]; then log "kubernetes v$K8S_VERSION: cached in $K8S_BIN_DIR"; return; fi
  mkdir -p "$K8S_BIN_DIR"
  local v=v$K8S_VERSION major=${K8S_VERSION%%.*} minor
  minor=${K8S_VERSION#*.}; minor=${minor%%.*}
  local ld=""
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  go_build k8s "$K8S" "kubernetes $v" "$ld"
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
    ln -sf k8s "$K8S_BIN_DIR/$c"
  done
}

build_coredns() {
  if [ -x "$COREDNS" ]; then log "coredns v$COREDNS_VERSION: cached in $COREDNS_BIN_DIR"; return; fi
  mkdir -p "$COREDNS_BIN_DIR"
  go_build coredns "$COREDNS" "coredns v$COREDNS_VERSION" \
    "-X github.com/coredns/coredns/coremain.GitCommit=v$COREDNS_VERSION" 0
}

build_pause() {
  local out=$RDBG_CACHE/pause/pause src=$CLUSTER_DIR/images/pause.c
  local key; key=$(sha256sum "$src" | cut -c1-10)
  if [ -x "$out" ] && [ "$(cat "$out.key" 2>/dev/null)" = "$key" ]; then return; fi
  mkdir -p "$(dirname "$out")"
  gcc -static -Os -o "$out" "$src" && strip "$out" && echo "$key" >"$out.key"
  log "pause built: $out"
}

install_deps
[ "${1:-}" = deps ] && exit 0
mkdir -p "$RDBG_CACHE"
t0=$SECONDS
build_pause
build_k8s
build_coredns
log "build done in $((SECONDS - t0))s (cache: $RDBG_CACHE)"
