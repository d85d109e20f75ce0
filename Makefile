# Every target does its own set-up: a fresh machine needs only `make run` / `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=
PYTEST_ARGS ?=

export KEDRO_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: help install data run smoke lint test ui dag notebook clean

help:  ## list targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

install: $(BIN)/.installed  ## virtual environment with the pinned dependencies

data:  ## make sure real Fashion-MNIST is on this machine
	@bash scripts/ensure_data.sh

run: install data  ## the full default pipeline on real data (kedro run); ARGS="--params training.epochs=3"
	$(BIN)/kedro run $(ARGS)

smoke: install data  ## the whole pipeline on small real slices (kedro run --env smoke)
	$(BIN)/kedro run --env smoke $(ARGS)

lint: install  ## ruff check and ruff format --check (pinned in requirements.lock)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

test: install data lint  ## lint, then the test suite; PYTEST_ARGS="-k name" to select
	$(BIN)/python -m pytest $(PYTEST_ARGS)

ui: install  ## browse runs in the MLflow UI (http://127.0.0.1:5000); ARGS="--env smoke"
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/kedro mlflow ui $(ARGS)

dag: install  ## the pipeline pictured: kedro-viz's flowchart as docs/pipeline.png (needs Chromium)
	$(BIN)/kedro viz build
	$(BIN)/python scripts/pipeline_image.py docs/pipeline.png

notebook: install  ## execute notebooks/finished_run.ipynb on the last run (KEDRO_ENV=smoke make notebook: the smoke run)
	$(BIN)/python scripts/run_notebook.py notebooks/finished_run.ipynb --output data/08_reporting/finished_run$(if $(KEDRO_ENV),_$(KEDRO_ENV)).ipynb

clean:  ## remove generated data (keeps raw data, the MLflow store and the venv)
	find data -mindepth 2 -not -path 'data/01_raw/*' -not -name .gitkeep -delete
