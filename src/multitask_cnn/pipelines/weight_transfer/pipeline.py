"""Wiring of the ``weight_transfer`` pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import transfer_initial_state


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                transfer_initial_state,
                inputs=[
                    "pretrained_backbone",
                    "params:tasks",
                    "params:model",
                    "params:training",
                    "params:transfer",
                ],
                outputs=["initial_state", "transfer_report", "transfer_metrics"],
                name="transfer_initial_state",
            ),
        ]  # fmt: skip
    )
