"""Wiring of the ``baselines`` pipeline: one namespaced branch per task, ``stl.<task>``,
all from one template, then the nodes that gather what they wrote."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kedro.pipeline import Node, Pipeline

from .nodes import (
    collect_baselines,
    collect_histories,
    summarise_baselines,
    train_baseline,
)

# what every branch reads under its own name (the rest is the branch's: stl.<task>.*)
SHARED_INPUTS = {
    "model_input_train",
    "model_input_val",
    "normalisation_stats",
    "provenance",
    "initial_state",
}
SHARED_PARAMETERS = {"tasks", "model", "training", "transfer"}  # the run's own


class _OfTask:
    """``train_baseline`` bound to one task: picklable (a runner that starts processes
    can ship it, unlike a closure) and with ``__annotations__`` (Kedro reads a node
    function's type hints, which a ``partial`` lacks)."""

    def __init__(self, task: str) -> None:
        self.task = task
        self.__name__ = self.__qualname__ = "train_baseline"
        self.__annotations__: dict[str, Any] = {}

    def __call__(self, *inputs: Any) -> Any:
        return train_baseline(self.task, *inputs)

    def __repr__(self) -> str:
        return f"train_baseline[{self.task}]"


def baseline_template(task: str) -> Pipeline:
    """The single-task branch of ``task``, before namespacing: it reads its previous
    checkpoint (reused when its inputs are unchanged) and its progress file, and
    writes its checkpoint and history."""
    return Pipeline(
        [
            Node(
                _OfTask(task),
                inputs=[
                    "model_input_train",
                    "model_input_val",
                    "normalisation_stats",
                    "params:tasks",
                    "params:model",
                    "params:training",
                    "previous_baseline",
                    "provenance",
                    "initial_state",
                    "params:transfer",
                    "baseline_progress",
                ],
                outputs=["baseline_checkpoint", "baseline_history"],
                name="train_baseline",
            ),
        ]  # fmt: skip
    )


def create_pipeline(tasks: Iterable[str] = (), **kwargs) -> Pipeline:
    """One branch per task of ``tasks`` (the registry passes the run's task names:
    ``pipeline_registry.task_names``)."""
    tasks = list(tasks)
    branches = [
        Pipeline(
            baseline_template(task),
            namespace=f"stl.{task}",
            inputs=SHARED_INPUTS,
            parameters=SHARED_PARAMETERS,
        )
        for task in tasks
    ]
    return Pipeline(
        [
            *branches,
            Node(
                collect_baselines,
                {task: f"stl.{task}.baseline_checkpoint" for task in tasks} or None,
                "baseline_checkpoints",  # what evaluation and insight compare with
                name="collect_baselines",
                namespace="stl",  # beside the branches: stl.collect_baselines
            ),
            Node(
                collect_histories,
                {task: f"stl.{task}.baseline_history" for task in tasks} or None,
                "baseline_history",
                name="collect_baseline_histories",
                namespace="stl",  # beside the branches: stl.collect_baseline_histories
            ),
            Node(
                summarise_baselines,
                "baseline_checkpoints",
                "baseline_training_metrics",
                name="summarise_baselines",
                namespace="stl",  # beside the branches: stl.summarise_baselines
            ),
        ]  # fmt: skip
    )
