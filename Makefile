# ccproxyd: `make run` starts the daemon, `make test` runs every test, `make bench` measures.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Claude Code releases the end-to-end tests run against: the newest on npm when it was last
# pinned, and the older one ccproxyd was first built against.
CLAUDE_VERSIONS ?= 2.1.197 2.1.332
CLAUDE_DIR := .claude-code
CLAUDE_STAMPS := $(foreach v,$(CLAUDE_VERSIONS),$(CLAUDE_DIR)/$(v)/.installed)
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

claude-code: $(CLAUDE_STAMPS)

$(CLAUDE_DIR)/%/.installed:
	mkdir -p $(CLAUDE_DIR)/$*
	cd $(CLAUDE_DIR)/$* && npm install --no-audit --no-fund --loglevel=error @anthropic-ai/claude-code@$*
	touch $@

# the TypeScript SDK (@anthropic-ai/sdk) for the tool-runner tests, kept out of git like Claude Code
node-sdk: $(NODE_SDK_DIR)/.installed-$(NODE_SDK_VERSION)

$(NODE_SDK_DIR)/.installed-$(NODE_SDK_VERSION):
	mkdir -p $(NODE_SDK_DIR)
	cd $(NODE_SDK_DIR) && npm install --no-audit --no-fund --loglevel=error @anthropic-ai/sdk@$(NODE_SDK_VERSION)
	touch $@

test: $(VENV)/.installed $(CLAUDE_STAMPS) $(NODE_SDK_DIR)/.installed-$(NODE_SDK_VERSION)
	CCPROXYD_CLAUDE=$(abspath $(CLAUDE_DIR)) CCPROXYD_CLAUDE_VERSIONS="$(CLAUDE_VERSIONS)" \
		CCPROXYD_NODE_SDK=$(abspath $(NODE_SDK_DIR)) $(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) -m tests.bench

clean:
	rm -rf $(VENV) $(CLAUDE_DIR) $(NODE_SDK_DIR)
