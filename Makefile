# ccproxyd: `make run` starts the daemon, `make test` runs every test, `make bench` measures.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CLAUDE_VERSION ?= 2.1.197
CLAUDE_DIR := .claude-code
CLAUDE := $(CLAUDE_DIR)/node_modules/@anthropic-ai/claude-code-linux-x64/claude

.PHONY: run test bench check clean claude-code

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/ccproxyd serve --routes routes.yaml

check: $(VENV)/.installed
	$(VENV)/bin/ccproxyd check routes.yaml

claude-code: $(CLAUDE_DIR)/.installed

$(CLAUDE_DIR)/.installed:
	mkdir -p $(CLAUDE_DIR)
	cd $(CLAUDE_DIR) && npm install --no-audit --no-fund --loglevel=error @anthropic-ai/claude-code@$(CLAUDE_VERSION)
	touch $@

test: $(VENV)/.installed $(CLAUDE_DIR)/.installed
	CCPROXYD_CLAUDE=$(abspath $(CLAUDE_DIR)) $(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) -m tests.bench

clean:
	rm -rf $(VENV) $(CLAUDE_DIR)
