"""Loss balancing strategies, chosen by name (``training.weighting``).

A strategy turns the per-task losses of one step into the loss to back-propagate and
reports the task weights it used (logged every epoch as ``weight.<task>``). Its state
goes into the :class:`~multitask_cnn.training.TrainState` (``state_dict``), so that a
strategy that adapts its weights resumes where it stopped. Gradient-aggregation
methods (MGDA, PCGrad, ...) will come from TorchJD behind this same interface.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from multitask_cnn.registry import Registry
from multitask_cnn.tasks import TaskSpec

__all__ = ["WEIGHTINGS", "Weighting", "get_weighting"]


class Weighting:
    """Base class: a fixed weight per task; subclasses may adapt the weights."""

    def __init__(self, tasks: Mapping[str, TaskSpec]) -> None:
        self.weights = {task: 1.0 for task in tasks}

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.weights[task] * loss for task, loss in losses.items())

    def on_epoch_end(self, epoch: int, train_losses: Mapping[str, float]) -> None:
        """Hook for strategies that update their weights between epochs."""

    def state_dict(self) -> dict[str, Any]:
        return {"weights": dict(self.weights)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if set(state["weights"]) != set(self.weights):
            raise ValueError(
                f"weighting state is for tasks {sorted(state['weights'])}, "
                f"not {sorted(self.weights)}"
            )
        self.weights = dict(state["weights"])


WEIGHTINGS: Registry[type[Weighting]] = Registry("weighting")


@WEIGHTINGS.register("equal")
class EqualWeighting(Weighting):
    """Every task weighs 1: the loss is the plain sum of task losses."""


@WEIGHTINGS.register("static")
class StaticWeighting(Weighting):
    """Each task weighs its ``loss_weight`` from the task spec."""

    def __init__(self, tasks: Mapping[str, TaskSpec]) -> None:
        super().__init__(tasks)
        self.weights = {task: spec.loss_weight for task, spec in tasks.items()}


def get_weighting(name: str, tasks: Mapping[str, TaskSpec]) -> Weighting:
    return WEIGHTINGS.get(name)(tasks)
