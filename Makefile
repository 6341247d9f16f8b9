# The two commands a newcomer needs: `make demo` (the main job) and `make test`.
# Each sets up .venv by itself, once: torch==2.13.0 only when no torch is importable (so a GPU
# user's own CUDA torch is kept and pip never resolves an unpinned multi-GB torch), then the
# package with its test and GPTQ extras. Re-running skips the set-up until pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.muse-quant-installed

.PHONY: demo test lint

demo: $(STAMP)
	$(VENV)/bin/muse-quant demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,gptq]"
	touch $(STAMP)
