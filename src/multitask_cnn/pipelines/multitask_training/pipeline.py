"""Wiring of the ``multitask_training`` pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import summarise_training, train_multitask_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                train_multitask_model,
                inputs=[
                    "model_input_train",
                    "model_input_val",
                    "normalisation_stats",
                    "params:tasks",
                    "params:model",
                    "params:training",
                    "provenance",
                    "initial_state",
                    "params:transfer",
                    "training_progress",
                ],
                outputs=["multitask_checkpoint", "training_history", "train_state"],
                name="train_multitask_model",
            ),
            Node(
                summarise_training,
                ["multitask_checkpoint", "training_history"],
                "training_metrics",
                name="summarise_training",
            ),
        ]  # fmt: skip
    )
