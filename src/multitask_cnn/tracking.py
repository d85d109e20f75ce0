"""Live MLflow logging from inside long nodes (the documented exception to
"tracking lives in kedro-mlflow and hooks"): per-epoch curves while training runs.

Does nothing when no MLflow run is active, so nodes stay runnable without tracking.
"""

from __future__ import annotations

import math
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping

import mlflow
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from multitask_cnn.errors import UserError


def log_epoch_metrics(epoch: int, record: Mapping[str, float]) -> None:
    """Log every numeric entry of ``record`` (except ``epoch``) at ``step=epoch``."""
    if mlflow.active_run() is None:
        return
    metrics = {
        key: float(value)
        for key, value in record.items()
        if key != "epoch" and isinstance(value, int | float) and math.isfinite(value)
    }
    mlflow.log_metrics(metrics, step=epoch)


def active_run_id() -> str | None:
    run = mlflow.active_run()
    return None if run is None else run.info.run_id


def note_resumed_run(
    previous_run_id: str | None, history: list[Mapping[str, float]]
) -> None:
    """This run continues the training of ``previous_run_id``: tag it so
    (``resumed_from_run_id``), give it the epochs that run finished (its curves start at
    epoch 1), and mark that run KILLED (its training did not finish) unless it
    already ended KILLED or FAILED. Nothing to do when it is this run (the tasks of an
    Airflow DAG run share one)."""
    if mlflow.active_run() is None:
        return
    if previous_run_id == active_run_id():  # the same run goes on (an Airflow retry):
        return  # it has those epochs already
    if previous_run_id:
        mlflow.set_tag("resumed_from_run_id", previous_run_id)
        client = MlflowClient()
        try:
            previous = client.get_run(previous_run_id)
        except mlflow.exceptions.MlflowException:  # another store: nothing to mark
            previous = None
        # its training did not finish, whatever the run says (a second Ctrl-C, a crash)
        if previous is not None and previous.info.status not in ("KILLED", "FAILED"):
            client.set_terminated(
                previous_run_id, RunStatus.to_string(RunStatus.KILLED)
            )
    for record in history:
        log_epoch_metrics(int(record["epoch"]), record)


def interrupted_run(run_id: str | None) -> bool:
    """Whether ``run_id`` is another run of this store than the active one that did
    not finish (killed, failed, or still marked running after a crash). False without
    an active run, or for a run this store does not have."""
    if run_id is None or mlflow.active_run() is None or run_id == active_run_id():
        return False
    try:
        status = MlflowClient().get_run(run_id).info.status
    except mlflow.exceptions.MlflowException:
        return False
    return status != RunStatus.to_string(RunStatus.FINISHED)


def final_metrics(values: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """``{name: value}`` in the form kedro-mlflow's ``MlflowMetricsHistoryDataset``
    saves: one value at step 0 per metric."""
    return {name: {"value": float(value), "step": 0} for name, value in values.items()}


def task_metric_names(
    prefix: str, per_task: Mapping[str, Mapping[str, float]]
) -> dict[str, float]:
    """``{task: {metric: v}}`` -> ``{"<prefix>.<task>.<metric>": v}``, counts (``n``) left out."""
    return {
        f"{prefix}.{task}.{name}": value
        for task, values in per_task.items()
        for name, value in values.items()
        if name != "n"
    }


class TrackingServerError(UserError, ConnectionError):
    """The MLflow tracking server the run is told to use does not answer."""


def check_tracking_server(uri: str, timeout: float = 5.0) -> None:
    """Raise :class:`TrackingServerError` when nothing answers at ``uri`` (an MLflow
    server's ``/health``) within ``timeout`` seconds. Any answer, even an HTTP error (a
    proxy asking for credentials) or a certificate this machine does not trust (MLflow
    may be told to accept it), means it is there. Credentials in the URI are neither
    sent nor shown."""
    parts = urllib.parse.urlsplit(uri)
    port = f":{parts.port}" if parts.port else ""
    where = f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path.rstrip('/')}"
    try:
        with urllib.request.urlopen(f"{where}/health", timeout=timeout):
            return
    except (urllib.error.HTTPError, ssl.SSLError):
        return
    except urllib.error.URLError as error:
        if isinstance(error.reason, ssl.SSLError):
            return
        reason = error.reason
    except OSError as error:
        reason = error
    raise TrackingServerError(
        f"the MLflow tracking server {where} does not answer ({reason}); start it, or "
        "unset MLFLOW_TRACKING_URI to use the project's SQLite store"
    )
