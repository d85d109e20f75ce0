"""``equal``: every task weighs 1, the loss is the plain sum of the task losses."""

from __future__ import annotations

import torch

from .base import WEIGHTINGS, LossStrategy


@WEIGHTINGS.register("equal")
class Equal(LossStrategy):
    """The plain sum of task losses (the usual multi-task baseline)."""

    def objective(self, values: torch.Tensor) -> torch.Tensor:
        return values.sum()
