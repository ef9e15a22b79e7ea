# ccproxyd: `make run` starts the daemon, `make test` runs every test, `make bench` measures.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CLAUDE_VERSION ?= 2.1.197
CLAUDE_DIR := .claude-code
CLAUDE := $(CLAUDE_DIR)/node_modules/@anthropic-ai/claude-code-linux-x64/claude
NODE_SDK_VERSION ?= 1.15.0
NODE_SDK_DIR := .node-sdk

.PHONY: run test bench check clean claude-code node-sdk

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

# the TypeScript SDK (@anthropic-ai/sdk) for the tool-runner tests, kept out of git like Claude Code
node-sdk: $(NODE_SDK_DIR)/.installed-$(NODE_SDK_VERSION)

$(NODE_SDK_DIR)/.installed-$(NODE_SDK_VERSION):
	mkdir -p $(NODE_SDK_DIR)
	cd $(NODE_SDK_DIR) && npm install --no-audit --no-fund --loglevel=error @anthropic-ai/sdk@$(NODE_SDK_VERSION)
	touch $@

test: $(VENV)/.installed $(CLAUDE_DIR)/.installed $(NODE_SDK_DIR)/.installed-$(NODE_SDK_VERSION)
	CCPROXYD_CLAUDE=$(abspath $(CLAUDE_DIR)) CCPROXYD_NODE_SDK=$(abspath $(NODE_SDK_DIR)) $(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) -m tests.bench

clean:
	rm -rf $(VENV) $(CLAUDE_DIR) $(NODE_SDK_DIR)
