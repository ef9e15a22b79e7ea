# ccproxyd: `make run` starts the daemon, `make test` runs every test, `make bench` measures.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CLAUDE_VERSION ?= 2.1.197
CLAUDE_DIR := .claude-code
CLAUDE := $(CLAUDE_DIR)/node_modules/@anthropic-ai/claude-code-linux-x64/claude
# A real local model server for the tests: llama-cpp-python's server, built once from its source
# package (vendored llama.cpp, about 3 minutes on 2 cores) into a wheel cached in .cache/wheels.
# GGML_NATIVE tunes it for this CPU: the cache is per machine (`make clean` keeps it). pip's own
# cache is bypassed: it would hand back a wheel built with other CMAKE_ARGS.
LLAMA_CPP_VERSION ?= 0.3.36
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=ON -DGGML_BLAS=OFF -DGGML_OPENMP=OFF -DLLAVA_BUILD=OFF
WHEELS := .cache/wheels

.PHONY: run test bench check clean claude-code llama-server

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

llama-server: $(VENV)/.llama-server

$(VENV)/.llama-server: $(VENV)/.installed
	mkdir -p $(WHEELS)
	ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip wheel --quiet --no-cache-dir --no-deps --wheel-dir $(WHEELS) \
	  llama-cpp-python==$(LLAMA_CPP_VERSION)
	$(PY) -m pip install --quiet "$$(ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl)[server]"
	touch $@

test: $(VENV)/.installed $(VENV)/.llama-server $(CLAUDE_DIR)/.installed
	CCPROXYD_CLAUDE=$(abspath $(CLAUDE_DIR)) $(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) -m tests.bench

clean:
	rm -rf $(VENV) $(CLAUDE_DIR)
