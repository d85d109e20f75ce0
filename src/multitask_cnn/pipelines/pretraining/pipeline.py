"""Wiring of the ``pretraining`` pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import build_pretraining_data, pretrain_backbone, summarise_pretraining


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                build_pretraining_data,
                inputs=[
                    "fashion_mnist",
                    "model_input_train",
                    "model_input_val",
                    "pretraining_file",
                    "normalisation_stats",
                    "params:data_prep",
                    "params:pretraining",
                ],
                outputs=["pretraining_train", "pretraining_val", "pretraining_task"],
                name="build_pretraining_data",
            ),
            Node(
                pretrain_backbone,
                inputs=[
                    "pretraining_train",
                    "pretraining_val",
                    "pretraining_task",
                    "params:model",
                    "params:training",
                    "params:pretraining",
                    "previous_pretrained",
                    "provenance",
                    "pretraining_progress",
                ],
                outputs=["pretrained_backbone", "pretraining_history"],
                name="pretrain_backbone",
            ),
            Node(
                summarise_pretraining,
                "pretrained_backbone",
                "pretraining_metrics",
                name="summarise_pretraining",
            ),
        ]  # fmt: skip
    )
