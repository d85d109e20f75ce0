"""Run the project from an orchestrator, one MLflow run across many Kedro sessions.

An Airflow DAG (``deploy/airflow/``) runs each group of nodes as its own task, so as
its own ``KedroSession``. ``open_mlflow_run`` creates the DAG run's MLflow run once;
``run_nodes`` runs one group with that run's id and name as runtime parameters
(``mlflow_run_id``, ``mlflow_run_name``: ``conf/base/mlflow.yml``), so kedro-mlflow
logs every task into the same run instead of one run per task.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import chdir, contextmanager
from pathlib import Path

import mlflow
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from mlflow.tracking import MlflowClient

from multitask_cnn.provenance import kedro_command

logger = logging.getLogger(__name__)


@contextmanager
def _session(
    project_path: str | Path,
    env: str | None,
    conf_source: str | None,
    runtime_params: dict | None = None,
) -> Iterator[KedroSession]:
    """A session of the project at ``project_path``, run from inside it as ``kedro run``
    is: the MLflow store (``mlflow_tracking_uri`` in settings.py) is found from the
    current directory, and an Airflow worker starts elsewhere."""
    project_path = Path(project_path).resolve()
    bootstrap_project(project_path)
    with (
        chdir(project_path),
        KedroSession.create(
            project_path=project_path,
            env=env or None,
            conf_source=conf_source or None,
            runtime_params=runtime_params,
        ) as session,
    ):
        yield session


def open_mlflow_run(
    project_path: str | Path,
    env: str | None,
    conf_source: str | None,
    run_name: str,
    tags: dict[str, str] | None = None,
) -> str:
    """Create the MLflow run that the tasks of one DAG run log into; return its id.

    Loading the context checks the parameters (a bad one fails this first task, before
    any long work) and lets kedro-mlflow set the tracking URI and experiment up.
    """
    with _session(project_path, env, conf_source) as session:
        context = session.load_context()
        experiment_name = context.mlflow.tracking.experiment.name
        experiment = mlflow.get_experiment_by_name(experiment_name)
        if experiment is None:  # kedro-mlflow creates it while setting up
            raise RuntimeError(f"MLflow experiment {experiment_name!r} was not created")
        run = MlflowClient().create_run(
            experiment.experiment_id, run_name=run_name, tags=tags or {}
        )
        tracking_uri = mlflow.get_tracking_uri()
    logger.info(
        "MLflow run %r (%s) opened in experiment %r of %s",
        run_name,
        run.info.run_id,
        experiment_name,
        tracking_uri,
    )
    return run.info.run_id


def run_nodes(
    project_path: str | Path,
    env: str | None,
    conf_source: str | None,
    pipeline_name: str,
    node_names: list[str],
    mlflow_run_id: str,
    mlflow_run_name: str,
) -> None:
    """Run ``node_names`` of ``pipeline_name`` in a session that logs into the MLflow
    run ``mlflow_run_id`` (kept under the name ``mlflow_run_name``)."""
    runtime_params = {
        "mlflow_run_id": mlflow_run_id,
        "mlflow_run_name": mlflow_run_name,
    }
    with _session(project_path, env, conf_source, runtime_params) as session:
        session.run(pipeline_names=[pipeline_name], node_names=node_names)
    # kedro-mlflow tagged the run with this task's slice of the pipeline; the DAG run
    # as a whole runs the pipeline, and that is the command that reproduces it
    client = MlflowClient()
    client.set_tag(
        mlflow_run_id,
        "kedro_command",
        kedro_command({"env": env, "pipeline_names": [pipeline_name]}),
    )
    if "node_names" in client.get_run(mlflow_run_id).data.tags:
        client.delete_tag(mlflow_run_id, "node_names")
