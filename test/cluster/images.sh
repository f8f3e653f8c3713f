#!/usr/bin/env bash
# Images without a registry: builds OCI image archives from local files into
# $RDBG_CACHE/images and imports them into the cluster's containerd.
#
#   images.sh build [NAME...]    build archives (skips those up to date)
#   images.sh import [NAME...]   import archives into the running cluster
#   images.sh [all]              both
#   images.sh sync [NAME...]     build, import those changed since the last import
#
# Images (all localhost/..., use imagePullPolicy Never or IfNotPresent):
#   localhost/pause:3.10             the sandbox image (static C binary)
#   localhost/coredns:v<version>     the minimal CoreDNS from build.sh
#   localhost/rdbg:<tag>             Node + the built rdbg package (manager and
#                                    agent); only when /work/main/dist exists
#                                    (run `npm run build` / `make build` first)
#   localhost/echo-http:<tag>        HTTP echo that can call another URL and
#                                    propagate headers (apps/echo-http.js)
#   localhost/grpc-echo:<tag>        gRPC echo.Echo/Say, dependency-free (apps/grpc-echo.js)
#   localhost/tcp-echo:<tag>         TCP echo (apps/tcp-echo.js)
# <tag> is $RDBG_IMAGE_TAG, default "dev".
set -euo pipefail
. "$(dirname "$0")/env.sh"

REPO_DIR=$(cd "$CLUSTER_DIR/../.." && pwd)
APPS_DIR=$CLUSTER_DIR/apps
ALL_IMAGES="pause coredns echo-http grpc-echo tcp-echo redis rdbg"

sha() { sha256sum "$1" | cut -d' ' -f1; }

# make_layer DIR OUT.tar: a reproducible uncompressed layer.
make_layer() {
  # new file, then rename: the old one may be hard-linked as a blob
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$1" -cf "$2.tmp" . && mv "$2.tmp" "$2"
}

# make_image REF OUT CONFIG_JSON LAYER.tar... : adds an image to the shared
# OCI layout in $IMAGE_CACHE (blobs/sha256/...) and writes OUT (the manifest
# descriptor, annotated with the image name as `ctr images import` reads it)
# and OUT.blobs (the blobs it needs). Layers are stored uncompressed (they
# never leave the machine; this keeps build and import fast).
make_image() {
  local ref=$1 out=$2 cfg=$3; shift 3
  local blobs=$IMAGE_CACHE/blobs/sha256
  mkdir -p "$blobs"
  local diff_ids="" layers="" list="" l dg sz
  for l in "$@"; do
    dg=$(sha "$l"); sz=$(stat -c %s "$l")
    [ -e "$blobs/$dg" ] || ln "$l" "$blobs/$dg" 2>/dev/null || cp "$l" "$blobs/$dg"
    diff_ids+="${diff_ids:+,}\"sha256:$dg\""
    layers+="${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"sha256:$dg\",\"size\":$sz}"
    list+="$dg"$'\n'
  done
  local t; t=$(mktemp)
  printf '{"architecture":"amd64","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":[%s]}}' \
    "$cfg" "$diff_ids" >"$t"
  local cdg csz; cdg=$(sha "$t"); csz=$(stat -c %s "$t")
  mv "$t" "$blobs/$cdg"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' \
    "$cdg" "$csz" "$layers" >"$t"
  local mdg msz; mdg=$(sha "$t"); msz=$(stat -c %s "$t")
  mv "$t" "$blobs/$mdg"
  chmod 644 "$blobs/$cdg" "$blobs/$mdg"
  printf '%s\n%s\n%s' "$mdg" "$cdg" "$list" >"$out.blobs"
  printf '{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}\n' \
    "$mdg" "$msz" "$ref" "${ref##*:}" >"$out"
}

# up_to_date OUT KEY: true when OUT was built from inputs hashing to KEY.
up_to_date() { [ -f "$1" ] && [ "$(cat "$1.key" 2>/dev/null)" = "$2" ]; }

# The images' Node: the newest LTS (scripts/install-node.sh), whatever Node the tests run on.
IMAGE_NODE=${IMAGE_NODE:-$(bash "$REPO_DIR/scripts/install-node.sh")/node}

