# Entry points a newcomer needs; see README.md.
CARGO ?= cargo
EXAMPLE ?= packaging/harouterd.conf.example

.PHONY: all build release demo test lint deps clean

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

clean:
	$(CARGO) clean
