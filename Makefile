# Set-up and main entry points. `make demo` and `make test` are the README's two commands.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU build of torch from this machine's local disk; elsewhere any torch>=2.1 works
TORCH  ?= torch==2.13.0
PIP    := $(BIN)/python -m pip -q --disable-pip-version-check

.PHONY: demo test install install-dev bench clean-demo help

help:
	@echo "make demo   - install, then run the LibriSpeech recipe end to end on a generated corpus"
	@echo "make test   - install (with dev extras), then run the test suite"
	@echo "make bench  - run the speed/memory benchmarks (benchmarks/results/*.json)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(PIP) install $(TORCH)
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	PATH="$(abspath $(BIN)):$$PATH" bash recipes/librispeech/run.sh --demo

test: $(VENV)/.installed-dev
	$(BIN)/python -m ruff check cpc_speech tests benchmarks recipes examples
	$(BIN)/python -m pytest -q --durations=15 tests

bench: $(VENV)/.installed
	$(BIN)/python -m benchmarks.run

clean-demo:
	rm -rf exp/demo data/demo
