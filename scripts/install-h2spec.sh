#!/usr/bin/env bash
# Installs h2spec (an HTTP/2 conformance suite) into the cache, outside the
# repository, when it is missing; prints its path. The fuzz tier runs it
# against the manager's data port and the traffic agent.
set -euo pipefail
bin="${RDBG_CACHE:-/var/cache/rdbg}/bin"
if [ -x "$bin/h2spec" ]; then echo "$bin/h2spec"; exit 0; fi
go=$(command -v go || echo /usr/local/go/bin/go)
if [ ! -x "$go" ]; then
  echo "h2spec needs Go to install (go install github.com/summerwind/h2spec/cmd/h2spec)" >&2
  exit 1
fi
mkdir -p "$bin"
GOBIN="$bin" GOFLAGS=-mod=mod "$go" install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible >&2
echo "$bin/h2spec"
