"""Wiring of the ``data_prep`` pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    build_model_input,
    compose_splits,
    compute_normalisation,
    gather_sources,
    identify_build,
    prepare_digits,
    prepare_manifest,
    report_class_balance,
)

WANTED = ["params:data_prep", "params:tasks", "params:pretraining"]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(compose_splits, ["fashion_mnist", *WANTED], "multifashion_splits",
                 name="compose_splits"),
            Node(prepare_digits, ["digits", *WANTED], "digits_splits",
                 name="prepare_digits"),
            Node(prepare_manifest, ["image_manifest", *WANTED], "manifest_splits",
                 name="prepare_manifest"),
            Node(gather_sources, ["multifashion_splits", "digits_splits", "manifest_splits"],
                 "raw_sources", name="gather_sources"),
            Node(identify_build, "raw_sources", "data_build", name="identify_build"),
            Node(compute_normalisation, ["raw_sources", "data_build"], "normalisation_stats",
                 name="compute_normalisation"),
            Node(build_model_input, ["raw_sources", "data_build"],
                 ["model_input_train", "model_input_val", "model_input_test"],
                 name="build_model_input"),
            Node(report_class_balance, ["raw_sources", "params:tasks"], "data_report",
                 name="report_class_balance"),
        ]
    )  # fmt: skip
