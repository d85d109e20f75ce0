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

.PHONY: help install data run smoke lint test ui serve promote team-server team-server-stop dag notebook airflow airflow-dag airflow-test airflow-ui clean

# Airflow 3 lives in its own venv: apache-airflow 3.3.2 needs fastapi<0.137 and the
# project's lock has 0.165.0 (requirements-airflow.lock is the same lock with Airflow).
AIRFLOW_VENV ?= .venv-airflow
AIRFLOW_BIN := $(AIRFLOW_VENV)/bin
AIRFLOW_DAGS := deploy/airflow/dags
AIRFLOW_DAG_ID = multitask-cnn$(if $(filter-out local,$(or $(KEDRO_ENV),local)),-$(KEDRO_ENV))
AIRFLOW_ENV = AIRFLOW_HOME=$${AIRFLOW_HOME:-$(CURDIR)/.airflow} \
	AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/$(AIRFLOW_DAGS) AIRFLOW__CORE__LOAD_EXAMPLES=False \
	AIRFLOW__API__HOST=127.0.0.1 PATH="$(abspath $(AIRFLOW_BIN)):$$PATH"

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

test: install airflow data lint  ## lint, then the test suite (with the Airflow venv for the DAG tests); PYTEST_ARGS="-k name" to select
	$(BIN)/python -m pytest $(PYTEST_ARGS)

serve: install  ## serve the registered model on http://127.0.0.1:5001/invocations: make serve [ALIAS=champion]
	PATH="$(abspath $(BIN)):$$PATH" MLFLOW_TRACKING_URI="$${MLFLOW_TRACKING_URI:-sqlite:///$(abspath mlflow.db)}" \
	$(BIN)/mlflow models serve -m "models:/multitask-cnn@$(or $(ALIAS),candidate)" --env-manager local -h 127.0.0.1 -p 5001

promote: install  ## point an alias of the registered model at a version: make promote VERSION=3 [ALIAS=champion]
	$(BIN)/python scripts/promote_model.py --version $(VERSION) --alias $(or $(ALIAS),champion)

team-server: install  ## a team MLflow server on http://127.0.0.1:5002 (PostgreSQL store, artifacts in .team_server/) for `kedro run --env team`
	bash scripts/team_server.sh start

team-server-stop:  ## stop the team MLflow server and its PostgreSQL (runs kept in .team_server/)
	bash scripts/team_server.sh stop

ui: install  ## browse runs in the MLflow UI (http://127.0.0.1:5000); ARGS="--env smoke"
	@echo "MLflow UI: http://127.0.0.1:5000/#/experiments?workflowType=machine_learning (its Model training view)"
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/kedro mlflow ui $(ARGS)

dag: install  ## the pipeline pictured: kedro-viz's flowchart as docs/pipeline.png (needs Chromium)
	$(BIN)/kedro viz build
	$(BIN)/python scripts/pipeline_image.py docs/pipeline.png

notebook: install  ## execute notebooks/finished_run.ipynb on the last run (KEDRO_ENV=smoke make notebook: the smoke run)
	$(BIN)/python scripts/run_notebook.py notebooks/finished_run.ipynb --output data/08_reporting/finished_run$(if $(KEDRO_ENV),_$(KEDRO_ENV)).ipynb

$(AIRFLOW_BIN)/.installed: requirements-airflow.lock pyproject.toml
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_BIN)/pip install --quiet --disable-pip-version-check -r requirements-airflow.lock
	$(AIRFLOW_BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

airflow: $(AIRFLOW_BIN)/.installed  ## Airflow 3 + kedro-airflow in their own venv (.venv-airflow)

airflow-dag: airflow  ## generate the Airflow DAG into deploy/airflow/dags (KEDRO_ENV=smoke: the smoke DAG)
	$(AIRFLOW_BIN)/kedro airflow create --group-by memory --jinja-file deploy/airflow/dag_template.j2 \
		--target-dir $(AIRFLOW_DAGS) --env $(or $(KEDRO_ENV),local) --params project_path=$(CURDIR)

airflow-test: airflow-dag data  ## one DAG run now, in this shell (airflow dags test); KEDRO_ENV=smoke for the smoke DAG
	$(AIRFLOW_ENV) airflow db migrate > /dev/null
	$(AIRFLOW_ENV) airflow dags test $(AIRFLOW_DAG_ID)

airflow-ui: airflow-dag  ## Airflow's scheduler and UI on http://127.0.0.1:8080, nothing beyond loopback
	$(AIRFLOW_ENV) bash scripts/airflow_local.sh

clean:  ## remove generated data (keeps raw data, the MLflow store and the venv)
	find data -mindepth 2 -not -path 'data/01_raw/*' -not -name .gitkeep -delete
