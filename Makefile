# rdbg: every entry point a developer or CI uses.
SHELL := /bin/bash
# The Node everything here runs on (tests, demo, benches): NODE_LINE=22|24|26 picks a line, installed
# into $RDBG_CACHE from the npm registry; without it, the machine's node when it is a line rdbg
# supports (package.json's engines), else the newest LTS.
NODE_BIN := $(shell bash scripts/install-node.sh --machine $(NODE_LINE))
ifeq ($(NODE_BIN),)
$(error no Node to run on: scripts/install-node.sh said why)
endif
export PATH := $(NODE_BIN):$(CURDIR)/node_modules/.bin:$(PATH)

.PHONY: all deps build gen lint test test-unit test-sandbox fuzz soak chaos bench scale demo demo-standalone clean

all: build

# npm packages and the Debian packages that the tests drive (idempotent).
deps: node_modules/.stamp
	@bash scripts/install-deps.sh

node_modules/.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

# TypeScript types for the wire protocol, regenerated only when a .proto changes.
gen: src/gen/.stamp

src/gen/.stamp: $(wildcard proto/rdbg/v1/*.proto) scripts/gen-descriptors.js node_modules/.stamp
	@rm -rf src/gen.tmp
	proto-loader-gen-types --keepCase --longs=Number --enums=String --defaults --oneofs \
	  --grpcLib=@grpc/grpc-js -I proto -O src/gen.tmp rdbg/v1/manager.proto rdbg/v1/daemon.proto >/dev/null
	node scripts/gen-descriptors.js src/gen.tmp
	@rm -rf src/gen && mv src/gen.tmp src/gen && touch $@

# ENV_TABLE=--check (CI): fail when README.md's table of variables is out of date instead of rewriting it.
# dist/vendor: the Kubernetes client's and gRPC's module graphs, one file each (src/core/vendor.ts); the client's
# require('punycode') (node-fetch's whatwg-url) takes the npm package: Node's own warns (DEP0040) from Node 21 on.
build: gen
	tsc -p tsconfig.json
	esbuild node_modules/@kubernetes/client-node/dist/index.js --bundle --platform=node --format=cjs --target=node22 --alias:punycode=punycode/ \
	  --minify --legal-comments=eof --log-level=warning --outfile=dist/vendor/client-node.js
	esbuild node_modules/@grpc/grpc-js/build/src/index.js --bundle --platform=node --format=cjs --target=node22 --keep-names \
	  --minify --legal-comments=eof --log-level=warning --outfile=dist/vendor/grpc-js.js
	esbuild node_modules/protobufjs/light.js --bundle --platform=node --format=cjs --target=node22 --keep-names \
	  --minify --legal-comments=eof --log-level=warning --outfile=dist/vendor/protobufjs-light.js
	@chmod +x dist/bin/rdbg.js
	@node scripts/gen-env-table.js $(ENV_TABLE)

# Types, eslint, and the layer rules on the resolved import graph (.dependency-cruiser.cjs).
lint: gen
	tsc -p tsconfig.json --noEmit
	eslint .
	bash scripts/check-layers.sh

test-unit: build
	tap 'dist/test/unit/**/*.test.js'

test-sandbox: deps build
	tap 'dist/test/sandbox/**/*.test.js'

# Every tier: unit, sandbox (namespaces), and the cluster tier on the local
# Kubernetes build (cold build ~17-25 min, cached in $RDBG_CACHE; the cluster
# is torn down afterwards, also on failure). CI runs exactly this.
test: deps build cluster-build
	test/cluster/images.sh build
	tap 'dist/test/unit/**/*.test.js' 'dist/test/sandbox/**/*.test.js' 'dist/test/fuzz/**/*.test.js' 'dist/test/soak/**/*.test.js' 'dist/test/cluster-tier/*.test.js'; \
		status=$$?; test/cluster/down.sh || status=1; exit $$status

# The fuzz tier with 20 times the cases of its bounded run in `make test` (RDBG_FUZZ_SEED=N replays one).
fuzz: deps build
	@bash scripts/install-h2spec.sh
	RDBG_FUZZ_RUNS=$${RDBG_FUZZ_RUNS:-20000} tap --timeout 3600 'dist/test/fuzz/**/*.test.js'

# The soak tier for 30 minutes instead of the 3 of its run in `make test` (RDBG_SOAK_MINUTES=N):
# the RSS samples (soak.json) and their chart (soak-rss.svg) go to docs/ unless RDBG_SOAK_OUT=DIR.
soak: deps build
	RDBG_SOAK_MINUTES=$${RDBG_SOAK_MINUTES:-30} RDBG_SOAK_OUT=$${RDBG_SOAK_OUT:-$(CURDIR)/docs} \
		tap --timeout $$(( ($${RDBG_SOAK_MINUTES:-30} + 10) * 60 )) 'dist/test/soak/**/*.test.js'

# The chaos tier with its long event too (the user daemon paused 10 minutes, a laptop asleep), on the local cluster.
chaos: deps build cluster-build
	test/cluster/images.sh build
	RDBG_CHAOS_LONG=1 RDBG_CHAOS_REPORT=$${RDBG_CHAOS_REPORT:-$(CURDIR)/chaos-report.md} tap --timeout 3600 dist/test/cluster-tier/chaos.test.js; \
		status=$$?; test/cluster/down.sh || status=1; exit $$status

bench: deps build
	node dist/bench/run.js
	node dist/bench/wire.js
	node dist/bench/scale.js
	bash test/cluster/up.sh
	node dist/bench/kube.js
	node dist/bench/kube-forward.js
	node dist/bench/inner-loop.js
	node dist/bench/files.js

# The scale tier alone: one manager, 200 sessions and intercepts for SCALE_MINUTES (10);
# `make bench` runs it too, and `make test` a one-minute form (test/sandbox/scale.test.ts).
scale: deps build
	node dist/bench/scale.js

# rdbg end to end in network namespaces: connect, DNS, a header intercept.
demo: deps build cluster-build
	bash scripts/demo.sh

# the same story without Kubernetes: a standalone manager in network namespaces
demo-standalone: deps build
	bash scripts/demo-standalone.sh

include test/cluster/cluster.mk

clean:
	rm -rf dist src/gen
