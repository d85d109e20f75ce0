"""Wiring of the ``insight`` pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    assess_generalisation,
    assess_robustness,
    assess_saliency,
    assess_sharing,
    report_insight,
)

MODELS = ["multitask_checkpoint", "baseline_checkpoints"]
SETTINGS = ["params:tasks", "params:evaluation", "params:insight"]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(assess_sharing, [*MODELS, "model_input_test", "normalisation_stats",
                                  *SETTINGS], "sharing", name="assess_sharing"),
            Node(assess_saliency, [*MODELS, "model_input_test", "normalisation_stats",
                                   *SETTINGS], "saliency", name="assess_saliency"),
            Node(assess_robustness,
                 [*MODELS, "model_input_test", "normalisation_stats", *SETTINGS],
                 "robustness", name="assess_robustness"),
            Node(assess_generalisation,
                 [*MODELS, "model_input_train", "model_input_val", "model_input_test",
                  "normalisation_stats", "fashion_mnist", "params:data_prep", *SETTINGS],
                 "generalisation", name="assess_generalisation"),
            Node(report_insight,
                 ["sharing", "saliency", "robustness", "generalisation", "params:tasks"],
                 ["insight_report", "insight_table", "insight_metrics", "insight_plots"],
                 name="report_insight"),
        ]
    )  # fmt: skip
