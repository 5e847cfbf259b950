# two-micros. The two commands a new user needs: `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Builds are shared across clones (and with CI) through a target dir outside
# the repository.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/two-micros/target
INFRA := bash scripts/infra.sh
# Exports KAFKA_BROKERS and DATABASE_URL: given ones, else those infra-up starts.
WITH_INFRA_ENV = eval "$$($(INFRA) env)" &&
BIN := $(CARGO_TARGET_DIR)/debug

.PHONY: help deps build infra-up infra-down infra-status test lint chaos bench demo run-dls run-cs

help:
	@echo "make demo        infrastructure up, sample images merged end to end"
	@echo "make test        infrastructure up, lint, then every test"
	@echo "make run-dls     run the Download Service (ARGS='--source super_heros' ...)"
	@echo "make run-cs      run the Concat Service (ARGS='status' / 'failures' ...)"
	@echo "make infra-up / infra-down / infra-status   Kafka 4 (KRaft) and PostgreSQL"
	@echo "make bench       merge benchmark (ms per pair of 400x400 JPEGs)"
	@echo "make chaos       kills, broker and PostgreSQL restarts over 2000 pairs (CHAOS_SEED=... to replay)"

deps:
	@$(INFRA) build-deps

# --examples brings in the dev-dependencies' features too, as the test build
# does, so tests, the demo and run-* share one build.
build: deps
	cargo build --workspace --bins --examples

infra-up:
	@$(INFRA) up

infra-down:
	@$(INFRA) down

infra-status:
	@$(INFRA) status || true

lint: deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# The chaos test (tests/chaos.rs) runs here at CI size; it restarts the
# broker and PostgreSQL that infra-up started.
test: deps infra-up lint build
	$(WITH_INFRA_ENV) cargo test --workspace --all-targets

# Full chaos run: CHAOS_PAIRS (2000), CHAOS_OUTAGE_S (30), CHAOS_SEED to replay.
chaos: deps infra-up build
	$(WITH_INFRA_ENV) CHAOS_PAIRS=$${CHAOS_PAIRS:-2000} CHAOS_OUTAGE_S=$${CHAOS_OUTAGE_S:-30} \
		cargo test -p concat-service --test chaos -- --nocapture

demo: deps infra-up
	@bash scripts/demo.sh

# Merge speed (ms per pair of 400x400 JPEGs), release build.
bench: deps
	cargo bench -p concat-service --bench merge

run-dls: build
	$(WITH_INFRA_ENV) $(BIN)/dls $(ARGS)

run-cs: build
	$(WITH_INFRA_ENV) $(BIN)/cs $(ARGS)
