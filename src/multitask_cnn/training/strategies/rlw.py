"""``rlw``: random loss weighting.

Lin, Ye, Xu, Shi & Zhang, "Reasonable Effectiveness of Random Weighting: A Litmus Test
for Multi-Task Learning", TMLR 2022. Wraps ``torchjd.scalarization.Random``: every step
the weights are a softmax of standard normal draws (positive, summing to 1), drawn from
the training RNG, so a seed repeats them.
"""

from __future__ import annotations

from collections.abc import Mapping

from torchjd.scalarization import Random

from multitask_cnn.tasks import TaskSpec

from .base import WEIGHTINGS
from .scalarizer import ScalarizerStrategy


@WEIGHTINGS.register("rlw")
class RandomLossWeighting(ScalarizerStrategy):
    def __init__(self, tasks: Mapping[str, TaskSpec]) -> None:
        super().__init__(tasks)
        self.scalarizer = Random()
