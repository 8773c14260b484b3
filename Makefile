# Entry points a newcomer needs; see README.md.
CARGO ?= cargo
EXAMPLE ?= packaging/harouterd.conf.example

.PHONY: all build release demo test lint deps clean bench-state-change

all: build

build:
	$(CARGO) build --locked

release:
	$(CARGO) build --locked --release

# The main job, on the shipped example config: the keepalived.conf each
# router gets (passwords masked).
demo: release
	./target/release/harouterd check -c $(EXAMPLE)
	./target/release/harouterd render -c $(EXAMPLE)

deps:
	./scripts/install-test-deps.sh

# Everything CI runs: set-up, formatting, lints, then every test (unit,
# golden, CLI, and the real-keepalived ones, which need root).
test: deps lint
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

bench-state-change: release
	$(PYTHON) bench/state_change.py $(BENCH_ARGS)

clean:
	$(CARGO) clean
