# Development tasks: the same commands as .ci/run and the README.
PYTHON ?= python
SRC := face0cli tests benchmarks

.PHONY: test test-fast lint fix bench

test:  ## the whole suite, as CI runs it
	$(PYTHON) -m pytest -q

test-fast:  ## everything but the slow tests (subprocesses, accelerate launches, long runs): under a minute
	$(PYTHON) -m pytest -q -m "not slow"

lint:  ## style and types, as CI checks them
	ruff check $(SRC)
	ruff format --check $(SRC)
	mypy face0cli

fix:  ## apply ruff's fixes and formatting
	ruff check --fix $(SRC)
	ruff format $(SRC)

bench:  ## the speed targets of the README's Benchmarks table
	$(PYTHON) benchmarks/bench_sampler.py --steps 10 --repeats 7 --threads 1
	$(PYTHON) benchmarks/bench_train.py
	$(PYTHON) benchmarks/bench_prep.py --repeat 3
