# ccproxyd: `make run` starts the daemon, `make test` runs every test, `make bench` measures.
PYTHON ?= python3
# The set-up steps of `make test` (venv, llama.cpp server build, npm installs) run side by side.
MAKEFLAGS += --jobs=4
VENV := .venv
PY := $(VENV)/bin/python
# Claude Code releases the end-to-end tests run against: the newest on npm when it was last
# pinned, and the older one ccproxyd was first built against.
CLAUDE_VERSIONS ?= 2.1.197 2.1.332
CLAUDE_DIR := .claude-code
CLAUDE_STAMPS := $(foreach v,$(CLAUDE_VERSIONS),$(CLAUDE_DIR)/$(v)/.installed)
NODE_SDK_VERSION ?= 1.17.0
NODE_SDK_DIR := .node-sdk
# A real local model server for the tests: llama-cpp-python's server, built once from its source
# package (vendored llama.cpp, about 3 minutes on 2 idle cores) into a wheel cached in
# .cache/wheels. GGML_NATIVE tunes it for this CPU: the cache is per machine (`make clean` keeps
# it). pip's own cache is bypassed: it would hand back a wheel built with other CMAKE_ARGS.
LLAMA_CPP_VERSION ?= 0.3.36
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=ON -DGGML_BLAS=OFF -DGGML_OPENMP=OFF -DLLAVA_BUILD=OFF
WHEELS := .cache/wheels

.PHONY: run test bench check clean claude-code node-sdk llama-server os-packages

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# The routing table `make run` serves and `make check` checks: ROUTES=config/ollama.yaml (a preset),
# else $CCPROXYD_ROUTES, else routes.yaml.
ROUTES ?=
ROUTES_FILE = $(or $(ROUTES),$${CCPROXYD_ROUTES:-routes.yaml})

run: $(VENV)/.installed
	$(VENV)/bin/ccproxyd serve --routes $(ROUTES_FILE)

check: $(VENV)/.installed
	$(VENV)/bin/ccproxyd check $(ROUTES_FILE)

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

# The wheel is built with the system Python (pip builds it in an isolated environment anyway), so
# that with `make -j` it compiles while the venv installs.
$(WHEELS)/.llama-$(LLAMA_CPP_VERSION):
	mkdir -p $(WHEELS)
	ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	  $(PYTHON) -m pip wheel --quiet --no-cache-dir --no-deps --wheel-dir $(WHEELS) llama-cpp-python==$(LLAMA_CPP_VERSION)
	touch $@

$(VENV)/.llama-server: $(VENV)/.installed $(WHEELS)/.llama-$(LLAMA_CPP_VERSION)
	$(PY) -m pip install --quiet "$$(ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl)[server]"
	touch $@

# Programs the tests run that come from the OS: a headless Chromium (the dashboard test), and
# redis-server and HAProxy (team mode; tests/test_team.py starts its own on free loopback ports).
# Installed from Debian's packages when missing, in one apt-get call (two at once would fight
# over dpkg's lock); with sudo when not root.
OS_PROGRAMS := chromium:chromium redis-server:redis-server haproxy:haproxy

os-packages:
	@missing=""; for pair in $(OS_PROGRAMS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo"; \
	  echo "installing from the OS packages:$$missing"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null \
	  || { echo "could not install$$missing: install them with your package manager" >&2; exit 1; }; fi

test: os-packages $(VENV)/.installed $(VENV)/.llama-server $(CLAUDE_STAMPS) $(NODE_SDK_DIR)/.installed-$(NODE_SDK_VERSION)
	CCPROXYD_CLAUDE=$(abspath $(CLAUDE_DIR)) CCPROXYD_CLAUDE_VERSIONS="$(CLAUDE_VERSIONS)" \
		CCPROXYD_NODE_SDK=$(abspath $(NODE_SDK_DIR)) CCPROXYD_NODE_SDK_VERSION=$(NODE_SDK_VERSION) $(PY) -m pytest -n 2 --dist loadfile

bench: $(VENV)/.installed $(CLAUDE_STAMPS)
	$(PY) -m tests.bench
	$(PY) -m tests.bench_team
	CCPROXYD_CLAUDE=$(abspath $(CLAUDE_DIR)) CCPROXYD_CLAUDE_VERSIONS="$(CLAUDE_VERSIONS)" $(PY) -m tests.bench_cache

clean:
	rm -rf $(VENV) $(CLAUDE_DIR) $(NODE_SDK_DIR)
