# Targets for the rdbg test cluster; included by the top-level Makefile
# (`include test/cluster/cluster.mk`) or used alone:
#   make -f test/cluster/cluster.mk cluster-up
#
#   cluster-build    build Kubernetes, CoreDNS and pause into $(RDBG_CACHE) (cached)
#   cluster-images   build the OCI image archives (and import them if the cluster runs)
#   cluster-up       build what is missing, start the cluster (or reuse a running one)
#   cluster-down     tear everything down (processes, mounts, cgroups, namespaces)
#   cluster-samples  deploy the sample apps into namespace $(SAMPLES_NS) (default demo)
#   test-cluster     run the cluster-tier tests (brings the cluster up, leaves it down)
CLUSTER_MK_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
CLUSTER_REPO_DIR := $(abspath $(CLUSTER_MK_DIR)/../..)

.PHONY: cluster-build cluster-images cluster-up cluster-down cluster-samples test-cluster

cluster-build:
	$(CLUSTER_MK_DIR)/build.sh

cluster-images: cluster-build
	@if [ -S "$${RDBG_CLUSTER_STATE:-/run/rdbg-cluster}/containerd/containerd.sock" ]; then \
		$(CLUSTER_MK_DIR)/images.sh sync; else $(CLUSTER_MK_DIR)/images.sh build; fi

cluster-up:
	$(CLUSTER_MK_DIR)/up.sh

cluster-down:
	$(CLUSTER_MK_DIR)/down.sh

SAMPLES_NS ?= demo
cluster-samples: cluster-up
	$(CLUSTER_MK_DIR)/samples.sh $(SAMPLES_NS)

# The TypeScript tests are compiled by the project's build (tsc) into dist/.
# The cold Kubernetes build runs here, before the test runner's per-file
# timeout applies. The cluster is always torn down afterwards.
test-cluster: cluster-build
	$(MAKE) -C $(CLUSTER_REPO_DIR) build
	$(CLUSTER_MK_DIR)/images.sh build
	cd $(CLUSTER_REPO_DIR) && npx tap dist/test/cluster-tier/*.test.js; \
		status=$$?; $(CLUSTER_MK_DIR)/down.sh || status=1; exit $$status
