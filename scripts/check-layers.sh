#!/usr/bin/env bash
# The layer rules of .dependency-cruiser.cjs on the resolved import graph of the product code.
set -euo pipefail
cd "$(dirname "$0")/.."
exec node_modules/.bin/depcruise --config .dependency-cruiser.cjs --output-type err src daemon manager agent bin