# The base layer: static busybox, the node binary and the shared libraries it
# needs, a few /etc files.
base_layer() {
  local node; node=$(readlink -f "$IMAGE_NODE")
  local bb; bb=$(command -v busybox)
  local key; key=$(stat -c '%n %s %Y' "$node" "$bb" "$0" | sha256sum | cut -c1-16)
  local out=$IMAGE_CACHE/layers/base.tar
  if up_to_date "$out" "$key"; then echo "$out"; return; fi
  log "image base layer: busybox + $node ($("$node" --version))"
  local r; r=$(mktemp -d)
  mkdir -p "$r/bin" "$r/usr/bin" "$r/etc" "$r/tmp" "$r/app" "$r/root"
  chmod 1777 "$r/tmp"
  cp "$bb" "$r/bin/busybox"
  for a in $("$bb" --list); do [ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"; done
  cp "$node" "$r/usr/bin/node"
  local lib
  for lib in $(ldd "$node" | grep -o '/[^ ]*'); do
    mkdir -p "$r$(dirname "$lib")"; cp -L "$lib" "$r$lib"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$r/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
  printf 'hosts: files dns\n' >"$r/etc/nsswitch.conf"
  mkdir -p "$(dirname "$out")"
  make_layer "$r" "$out"; echo "$key" >"$out.key"
  rm -rf "$r"
  echo "$out"
}

# single_file_layer OUT SRC DEST MODE
single_file_layer() {
  local out=$1 src=$2 dest=$3 mode=$4
  local r; r=$(mktemp -d)
  mkdir -p "$r$(dirname "$dest")"
  cp "$src" "$r$dest"; chmod "$mode" "$r$dest"
  mkdir -p "$(dirname "$out")"
  make_layer "$r" "$out"
  rm -rf "$r"
}

build_pause() {
  local bin=$RDBG_CACHE/pause/pause out=$IMAGE_CACHE/pause.image
  [ -x "$bin" ] || die "pause binary missing: run build.sh"
  local key; key=$(sha "$bin")
  up_to_date "$out" "$key" && return
  single_file_layer "$IMAGE_CACHE/layers/pause.tar" "$bin" /pause 0755
  make_image "$PAUSE_IMAGE" "$out" '{"Entrypoint":["/pause"]}' "$IMAGE_CACHE/layers/pause.tar"
  echo "$key" >"$out.key"; log "image $PAUSE_IMAGE -> $out"
}

build_coredns() {
  local out=$IMAGE_CACHE/coredns.image
  [ -x "$COREDNS" ] || die "coredns binary missing: run build.sh"
  local key; key=$(sha "$COREDNS")
  up_to_date "$out" "$key" && return
  single_file_layer "$IMAGE_CACHE/layers/coredns.tar" "$COREDNS" /coredns 0755
  make_image "$COREDNS_IMAGE" "$out" '{"Entrypoint":["/coredns"],"ExposedPorts":{"53/udp":{},"53/tcp":{}}}' "$IMAGE_CACHE/layers/coredns.tar"
  echo "$key" >"$out.key"; log "image $COREDNS_IMAGE -> $out"
}

build_app() { # name file
  local name=$1 file=$2 out=$IMAGE_CACHE/$1.image base; base=$(base_layer)
  local key; key=$(cat "$base.key" "$APPS_DIR/$file" | sha256sum | cut -c1-16)-$IMAGE_TAG
  up_to_date "$out" "$key" && return
  single_file_layer "$IMAGE_CACHE/layers/$name.tar" "$APPS_DIR/$file" "/app/$file" 0644
  make_image "localhost/$name:$IMAGE_TAG" "$out" \
    "{\"Entrypoint\":[\"/usr/bin/node\",\"/app/$file\"],\"Env\":[\"PATH=/usr/local/bin:/usr/bin:/bin\"],\"WorkingDir\":\"/app\"}" \
    "$base" "$IMAGE_CACHE/layers/$name.tar"
  echo "$key" >"$out.key"; log "image localhost/$name:$IMAGE_TAG -> $out"
}

# A Redis server for the cluster tier (redis-cli from the laptop): Debian's
# redis-server and the shared libraries it needs, on the base layer.
build_redis() {
  local bin; bin=$(command -v redis-server) || die "redis-server missing: apt-get install redis-server"
  bin=$(readlink -f "$bin")
  local out=$IMAGE_CACHE/redis.image base; base=$(base_layer)
  local key; key=$(cat "$base.key" "$bin" | sha256sum | cut -c1-16)-$IMAGE_TAG
  up_to_date "$out" "$key" && return
  local r lib; r=$(mktemp -d)
  mkdir -p "$r/usr/bin" "$r/data"; chmod 1777 "$r/data"
  cp "$bin" "$r/usr/bin/redis-server"
  for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do mkdir -p "$r$(dirname "$lib")"; cp -L "$lib" "$r$lib"; done
  make_layer "$r" "$IMAGE_CACHE/layers/redis.tar"; rm -rf "$r"
  make_image "localhost/redis:$IMAGE_TAG" "$out" \
    '{"Entrypoint":["/usr/bin/redis-server"],"Cmd":["--port","6379","--protected-mode","no","--save","","--dir","/data"],"WorkingDir":"/data"}' \
    "$base" "$IMAGE_CACHE/layers/redis.tar"
  echo "$key" >"$out.key"; log "image localhost/redis:$IMAGE_TAG -> $out"
}

# The machine's iptables (nf_tables backend: needs only NET_ADMIN, no
# NET_RAW) for the agent's init container, which redirects a numeric
# targetPort to the agent: the multi-call binary, its libraries and the
# xtables extensions (REDIRECT, tcp, comment, ...).
add_iptables() { # ROOT
  local bin; bin=$(readlink -f "$(command -v xtables-nft-multi)") || die "xtables-nft-multi not found (apt-get install iptables)"
  mkdir -p "$1/usr/sbin"
  cp "$bin" "$1/usr/sbin/xtables-nft-multi"
  ln -sf xtables-nft-multi "$1/usr/sbin/iptables"
  local lib have; have=$(ldd "$(readlink -f "$IMAGE_NODE")") # already in the base layer
  for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
    grep -qF "$lib" <<<"$have" || { mkdir -p "$1$(dirname "$lib")"; cp -L "$lib" "$1$lib"; }
  done
  local ext; ext=$(dirname "$(readlink -f "$(ldd "$bin" | grep -o '/[^ ]*libxtables[^ ]*')")")/xtables
  mkdir -p "$1$ext"; cp -L "$ext"/*.so "$1$ext/"
}

# The rdbg image: Node plus the built package (package.json, dist/, proto/
# and the production node_modules), and iptables (add_iptables). One image for the manager and the agent:
# the pod spec picks the program, e.g. args ["dist/manager/main.js"]; default dist/bin/rdbg.js.
build_rdbg() {
  local out=$IMAGE_CACHE/rdbg.image
  if [ ! -d "$REPO_DIR/dist" ]; then
    log "image localhost/rdbg:$IMAGE_TAG skipped: $REPO_DIR/dist does not exist (run 'npm run build' first)"
    rm -f "$out" "$out.key" "$out.blobs"
    return
  fi
  local base; base=$(base_layer)
  local key; key=$( (cat "$base.key"; sha "$(readlink -f "$(command -v xtables-nft-multi)")"; cd "$REPO_DIR" && find package.json dist proto -type f -printf '%p %s %T@\n' 2>/dev/null | sort) | sha256sum | cut -c1-16)-$IMAGE_TAG
  up_to_date "$out" "$key" && return
  local r; r=$(mktemp -d)
  mkdir -p "$r/app"
  add_iptables "$r"
  cp "$REPO_DIR/package.json" "$r/app/"
  cp -a "$REPO_DIR/dist" "$r/app/dist"
  rm -rf "$r/app/dist/test" "$r/app/dist/bench"
  [ -d "$REPO_DIR/proto" ] && cp -a "$REPO_DIR/proto" "$r/app/proto"
  # production dependencies only
  local p
  (cd "$REPO_DIR" && npm ls --omit=dev --all --parseable 2>/dev/null) | while read -r p; do
    case $p in "$REPO_DIR"/node_modules/*)
      local rel=${p#"$REPO_DIR"/}
      mkdir -p "$r/app/$(dirname "$rel")"
      [ -e "$r/app/$rel" ] || cp -a "$p" "$r/app/$rel";;
    esac
  done
  make_layer "$r" "$IMAGE_CACHE/layers/rdbg.tar"
  rm -rf "$r"
  make_image "localhost/rdbg:$IMAGE_TAG" "$out" \
    '{"Entrypoint":["/usr/bin/node"],"Cmd":["dist/bin/rdbg.js"],"Env":["PATH=/usr/local/bin:/usr/bin:/bin","NODE_ENV=production"],"WorkingDir":"/app"}' \
    "$base" "$IMAGE_CACHE/layers/rdbg.tar"
  echo "$key" >"$out.key"; log "image localhost/rdbg:$IMAGE_TAG -> $out"
}

build_one() {
  mkdir -p "$IMAGE_CACHE/layers"
  case $1 in
    pause) build_pause ;;
    redis) build_redis ;;
    coredns) build_coredns ;;
    echo-http) build_app echo-http echo-http.js ;;
    grpc-echo) build_app grpc-echo grpc-echo.js ;;
    tcp-echo) build_app tcp-echo tcp-echo.js ;;
    rdbg) build_rdbg ;;
    *) die "unknown image $1 (known: $ALL_IMAGES)" ;;
  esac
}

# import_images NAME...: one archive with all the named images (shared blobs
# once) streamed into `ctr images import`.
import_images() {
  [ -S "$CONTAINERD_SOCK" ] || die "containerd is not running ($CONTAINERD_SOCK): run up.sh"
  local d n descs="" files=() refs=()
  d=$(mktemp -d)
  for n in "$@"; do
    local f=$IMAGE_CACHE/$n.image
    if [ ! -f "$f" ]; then
      [ "$n" = rdbg ] && continue
      die "no image $n: run images.sh build"
    fi
    descs+="${descs:+,}$(cat "$f")"
    refs+=("$n")
    while read -r b; do [ -n "$b" ] && files+=("blobs/sha256/$b"); done <"$f.blobs"
  done
  [ ${#refs[@]} = 0 ] && { rm -rf "$d"; return 0; }
  printf '{"schemaVersion":2,"manifests":[%s]}' "$descs" >"$d/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$d/oci-layout"
  mapfile -t files < <(printf '%s\n' "${files[@]}" | sort -u)
  tar -cf - -C "$d" oci-layout index.json -C "$IMAGE_CACHE" "${files[@]}" |
    ctr --address "$CONTAINERD_SOCK" -n k8s.io images import - >/dev/null ||
    { rm -rf "$d"; die "image import failed"; }
  rm -rf "$d"
  mkdir -p "$STATE/images"
  for n in "${refs[@]}"; do cp "$IMAGE_CACHE/$n.image" "$STATE/images/$n.image"; done
  log "images imported: ${refs[*]}"
}

# sync NAME...: build, then import only the images that changed since they
# were last imported into this cluster (e.g. rdbg after `make build`).
sync_images() {
  local n changed=()
  for n in "$@"; do build_one "$n"; done
  gc_blobs
  for n in "$@"; do
    [ -f "$IMAGE_CACHE/$n.image" ] || continue
    cmp -s "$IMAGE_CACHE/$n.image" "$STATE/images/$n.image" 2>/dev/null || changed+=("$n")
  done
  [ ${#changed[@]} = 0 ] || import_images "${changed[@]}"
}

# Drops blobs that no image refers to any more.
gc_blobs() {
  local keep b
  keep=$(cat "$IMAGE_CACHE"/*.image.blobs 2>/dev/null | sort -u)
  for b in "$IMAGE_CACHE"/blobs/sha256/*; do
    [ -e "$b" ] || continue
    grep -qx "${b##*/}" <<<"$keep" || rm -f "$b"
  done
}

cmd=${1:-all}; shift || true
names=${*:-$ALL_IMAGES}
need_root
case $cmd in
  build) for n in $names; do build_one "$n"; done; gc_blobs ;;
  import) import_images $names ;;
  all) for n in $names; do build_one "$n"; done; gc_blobs; import_images $names ;;
  sync) sync_images $names ;;
  *) die "usage: images.sh [build|import|all|sync] [NAME...]" ;;
esac
