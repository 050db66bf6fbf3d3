# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export EBR_HOME ?= $(CURDIR)/.ebr
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
DAYS ?= 3

.PHONY: venv demo docs test lint eval bench reliability clean

$(BIN)/ebr: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(BIN)/ebr

venv: $(BIN)/ebr

demo: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/ebr demo --days $(DAYS)

# dbt docs and Great Expectations Data Docs of what ran: EBR_HOME/docs/{dbt,expectations}/index.html
docs: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/ebr docs dbt
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/ebr docs expectations

# Quality on real logs (../shared/data) and synthetic data against baselines: EBR_HOME/reports/eval/
eval: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/ebr evaluate

# Stage costs at synthetic marketplace sizes against same-run baselines: EBR_HOME/reports/bench/
# (PROFILES="--profile small" for a quick look; the default runs small, medium and large)
bench: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/ebr bench $(PROFILES)

# Backfills, reruns, bad input, crashes, swaps under load, regressed candidates: a table at the end.
reliability: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q -p no:cacheprovider -m reliability

# Lint, format and types: the same checks run first in `make test`.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Two pytest-xdist workers, one a core: the long tests (a bench, the Airflow UI, the DAG end to
# end) spend much of their time waiting on subprocesses and servers. The suite took 681 s on
# two workers at 299a8e8 (2 cores, alone), where one process had taken 1,126-1,492 s from clean
# clones a session before; work stealing keeps both workers busy to the end.
test: venv lint
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q -p no:cacheprovider -m "not long" --durations=25 -n 2 --dist worksteal

clean:
	rm -rf .ebr .airflow
