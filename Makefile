# The two commands a newcomer needs: `make demo` (the main job) and `make test` (the import-layer
# contracts of docs/architecture.md, then the tests).
# Each sets up .venv by itself, once: torch==2.13.0 only when no torch is importable (so a GPU
# user's own CUDA torch is kept and pip never resolves an unpinned multi-GB torch), then the
# package with its test, GPTQ, HQQ, GGUF and Ray extras (GGUF's llama-cpp-python compiles
# llama.cpp: minutes, see README). Re-running skips the set-up until pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.muse-quant-installed
CHROMIUM := /usr/bin/chromium

.PHONY: demo test lint chromium

demo: $(STAMP)
	$(VENV)/bin/muse-quant demo

test: $(STAMP) chromium
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The leaderboard page test drives Debian's chromium (never a downloaded browser). Installed here
# when missing and apt-get is usable (root, non-interactive); otherwise that test skips and says
# why, except under CI=true, where it fails.
chromium:
	@if [ ! -x $(CHROMIUM) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium (apt-get) for the leaderboard page test"; \
		export DEBIAN_FRONTEND=noninteractive; \
		{ apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } </dev/null \
			|| echo "warning: apt-get could not install chromium; the page test skips (fails if CI=true)"; \
	fi

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip install -q -e ".[test,gptq,hqq,gguf,ray]"
	touch $(STAMP)
