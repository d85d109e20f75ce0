"""Live MLflow logging from inside long nodes (the documented exception to
"tracking lives in kedro-mlflow and hooks"): per-epoch curves while training runs.

Does nothing when no MLflow run is active, so nodes stay runnable without tracking.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import mlflow


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
