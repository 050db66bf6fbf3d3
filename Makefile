# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export EBR_HOME ?= $(CURDIR)/.ebr
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
DAYS ?= 3

.PHONY: venv demo test eval reliability clean

$(BIN)/ebr: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(BIN)/ebr

venv: $(BIN)/ebr

demo: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/ebr demo --days $(DAYS)

# Quality on real logs (../shared/data) and synthetic data against baselines: EBR_HOME/reports/eval/
eval: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/ebr evaluate

# Backfills, reruns, bad input, crashes, swaps under load, regressed candidates: a table at the end.
reliability: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q -p no:cacheprovider -m reliability

test: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q -p no:cacheprovider -m "not long"

clean:
	rm -rf .ebr .airflow
