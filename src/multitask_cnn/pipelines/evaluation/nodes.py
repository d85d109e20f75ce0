"""Nodes of the ``evaluation`` pipeline: per-task metrics on the test split."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

from multitask_cnn.config import (
    EvaluationConfig,
    ModelConfig,
    parse,
    parse_tasks,
    source_class_names,
)
from multitask_cnn.models import build_model
from multitask_cnn.models.checkpoint import check_checkpoint, describe_checkpoint
from multitask_cnn.tasks import check_labels
from multitask_cnn.training import InMemorySource, Split, predict, resolve_device

logger = logging.getLogger(__name__)

# task -> {"y_true", "y_pred"}, labelled rows only
Predictions = dict[str, dict[str, np.ndarray]]


def predict_test(
    multitask_checkpoint: dict[str, Any],
    model_input_test: dict[str, Any],
    normalisation_stats: dict[str, Any],
    tasks: dict[str, Any],
    evaluation: dict[str, Any],
) -> Predictions:
    """Rebuild the trained model from its checkpoint (refused when it was trained for
    other tasks or on differently normalised data) and predict every task's labels."""
    config = parse(EvaluationConfig, evaluation, "evaluation")
    specs = parse_tasks(tasks)
    trained_tasks = check_checkpoint(multitask_checkpoint, specs, normalisation_stats)
    trained = parse(ModelConfig, multitask_checkpoint["config"]["model"], "model")
    model = build_model(trained_tasks, trained.backbone, backbone_args=trained.backbone_args,
                        shared_stages=trained.shared_stages)  # fmt: skip
    model.load_state_dict(multitask_checkpoint["model"], strict=True)
    device = resolve_device(config.device)
    model.to(device)
    test = Split.from_model_input(
        model_input_test, {t: s.label_name(t) for t, s in specs.items()}
    )
    check_labels(specs, test.labels, "test")
    outputs = predict(model, InMemorySource(test, config.batch_size), device)
    predictions: Predictions = {}
    for task, spec in specs.items():
        kind, target = spec.task_kind, test.labels[task]
        mask = kind.mask(target)
        predictions[task] = {
            "y_true": target[mask].numpy(),
            "y_pred": kind.predict(outputs[task])[mask].numpy(),
        }
    return predictions


def compute_task_metrics(
    predictions: Predictions,
    tasks: dict[str, Any],
    multitask_checkpoint: dict[str, Any],
) -> dict[str, Any]:
    """Per task, on labelled test rows: the kind's metrics (accuracy and macro-F1, or
    MSE and MAE) and ``n``; plus which checkpoint they describe."""
    specs = parse_tasks(tasks)
    metrics: dict[str, Any] = {}
    for task, spec in specs.items():
        y_true, y_pred = predictions[task]["y_true"], predictions[task]["y_pred"]
        metrics[task] = spec.task_kind.metrics(y_true, y_pred, spec) | {
            "n": int(len(y_true))
        }
        logger.info("test.%s: %s", task, metrics[task])
    return {"test": metrics, "checkpoint": describe_checkpoint(multitask_checkpoint)}


def plot_confusion_matrices(
    predictions: Predictions, tasks: dict[str, Any]
) -> dict[str, Figure]:
    """One confusion-matrix figure per classification task, keyed by file name.

    Figures are built without pyplot, so nothing touches the matplotlib backend.
    """
    figures = {}
    for task, spec in parse_tasks(tasks).items():
        if not spec.task_kind.is_classifier:
            continue
        names = source_class_names(spec, task)
        matrix = confusion_matrix(predictions[task]["y_true"], predictions[task]["y_pred"],
                                  labels=list(range(len(names))))  # fmt: skip
        figure = Figure(figsize=(8, 7))
        axes = figure.add_subplot()
        ConfusionMatrixDisplay(matrix, display_labels=names).plot(
            ax=axes, cmap="Blues", colorbar=False, values_format="d", xticks_rotation=45
        )
        axes.set_title(f"{task}: test confusion matrix (n={matrix.sum()})")
        figure.tight_layout()
        figures[f"confusion_matrix_{task}.png"] = figure
    return figures


def to_mlflow_metrics(task_metrics: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Flatten ``{"test": {task: {metric: v}}}`` to MLflow names ``test.task.metric``."""
    return {
        f"test.{task}.{name}": {"value": float(value), "step": 0}
        for task, values in task_metrics["test"].items()
        for name, value in values.items()
        if name != "n"
    }
