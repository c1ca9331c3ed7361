# Set-up and everyday commands. Each target installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
CONFIG ?= configs/shapes_sat.py
WORKDIR ?= workdirs/shapes_sat
ARGS ?=
BIN := $(VENV)/bin
# The suite runs in two pytest-xdist workers, a file at a time (a learning test's module fixture
# trains once) in the order collected (tests/conftest.py puts the slow ones first), each with one
# thread of TensorFlow ops: on 2 cores it takes about half the time of one process.
# PYTEST_WORKERS= runs it in one process.
PYTEST_WORKERS ?= -n 2 --dist loadfile --no-loadscope-reorder

.PHONY: install train evaluate lint format test test-fast tensorboard benchmark bench bench-decode clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

# Trains CONFIG on the embedded `shapes` dataset, then scores the test and compositional splits.
train: install
	$(BIN)/python scripts/train.py --config=$(CONFIG) --workdir=$(WORKDIR) $(ARGS)
	$(MAKE) evaluate

evaluate: install
	$(BIN)/python scripts/evaluate.py --workdir=$(WORKDIR) --split=test
	$(BIN)/python scripts/evaluate.py --workdir=$(WORKDIR) --split=compositional

# Lint and format check (ruff, configured in pyproject.toml); `make format` rewrites in place.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Lint, then the whole suite, learning tests included (CI runs exactly this).
test: lint
	$(BIN)/python -m pytest -q $(PYTEST_WORKERS)

# Everything but the learning tests marked slow.
test-fast: lint
	$(BIN)/python -m pytest -q $(PYTEST_WORKERS) -m "not slow"

tensorboard: install
	$(BIN)/tensorboard --logdir=$(WORKDIR)/tensorboard

benchmark: install
	$(BIN)/python benchmarks/train_throughput.py --config=$(CONFIG)

# The benchmark suite: train speed, MFU against the measured matmul peak and memory of the shapes
# and tutorial-size configs, float32 and bfloat16, beside the tutorials' way of training
# (docs/performance.md). Writes benchmarks/results/bench_*.json. About 15 minutes on 2 cores.
bench: install
	$(BIN)/python benchmarks/bench.py $(ARGS)

# Captions/sec of the batched search beside a per-image Python loop, on the same weights (fresh
# ones of CONFIG; ARGS="--workdir=DIR" for a trained model's). Writes benchmarks/results/decode_*.
bench-decode: install
	$(BIN)/python benchmarks/decode.py --config=$(CONFIG) $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
