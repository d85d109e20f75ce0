"""``famo``: Fast Adaptive Multitask Optimization.

Liu, Liu, Jin, Stone & Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023.
Wraps ``torchjd.scalarization.FAMO``: the objective is a weighted sum of log-losses
that decreases all task losses at about the same rate, using loss values only; after
the optimizer step FAMO sees the same batch's losses again and moves its task logits
with its own internal Adam (they are not in the model's optimizer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torchjd.scalarization import FAMO

from multitask_cnn.tasks import TaskSpec

from .base import WEIGHTINGS
from .scalarizer import ScalarizerStrategy


@WEIGHTINGS.register("famo")
class Famo(ScalarizerStrategy):
    needs_losses_after_step = True

    def __init__(
        self,
        tasks: Mapping[str, TaskSpec],
        lr: float = 0.025,
        weight_decay: float = 1e-3,
    ) -> None:
        super().__init__(tasks)
        self.scalarizer = FAMO(len(self.tasks), lr=lr, weight_decay=weight_decay)

    def after_step(self, losses: Mapping[str, torch.Tensor]) -> None:
        self.scalarizer.update(self._stack(losses).detach())

    def state_dict(self) -> dict[str, Any]:
        inner = self.scalarizer._optimizer  # created lazily by the first update
        return super().state_dict() | {"adam": inner.state_dict() if inner else None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if state.get("adam") is not None:
            self.scalarizer._optimizer = torch.optim.Adam(
                [self.scalarizer._w], lr=self.scalarizer.lr,
                weight_decay=self.scalarizer.weight_decay,
            )  # fmt: skip
            self.scalarizer._optimizer.load_state_dict(state["adam"])
