# Leasehold build entry points. `make test` is the test command CI runs.
SWIFT ?= swift
APT_PACKAGES := libhiredis-dev libyaml-dev libssl-dev openssl redis-server redis-tools

.PHONY: deps build test lint format check-modules demo bench docs clean

# Installs the C libraries and redis-server when they are missing (via apt when root).
deps:
	@missing=""; \
	[ -f /usr/include/hiredis/hiredis.h ] || missing="$$missing libhiredis-dev"; \
	[ -f /usr/include/yaml.h ] || missing="$$missing libyaml-dev"; \
	[ -f /usr/include/openssl/ssl.h ] || missing="$$missing libssl-dev"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v redis-cli >/dev/null 2>&1 || missing="$$missing redis-tools"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing packages:$$missing — install them with: sudo apt-get install$$missing" >&2; exit 1; \
	  fi; \
	fi

build: deps
	$(SWIFT) build

# Builds everything (the daemon tests run the real leaseholdd), runs the unit and
# integration suites in parallel, then the multi-process fault suite and the simulator each
# on their own: their minutes of CPU would otherwise slow the timing-sensitive suites
# running beside them.
HEAVY_SUITES := LeaseholdSimulationTests|FaultSuiteTests|HostileCatalogTests|SentinelFailoverTests|ClusterMigrationTests
# Suites that start whole Redis topologies or daemon fleets (TLS, Sentinel, Cluster, crash
# release): run after the main pass, so their processes do not starve its 2 s leases.
TOPOLOGY_SUITES := TLSTests|TLSDaemonTests|SentinelIntegrationTests|MinReplicasTests|ClusterConnectionTests|CrashReleaseTests
test: deps lint
	$(SWIFT) build --build-tests --explicit-target-dependency-import-check error
	$(SWIFT) test --skip-build --skip '$(HEAVY_SUITES)|$(TOPOLOGY_SUITES)'
	$(SWIFT) test --skip-build --filter '$(TOPOLOGY_SUITES)'
	LEASEHOLD_HEAVY_TESTS=1 $(SWIFT) test --skip-build --filter FaultSuiteTests
	LEASEHOLD_HEAVY_TESTS=1 $(SWIFT) test --skip-build --filter LeaseholdSimulationTests
	LEASEHOLD_HEAVY_TESTS=1 $(SWIFT) test --skip-build --filter HostileCatalogTests
	LEASEHOLD_HEAVY_TESTS=1 $(SWIFT) test --skip-build --filter SentinelFailoverTests
	LEASEHOLD_HEAVY_TESTS=1 $(SWIFT) test --skip-build --filter ClusterMigrationTests

# The module rules: the election module stays free of YAML, process and Foundation code, and
# every imported module is declared in Package.swift.
check-modules:
	python3 scripts/check-modules.py

# House rules that run: the module rules, then formatting (the toolchain's swift format with
# .swift-format; `make format` rewrites the tree to match).
FORMAT_PATHS := Sources Tests Examples Package.swift
lint: check-modules
	$(SWIFT) format lint --strict --recursive --parallel $(FORMAT_PATHS)

format:
	$(SWIFT) format format --in-place --recursive --parallel $(FORMAT_PATHS)

# Starts a private redis-server and three members, shows a crash failover and a graceful
# handover, then cleans up.
demo: deps
	./scripts/demo.sh

# Release build of the daemon and the benchmarks, then every scenario (~8-9 min on 2 cores;
# the first release build from scratch adds several minutes). Results: bench-results/*.json.
bench: deps
	$(SWIFT) build -c release --product leaseholdd
	$(SWIFT) build -c release --product LeaseholdBench
	$$($(SWIFT) build -c release --show-bin-path)/LeaseholdBench all

# DocC archives of the Leasehold and LeaseholdElection modules (their catalogs are
# Sources/*/*.docc) in .build/docs/*.doccarchive. A warning, such as a broken ``symbol``
# link, fails the target.
DOCS_DIR := .build/docs
docs: deps
	mkdir -p $(DOCS_DIR)
	$(SWIFT) package --allow-writing-to-directory $(DOCS_DIR) generate-documentation \
	  --target Leasehold --target LeaseholdElection --output-path $(DOCS_DIR) --warnings-as-errors

clean:
	rm -rf .build
