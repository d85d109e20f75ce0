"""``dwa``: Dynamic Weight Average.

Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019.
Wraps ``torchjd.scalarization.DWA``: a task's weight grows when its epoch-average loss
fell more slowly than the others' over the last two epochs; the weights sum to the
number of tasks (uniform for the first two epochs).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchjd.scalarization import DWA

from multitask_cnn.tasks import TaskSpec

from .base import WEIGHTINGS
from .scalarizer import ScalarizerStrategy


@WEIGHTINGS.register("dwa")
class DynamicWeightAverage(ScalarizerStrategy):
    def __init__(self, tasks: Mapping[str, TaskSpec], temperature: float = 2.0) -> None:
        super().__init__(tasks)
        self.scalarizer = DWA(temperature=temperature)

    def on_epoch_end(self, epoch: int) -> None:
        self.scalarizer.step()  # roll the epoch-average history

    def state_dict(self) -> dict[str, Any]:
        dwa = self.scalarizer
        loss_sum = None if dwa._loss_sum is None else dwa._loss_sum.cpu()
        return super().state_dict() | {
            "previous_averages": [a.cpu() for a in dwa._previous_averages],
            "loss_sum": loss_sum, "n_batches": dwa._n_batches}  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        dwa = self.scalarizer
        dwa._previous_averages = [a.to(self.device) for a in state["previous_averages"]]
        loss_sum = state["loss_sum"]
        dwa._loss_sum = None if loss_sum is None else loss_sum.to(self.device)
        dwa._n_batches = state["n_batches"]
