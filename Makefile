# Entry points a newcomer needs; see README.md.
CARGO ?= cargo
EXAMPLE ?= packaging/harouterd.conf.example

.PHONY: all build release static monitor-order cross cross-all cross-unit test-builds demo render-example test lint deps clean bench-state-change bench-daemon
MUSL_TARGET := x86_64-unknown-linux-musl
STATIC_BIN := target/$(MUSL_TARGET)/release/harouterd

all: build

build:
	$(CARGO) build --locked

release:
	$(CARGO) build --locked --release

# The static, stripped musl binary appliances ship (SPEC: < 1.5 MiB),
# linked by rust-lld like the cross builds below: it lays out the code a
# running monitor uses first (build.rs, packaging/order/).
static:
	rustup target list --installed 2>/dev/null | grep -qx $(MUSL_TARGET) || rustup target add $(MUSL_TARGET)
	$(CARGO) build --locked --release --target $(MUSL_TARGET) --config 'target.$(MUSL_TARGET).linker="rust-lld"'
	@ls -l $(STATIC_BIN)

# Static binaries for other architectures, linked by rust-lld (shipped with
# rustup's toolchain; nothing in the dependency graph is C, and each musl
# target brings its own libc and crt objects): no cross C toolchain needed.
#   make cross TARGET=aarch64-unknown-linux-musl
#   -> target/aarch64-unknown-linux-musl/release/harouterd
# The rustup target must be installable for the toolchain (README "Other
# architectures" has armv7 and MIPS, which need more). tests/cross.rs runs
# CROSS_TARGETS, which `make test` builds first (make test-builds: 47 s for
# both from scratch on 2 CPUs, 30 s for the three release binaries after a
# source change, nothing when up to date).
CROSS_TARGETS := aarch64-unknown-linux-musl i686-unknown-linux-musl
TARGET ?= aarch64-unknown-linux-musl
# Under qemu-user for a foreign target (as `make cross-unit` needs it).
QEMU_aarch64-unknown-linux-musl := qemu-aarch64-static

cross:
	rustup target list --installed 2>/dev/null | grep -qx $(TARGET) || rustup target add $(TARGET)
	$(CARGO) build --locked --release --target $(TARGET) --config 'target.$(TARGET).linker="rust-lld"'
	@ls -l target/$(TARGET)/release/harouterd

cross-all:
	@for t in $(CROSS_TARGETS); do $(MAKE) --no-print-directory cross TARGET=$$t || exit 1; done

# What `make test` builds first: the static binary and every cross target,
# in one cargo run, so that the three release builds share the 2 CPUs
# instead of taking turns.
TEST_TARGETS := $(MUSL_TARGET) $(CROSS_TARGETS)
test-builds:
	@for t in $(TEST_TARGETS); do rustup target list --installed 2>/dev/null | grep -qx $$t || rustup target add $$t || exit 1; done
	$(CARGO) build --locked --release $(foreach t,$(TEST_TARGETS),--target $(t)) \
		$(foreach t,$(TEST_TARGETS),--config 'target.$(t).linker="rust-lld"')
	@ls -l $(foreach t,$(TEST_TARGETS),target/$(t)/release/harouterd)

# The library's unit tests built for TARGET and run there (natively for
# i686, under qemu-user for aarch64): 32-bit and foreign-architecture
# cleanliness of the pure logic. Not part of `make test` (12 s for i686,
# 27 s for aarch64).
cross-unit:
	$(CARGO) test --locked --lib --target $(TARGET) --config 'target.$(TARGET).linker="rust-lld"' \
		$(if $(QEMU_$(TARGET)),--config 'target.$(TARGET).runner="$(QEMU_$(TARGET))"')

# The live demo (root; demo/README.md): two nodes in network namespaces,
# three HA routers with real keepalived, a keepalived killed and respawned,
# a node stopped and its peer taking over. Builds the release binary and
# installs keepalived/iproute2/curl when missing. Under a minute.
demo:
	@./demo/run.sh

# The shipped example config checked and rendered: the keepalived.conf each
# router gets (passwords masked). No root needed.
render-example: release
	./target/release/harouterd check -c $(EXAMPLE)
	./target/release/harouterd render -c $(EXAMPLE)

# The Debian package, from the static binary (packaging/deb/build.sh;
# dpkg-deb only, no root needed): target/deb/harouterd_VERSION_ARCH.deb.
# tests/deb.rs installs, upgrades and purges it in a scratch copy of this
# machine.
.PHONY: deb docker
deb: static
	sh packaging/deb/build.sh $(STATIC_BIN) target/deb

