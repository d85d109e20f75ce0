"""Wiring of the ``evaluation`` pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    compute_task_metrics,
    plot_confusion_matrices,
    predict_test,
    to_mlflow_metrics,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                predict_test,
                [
                    "multitask_checkpoint",
                    "model_input_test",
                    "normalisation_stats",
                    "params:tasks",
                    "params:evaluation",
                ],
                "test_predictions",
                name="predict_test",
            ),
            Node(
                compute_task_metrics,
                ["test_predictions", "params:tasks", "multitask_checkpoint"],
                "task_metrics",
                name="compute_task_metrics",
            ),
            Node(
                plot_confusion_matrices,
                ["test_predictions", "params:tasks"],
                "confusion_matrices",
                name="plot_confusion_matrices",
            ),
            Node(
                to_mlflow_metrics,
                "task_metrics",
                "test_metrics",
                name="to_mlflow_metrics",
            ),
        ]  # fmt: skip
    )
