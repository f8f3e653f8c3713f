#!/usr/bin/env bash
# Builds helm v3 from the Go module proxy (no prebuilt binary can be fetched
# here) into $RDBG_CACHE/helm-<version>/helm and prints its path. Cached: a
# second run only prints the path. Building takes several minutes on 2 cores.
#
#   scripts/helm.sh            build (if needed), print the path
#   HELM_VERSION=v3.19.5 scripts/helm.sh
set -euo pipefail
VERSION=${HELM_VERSION:-v3.20.2}
CACHE=${RDBG_CACHE:-/var/cache/rdbg}
DIR=$CACHE/helm-$VERSION
BIN=$DIR/helm

if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
command -v go >/dev/null || { echo "helm.sh: go is needed to build helm" >&2; exit 1; }

mkdir -p "$DIR"
# A tiny module of our own that requires helm: `go install pkg@version`
# refuses modules whose go.mod has replace directives, a module of our own
# does not. -mod=mod lets go fill in go.sum.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/go.mod" <<EOF
module rdbg.local/helmbuild

go 1.24

require helm.sh/helm/v3 $VERSION
EOF
cat >"$work/tools.go" <<'EOF'
//go:build tools

package tools

import _ "helm.sh/helm/v3/cmd/helm"
EOF
echo "helm.sh: building helm $VERSION into $DIR (several minutes)" >&2
(
  cd "$work"
  export GOFLAGS=-mod=mod CGO_ENABLED=0
  go mod tidy -e >/dev/null 2>&1 || true
  go build -trimpath -o "$BIN.tmp" \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$VERSION" \
    helm.sh/helm/v3/cmd/helm
)
mv "$BIN.tmp" "$BIN"
"$BIN" version --short >&2
echo "$BIN"