# The container image (packaging/Dockerfile, which builds the static binary
# itself with `make static`); needs docker. README "Install" says how to
# run it.
DOCKER ?= docker
IMAGE ?= harouterd
docker:
	$(DOCKER) build -f packaging/Dockerfile -t $(IMAGE) .

deps:
	./scripts/install-test-deps.sh

# Everything CI runs: set-up, formatting, lints, then every test (unit,
# golden, CLI, and the real-keepalived ones, which need root).
# The static binary is built first: tests/static_binary.rs runs it in an
# empty chroot; so are the cross builds, which tests/cross.rs runs (natively
# or under qemu-user) and compares with it.
test: deps lint test-builds
	$(CARGO) test --locked --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

# Benchmarks (SPEC section 5; bench/README.md). Not tests: nothing here is
# part of `make test`. Needs root; extra flags in BENCH_ARGS, e.g.
#   make bench-state-change BENCH_ARGS="--flips 1000 --json /tmp/sc.json"
# Exit status 1 means a target was missed (see the table).
PYTHON ?= python3
BENCH_ARGS ?=

# Neutron's own monitor (the dash script of neutron >= 29), run side by side
# in bench/latency.py when found: $(NEUTRON_MONITOR), else on PATH.
NEUTRON_VENV ?= /work/venv-neutron
NEUTRON_MONITOR ?= $(firstword $(wildcard $(NEUTRON_VENV)/bin/neutron-keepalived-state-change) $(shell command -v neutron-keepalived-state-change 2>/dev/null))
export NEUTRON_MONITOR

# Every SPEC section 5 target in one table (bench/run.py, about 10 min): the
# static binary (and the glibc release build for the state-change memory
# row); BENCH_ARGS="--quick --json /tmp/bench.json" for a shorter run,
# BENCH_ARGS="--only latency,keepalived" for some parts.
.PHONY: bench bench-latency bench-keepalived flipper
bench: static release flipper
	$(PYTHON) bench/run.py $(BENCH_ARGS)

flipper:
	$(CARGO) build --locked --release --example bench_flipper

# packaging/order/*.txt, the code a running monitor uses (build.rs): remake
# after a toolchain or version change (root, valgrind; about 3 min).
monitor-order:
	./scripts/monitor-order.sh

bench-state-change: release
	$(PYTHON) bench/state_change.py $(BENCH_ARGS)

# VIP change -> agent notified, reference before the change reaches an
# already-running `ip -batch` (state-change, the daemon, Neutron's monitor;
# state dir on ext4 and tmpfs). About a minute.
bench-latency: static
	$(PYTHON) bench/latency.py $(BENCH_ARGS)

# The daemon: keepalived respawn, idle wake-ups, 1000 routers (about 6 min;
# BENCH_ARGS="--only scale" for the quick part).
bench-daemon: release flipper
	$(PYTHON) bench/daemon.py $(BENCH_ARGS)

# 1000 routers with real keepalived on one node, a peer node for the
# failover (2000 namespaces, 4000 keepalived processes; about 2 min;
# BENCH_ARGS="--routers 50" while developing).
bench-keepalived: static flipper
	$(PYTHON) bench/keepalived_scale.py $(BENCH_ARGS)

clean:
	$(CARGO) clean

# Fuzzing (fuzz/README.md): both cargo-fuzz targets, one after the other,
# FUZZ_SECONDS each. Not part of `make test`. RUSTC_BOOTSTRAP=1 lets the
# stable toolchain accept the nightly-only flags cargo fuzz passes
# (-Zsanitizer=address). New corpus entries go to fuzz/corpus/ (ignored);
# crashes to fuzz/artifacts/: add each to fuzz/regressions/TARGET/ (or
# fuzz/seeds/http_request/) so tests/fuzz_regressions.rs keeps checking it.
FUZZ_SECONDS ?= 60

.PHONY: fuzz
fuzz:
	$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install --locked cargo-fuzz
	mkdir -p fuzz/corpus/http_request fuzz/corpus/config_parse
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run http_request corpus/http_request seeds/http_request \
		-- -max_total_time=$(FUZZ_SECONDS) -max_len=20000 -print_final_stats=1
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run config_parse corpus/config_parse ../tests/scenarios \
		regressions/config_parse -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1
