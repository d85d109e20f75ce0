"""Gradient-aggregation strategies, all from TorchJD (``torchjd.aggregation``).

Each task's loss is back-propagated to the shared features
(``torchjd.autojac.mtl_backward``): task-specific parameters get their own gradients,
the shared parameters a Jacobian (one row per task), which the aggregator turns into
one update (``torchjd.autojac.jac_to_grad``). The task weights the aggregator used are
logged; GradDrop and ConFIG combine gradients without task weights, so they log none.

| name | method |
|---|---|
| ``upgrad`` | UPGrad: Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024 |
| ``mgda`` | Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018 |
| ``pcgrad`` | Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020 |
| ``cagrad`` | Liu et al., "Conflict-Averse Gradient Descent for Multi-task Learning", NeurIPS 2021 (``c`` = 0.4) |
| ``nash_mtl`` | Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022 |
| ``imtl_g`` | Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021 |
| ``graddrop`` | Chen et al., "Just Pick a Sign: Optimizing Deep Multitask Models with Gradient Sign Dropout", NeurIPS 2020 |
| ``aligned_mtl`` | Senushkin et al., "Independent Component Alignment for Multi-Task Learning", CVPR 2023 |
| ``dualproj`` | Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning", NeurIPS 2017 |
| ``config`` | Xiao et al., "ConFIG: Towards Conflict-free Training of Physics Informed Neural Networks", ICLR 2025 |
| ``fairgrad`` | Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024 (``alpha`` = 1) |
| ``gradvac`` | Wang et al., "Gradient Vaccine: Investigating and Improving Multi-task Optimization in Massively Multilingual Models", ICLR 2021 |
| ``excess_mtl`` | He et al., "Robust Multi-Task Learning with Excess Risks", ICML 2024 |
| ``mean`` | the mean of the task gradients (the Jacobian-descent form of ``equal`` / T) |
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torchjd import aggregation
from torchjd.autojac import jac_to_grad, mtl_backward

from multitask_cnn.tasks import TaskSpec

from .base import WEIGHTINGS, Step, Strategy, plain_backward

__all__ = ["AGGREGATORS", "AggregatorStrategy"]


class AggregatorStrategy(Strategy):
    """Back-propagates with TorchJD and aggregates the shared parameters' Jacobian."""

    level = "gradient"
    needs_shared = True
    make: Callable[..., aggregation.Aggregator]

    def __init__(self, tasks: Mapping[str, TaskSpec], **options: Any) -> None:
        super().__init__(tasks)
        self.aggregator = type(self).make(len(self.tasks), **options)

    def backward(self, step: Step) -> torch.Tensor:
        if not step.shared_params:
            if step.shared_frozen:  # transfer.freeze_epochs: the tasks cannot conflict
                return plain_backward(step, self.tasks)
            raise ValueError(
                f"{type(self).__name__} aggregates the gradients of shared parameters, "
                "but the model shares none (model.shared_stages: 0)"
            )
        mtl_backward([step.losses[t] for t in self.tasks], features=step.features,
                     shared_params=step.shared_params)  # fmt: skip
        with (
            warnings.catch_warnings()
        ):  # cvxpy (Nash-MTL): a solver-speed note, every step
            warnings.filterwarnings("ignore", "You are solving a parameterized problem")
            weights = jac_to_grad(step.shared_params, self.aggregator)
        if weights is None:  # GradDrop, ConFIG: no task weights
            return torch.full(
                (len(self.tasks),), float("nan"), device=step.features.device
            )
        return weights.detach()

    def state_dict(self) -> dict[str, Any]:
        # Nash-MTL, GradVac and ExcessMTL keep state between steps inside TorchJD
        # (no public way to save it): after a resume they start it afresh.
        return {}


# name -> factory(n_tasks, **options); the defaults are the papers' (or TorchJD's)
AGGREGATORS: dict[str, Callable[..., aggregation.Aggregator]] = {
    "upgrad": lambda n, **o: aggregation.UPGrad(**o),
    "mgda": lambda n, **o: aggregation.MGDA(**o),
    "pcgrad": lambda n, **o: aggregation.PCGrad(**o),
    "cagrad": lambda n, c=0.4, **o: aggregation.CAGrad(c=c, **o),
    "nash_mtl": lambda n, **o: aggregation.NashMTL(n_tasks=n, **o),
    "imtl_g": lambda n, **o: aggregation.IMTLG(**o),
    "graddrop": lambda n, **o: aggregation.GradDrop(**o),
    "aligned_mtl": lambda n, **o: aggregation.AlignedMTL(**o),
    "dualproj": lambda n, **o: aggregation.DualProj(**o),
    "config": lambda n, **o: aggregation.ConFIG(**o),
    "fairgrad": lambda n, alpha=1.0, **o: aggregation.FairGrad(alpha=alpha, **o),
    "gradvac": lambda n, **o: aggregation.GradVac(**o),
    "excess_mtl": lambda n, **o: aggregation.ExcessMTL(**o),
    "mean": lambda n, **o: aggregation.Mean(**o),
}

for _name, _factory in AGGREGATORS.items():
    WEIGHTINGS.register(_name)(
        type(_name, (AggregatorStrategy,), {"make": staticmethod(_factory)})
    )
