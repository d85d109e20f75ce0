"""Loss balancing strategies, chosen by name (``training.weighting``).

A strategy turns the per-task losses of one step into the loss to back-propagate and
reports the task weights it used (logged every epoch). Gradient-aggregation methods
(MGDA, PCGrad, ...) will come from TorchJD behind this same interface.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from multitask_cnn.config import TaskSpec

__all__ = ["WEIGHTINGS", "Weighting", "get_weighting", "register_weighting"]


class Weighting:
    """Base class: a fixed weight per task; subclasses may adapt the weights."""

    def __init__(self, tasks: Mapping[str, TaskSpec]) -> None:
        self.weights = {task: 1.0 for task in tasks}

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.weights[task] * loss for task, loss in losses.items())

    def on_epoch_end(self, epoch: int, train_losses: Mapping[str, float]) -> None:
        """Hook for strategies that update their weights between epochs."""


WEIGHTINGS: dict[str, Callable[[Mapping[str, TaskSpec]], Weighting]] = {}


def register_weighting(name: str):
    def decorator(cls):
        if name in WEIGHTINGS:
            raise ValueError(f"weighting {name!r} is already registered")
        WEIGHTINGS[name] = cls
        return cls

    return decorator


@register_weighting("equal")
class EqualWeighting(Weighting):
    """Every task weighs 1: the loss is the plain sum of task losses."""


@register_weighting("static")
class StaticWeighting(Weighting):
    """Each task weighs its ``loss_weight`` from the task spec."""

    def __init__(self, tasks: Mapping[str, TaskSpec]) -> None:
        super().__init__(tasks)
        self.weights = {task: spec.loss_weight for task, spec in tasks.items()}


def get_weighting(name: str, tasks: Mapping[str, TaskSpec]) -> Weighting:
    try:
        return WEIGHTINGS[name](tasks)
    except KeyError:
        raise KeyError(f"unknown weighting {name!r}; choose from {sorted(WEIGHTINGS)}") from None
