"""Wiring of the ``baselines`` pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import summarise_baselines, train_baselines


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                train_baselines,
                inputs=[
                    "model_input_train",
                    "model_input_val",
                    "normalisation_stats",
                    "params:tasks",
                    "params:model",
                    "params:training",
                    "previous_baselines",
                    "provenance",
                    "initial_state",
                    "params:transfer",
                    "baseline_progress",
                ],
                outputs=["baseline_checkpoints", "baseline_history"],
                name="train_baselines",
            ),
            Node(
                summarise_baselines,
                "baseline_checkpoints",
                "baseline_training_metrics",
                name="summarise_baselines",
            ),
        ]  # fmt: skip
    )
