"""Nodes of the ``evaluation`` pipeline: per-task metrics on the test split."""

from __future__ import annotations

import logging
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: figures are saved, never shown

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    ConfusionMatrixDisplay,
    accuracy_score,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
)

from multitask_cnn.config import EvaluationConfig, ModelConfig, parse, parse_tasks  # noqa: E402
from multitask_cnn.models import build_model  # noqa: E402
from multitask_cnn.training import TASK_KINDS, Split, predict, resolve_device  # noqa: E402

logger = logging.getLogger(__name__)

Predictions = dict[str, dict[str, np.ndarray]]  # task -> {"y_true", "y_pred"}, labelled rows only


def predict_test(
    multitask_checkpoint: dict[str, Any],
    model_input_test: dict[str, Any],
    tasks: dict[str, Any],
    evaluation: dict[str, Any],
) -> Predictions:
    """Rebuild the trained model from its checkpoint and predict every task's labels."""
    config = parse(EvaluationConfig, evaluation, "evaluation")
    specs = parse_tasks(tasks)
    trained = multitask_checkpoint["config"]
    missing = sorted(set(specs) - set(trained["tasks"]))
    if missing:
        raise ValueError(
            f"tasks {missing} are not in the checkpoint (trained on {sorted(trained['tasks'])});"
            " run multitask_training with the same `tasks` first"
        )
    model = build_model(parse(ModelConfig, trained["model"], "model"), parse_tasks(trained["tasks"]))
    model.load_state_dict(multitask_checkpoint["model"], strict=True)
    device = resolve_device(config.device)
    model.to(device)
    label_of = {task: spec.label_name(task) for task, spec in specs.items()}
    test = Split.from_model_input(model_input_test, label_of)
    outputs = predict(model, test.images, device, config.batch_size)
    predictions: Predictions = {}
    for task, spec in specs.items():
        kind, target = TASK_KINDS[spec.kind], test.labels[task]
        mask = kind.mask(target)
        predictions[task] = {
            "y_true": target[mask].numpy(),
            "y_pred": kind.predict(outputs[task])[mask].numpy(),
        }
    return predictions


def compute_task_metrics(predictions: Predictions, tasks: dict[str, Any]) -> dict[str, Any]:
    """Per task: accuracy and macro-F1 (classification) or MSE / MAE (regression)."""
    specs = parse_tasks(tasks)
    metrics: dict[str, Any] = {}
    for task, spec in specs.items():
        y_true, y_pred = predictions[task]["y_true"], predictions[task]["y_pred"]
        if spec.kind == "regression":
            values = {"mse": mean_squared_error(y_true, y_pred),
                      "mae": mean_absolute_error(y_true, y_pred)}  # fmt: skip
        else:
            classes = list(range(spec.n_classes))
            values = {
                "accuracy": accuracy_score(y_true, y_pred),
                "f1_macro": f1_score(y_true, y_pred, labels=classes, average="macro",
                                     zero_division=0),
            }  # fmt: skip
        metrics[task] = {k: float(v) for k, v in values.items()} | {"n": int(len(y_true))}
        logger.info("test.%s: %s", task, metrics[task])
    return {"test": metrics}


def plot_confusion_matrices(predictions: Predictions, tasks: dict[str, Any]) -> dict[str, Figure]:
    """One confusion-matrix figure per classification task, keyed by file name."""
    specs = parse_tasks(tasks)
    figures = {}
    for task, spec in specs.items():
        if spec.kind == "regression":
            continue
        names = spec.display_classes()
        matrix = confusion_matrix(predictions[task]["y_true"], predictions[task]["y_pred"],
                                  labels=list(range(len(names))))  # fmt: skip
        figure, axes = plt.subplots(figsize=(8, 7))
        ConfusionMatrixDisplay(matrix, display_labels=names).plot(
            ax=axes, cmap="Blues", colorbar=False, values_format="d", xticks_rotation=45
        )
        axes.set_title(f"{task}: test confusion matrix (n={matrix.sum()})")
        figure.tight_layout()
        figures[f"confusion_matrix_{task}.png"] = figure
        plt.close(figure)
    return figures


def to_mlflow_metrics(task_metrics: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Flatten ``{split: {task: {metric: v}}}`` to MLflow names ``split.task.metric``."""
    return {
        f"{split}.{task}.{name}": {"value": float(value), "step": 0}
        for split, per_task in task_metrics.items()
        for task, values in per_task.items()
        for name, value in values.items()
        if name != "n"
    }
