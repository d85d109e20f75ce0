"""``uncertainty``: homoscedastic uncertainty weighting.

Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for
Scene Geometry and Semantics", CVPR 2018. Wraps ``torchjd.scalarization.UW``: each task
has a learned log-variance ``s_i``; the objective is ``sum_i (exp(-s_i) L_i + s_i) / 2``,
so a noisier task (larger loss it cannot reduce) learns a larger ``s_i`` and a lower
weight ``exp(-s_i) / 2``.
"""

from __future__ import annotations

from collections.abc import Mapping

from torchjd.scalarization import UW

from multitask_cnn.tasks import TaskSpec

from .base import WEIGHTINGS
from .scalarizer import ScalarizerStrategy


@WEIGHTINGS.register("uncertainty")
class Uncertainty(ScalarizerStrategy):
    learnable = True  # the log-variances are trained with the model

    def __init__(self, tasks: Mapping[str, TaskSpec]) -> None:
        super().__init__(tasks)
        self.scalarizer = UW(len(self.tasks))
