# The two set-up commands (see README):
#   make run   - creates .venv, builds fer (release), runs the demo on the bundled sample
#   make test  - creates .venv, builds fer, runs cargo's and pytest's tests
# Needs only Rust (cargo) and Python >= 3.10 with venv/pip; everything else is installed here.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test build venv cargo-test pytest bench-parse clean

$(VENV)/.deps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "maturin>=1.7,<2" numpy pandas tqdm pytest matplotlib nbclient nbformat ipykernel
	touch $@

venv: $(VENV)/.deps

build: venv
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH maturin develop --release -q

run: build
	$(PY) scripts/demo.py

cargo-test:
	cargo test --release

pytest: build
	$(PY) -m pytest -q

test: cargo-test pytest

bench-parse: build
	$(PY) benchmarks/bench_parse.py

clean:
	rm -rf $(VENV) target
