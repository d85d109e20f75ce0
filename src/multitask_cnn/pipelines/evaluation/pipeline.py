"""Wiring of the ``evaluation`` pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    compare_to_baselines,
    comparison_to_mlflow_metrics,
    compute_baseline_metrics,
    compute_task_metrics,
    package_model,
    plot_confusion_matrices,
    plot_report,
    predict_baselines,
    predict_test,
    report_efficiency,
    to_mlflow_metrics,
)

TEST = ["model_input_test", "normalisation_stats", "params:tasks", "params:evaluation"]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                predict_test,
                ["multitask_checkpoint", *TEST],
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
            Node(
                package_model,
                [
                    "multitask_checkpoint",
                    "model_input_test",
                    "params:tasks",
                    "params:evaluation",
                ],
                "multitask_model",
                name="package_model",
            ),  # fmt: skip
            Node(
                predict_baselines,
                ["baseline_checkpoints", *TEST],
                "baseline_predictions",
                name="predict_baselines",
            ),
            Node(
                compute_baseline_metrics,
                ["baseline_predictions", "params:tasks", "baseline_checkpoints"],
                "baseline_metrics",
                name="compute_baseline_metrics",
            ),
            Node(
                compare_to_baselines,
                ["task_metrics", "baseline_metrics", "params:tasks"],
                "comparison",
                name="compare_to_baselines",
            ),
            Node(
                comparison_to_mlflow_metrics,
                ["baseline_metrics", "comparison"],
                "comparison_metrics",
                name="comparison_to_mlflow_metrics",
            ),
            Node(
                report_efficiency,
                [
                    "multitask_checkpoint",
                    "baseline_checkpoints",
                    "comparison",
                    "model_input_test",
                    "normalisation_stats",
                    "params:tasks",
                    "params:evaluation",
                ],
                ["efficiency_report", "efficiency_table", "efficiency_metrics"],
                name="report_efficiency",
            ),
            Node(
                plot_report,
                [
                    "training_history",
                    "task_metrics",
                    "baseline_metrics",
                    "efficiency_report",
                    "params:tasks",
                ],
                "report_plots",
                name="plot_report",
            ),
        ]  # fmt: skip
    )
