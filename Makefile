# The two front-door commands (see README):
#   make demo   set up .venv and run the main job on the built-in synthetic world
#   make test   set up .venv and run the whole test suite (what CI runs)
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= runs/demo

.PHONY: setup demo test bench-prepare bench-training bench-quality bench-served bench-startup bench-export bench-serving

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/mer demo --run_dir $(DEMO_DIR)

# Two workers (one per core of the CI machine; a test file stays on one
# worker, so its module fixtures are built once): the suite is mostly
# single-threaded Python, so this halves its wall time.
TEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

bench-prepare: setup
	$(PY) -m benchmarks.prepare

bench-training: setup
	$(PY) -m benchmarks.training

bench-quality: setup
	$(PY) -m benchmarks.quality

bench-served: setup
	$(PY) -m benchmarks.served

bench-startup: setup
	$(PY) -m benchmarks.startup

bench-export: setup
	$(PY) -m benchmarks.export

bench-serving: setup
	$(PY) -m benchmarks.serving
