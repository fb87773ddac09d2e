# music-recsys: two commands for a new user — `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)
export RECSYS_DATA_ROOT ?= $(CURDIR)/data
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
# What the class-data-sharing archive's build (harness/cds.py) imports, installed first so that the archive
# builds while the rest installs (tests/harness/test_cds.py checks the list covers the build's imports); a
# failed install still waits for the build, so no JVM outlives make.
SPARK_SIDE := pyspark pyspark-client numpy pandas pyarrow jsonschema

.PHONY: setup demo serve test test-fast lint data bench clean

# Installs (once per change of the pins), then creates or migrates the embedded results store (idempotent).
setup: $(STAMP)
	@$(BIN)/music-recsys db upgrade

# Re-installs only when the pins change; `make setup` is idempotent.
$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	@command -v java >/dev/null || { echo "Java 17 or 21 is required by Spark 4 (Debian: apt-get install openjdk-17-jre-headless)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt $(SPARK_SIDE)
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/python -m harness.cds --build >$(VENV)/cds.log 2>&1 & cds=$$!; \
	  $(BIN)/pip install --quiet -r requirements.txt -r requirements-dev.txt -c constraints.txt \
	    || { wait $$cds; exit 1; }; \
	  wait $$cds; built=$$?; cat $(VENV)/cds.log; exit $$built
	$(BIN)/music-recsys check-install
	touch $(STAMP)

demo: setup
	$(BIN)/python -m harness.demo

# The champion of the demo's registry (SQLite under the data root) on http://127.0.0.1:8000.
serve: setup
	$(BIN)/music-recsys serve --host 127.0.0.1 --port 8000

test: setup
	$(BIN)/ruff check .
	$(BIN)/pytest -n 2 --dist loadgroup

test-fast: setup
	$(BIN)/pytest -n 2 --dist loadgroup -m "not slow and not e2e and not spark"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

data: setup
	$(BIN)/music-recsys generate --out $(RECSYS_DATA_ROOT)/msd_like

# Benchmarks: long, by hand, appending to bench/RESULTS.md (never part of `make test`).
bench: setup
	$(BIN)/pip install --quiet -r requirements-bench.txt -c constraints.txt
	$(BIN)/python bench/cold_start.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/eval_topk.py
	$(BIN)/python bench/topk_kernel.py
	$(BIN)/python bench/als_fit.py
	$(BIN)/python bench/als_blas.py
	$(BIN)/python bench/als_tuning.py
	$(BIN)/python bench/fast_search.py
	$(BIN)/python bench/movielens.py
	$(BIN)/python bench/scaling.py
	$(BIN)/python bench/orchestration.py

clean:
	rm -rf $(VENV) .airflow data .pytest_cache
