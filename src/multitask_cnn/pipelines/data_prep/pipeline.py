"""Wiring of the ``data_prep`` pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    build_model_input,
    compose_splits,
    compute_normalisation,
    report_class_balance,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                compose_splits,
                ["fashion_mnist", "params:data_prep"],
                "multifashion_splits",
                name="compose_splits",
            ),
            Node(
                compute_normalisation,
                "multifashion_splits",
                "normalisation_stats",
                name="compute_normalisation",
            ),
            Node(
                build_model_input,
                ["multifashion_splits", "normalisation_stats"],
                ["model_input_train", "model_input_val", "model_input_test"],
                name="build_model_input",
            ),
            Node(
                report_class_balance,
                "multifashion_splits",
                "data_report",
                name="report_class_balance",
            ),
        ]  # fmt: skip
    )
