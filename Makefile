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
# A real local model server for the tests: llama-cpp-python's server, built once from its source
# package (vendored llama.cpp, about 3 minutes on 2 idle cores) into a wheel cached in
# .cache/wheels. GGML_NATIVE tunes it for this CPU: the cache is per machine (`make clean` keeps
# it). pip's own cache is bypassed: it would hand back a wheel built with other CMAKE_ARGS.
LLAMA_CPP_VERSION ?= 0.3.36
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=ON -DGGML_BLAS=OFF -DGGML_OPENMP=OFF -DLLAVA_BUILD=OFF
WHEELS := .cache/wheels

.PHONY: run test bench check clean claude-code node-sdk llama-server redis-server

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/ccproxyd serve --routes $${CCPROXYD_ROUTES:-routes.yaml}

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

llama-server: $(VENV)/.llama-server

$(VENV)/.llama-server: $(VENV)/.installed
	mkdir -p $(WHEELS)
	ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	  $(PY) -m pip wheel --quiet --no-cache-dir --no-deps --wheel-dir $(WHEELS) llama-cpp-python==$(LLAMA_CPP_VERSION)
	$(PY) -m pip install --quiet "$$(ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl)[server]"
	touch $@

# a real Redis and HAProxy for the team-mode tests (tests/test_team.py starts its own of each on
# free loopback ports), from the OS packages when missing (the CI machine is Debian, as root):
# about 3 MB to download, a few seconds
redis-server:
	command -v redis-server >/dev/null && command -v haproxy >/dev/null || \
	  (apt-get update && apt-get install -y --no-install-recommends redis-server haproxy)

test: $(VENV)/.installed $(VENV)/.llama-server $(CLAUDE_STAMPS) $(NODE_SDK_DIR)/.installed-$(NODE_SDK_VERSION) redis-server
	CCPROXYD_CLAUDE=$(abspath $(CLAUDE_DIR)) CCPROXYD_CLAUDE_VERSIONS="$(CLAUDE_VERSIONS)" \
		CCPROXYD_NODE_SDK=$(abspath $(NODE_SDK_DIR)) $(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) -m tests.bench
	$(PY) -m tests.bench_team

clean:
	rm -rf $(VENV) $(CLAUDE_DIR) $(NODE_SDK_DIR)
