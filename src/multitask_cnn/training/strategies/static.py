"""``static``: each task weighs its ``loss_weight`` from the task spec."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from multitask_cnn.tasks import TaskSpec

from .base import WEIGHTINGS, LossStrategy


@WEIGHTINGS.register("static")
class Static(LossStrategy):
    """A fixed, hand-set weight per task: ``sum_i loss_weight_i * L_i``."""

    def __init__(self, tasks: Mapping[str, TaskSpec]) -> None:
        super().__init__(tasks)
        self.weights = torch.tensor([tasks[t].loss_weight for t in self.tasks])

    def objective(self, values: torch.Tensor) -> torch.Tensor:
        return (self.weights.to(values) * values).sum()
