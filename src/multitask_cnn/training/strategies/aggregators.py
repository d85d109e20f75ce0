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
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchjd import aggregation
from torchjd.autojac import backward, jac_to_grad, mtl_backward

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
        losses = [step.losses[t] for t in self.tasks]
        if step.features is not None:
            mtl_backward(
                losses, features=step.features, shared_params=step.shared_params
            )
        else:  # soft sharing: each task's Jacobian row through the whole network
            backward(
                losses, inputs=step.shared_params, retain_graph=bool(step.task_params)
            )
            if step.task_params:  # each task's own parameters: its own gradient
                torch.autograd.backward(
                    torch.stack(losses).sum(), inputs=step.task_params
                )
        with (
            warnings.catch_warnings()
        ):  # cvxpy (Nash-MTL): a solver-speed note, every step
            warnings.filterwarnings("ignore", "You are solving a parameterized problem")
            weights = jac_to_grad(step.shared_params, self.aggregator)
        if weights is None:  # GradDrop, ConFIG: no task weights
            return torch.full((len(self.tasks),), float("nan"), device=losses[0].device)
        return weights.detach()

    def state_dict(self) -> dict[str, Any]:
        kept = _KEPT.get(type(self.aggregator))
        if kept is None:
            return {}
        holder = getattr(self.aggregator, kept.holder)
        return {
            "aggregator": {name: _encode(getattr(holder, name)) for name in kept.names}
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        kept = _KEPT.get(type(self.aggregator))
        if kept is None:
            super().load_state_dict(state)  # stateless: refuses any state
            return
        saved = state["aggregator"]
        if set(saved) != set(kept.names):
            raise ValueError(
                f"{type(self.aggregator).__name__} state has {sorted(saved)}, "
                f"expected {sorted(kept.names)}"
            )
        holder = getattr(self.aggregator, kept.holder)
        for name, value in saved.items():
            setattr(holder, name, _decode(value))
        kept.restored(holder, self.device)


# TorchJD's stateful aggregators (Nash-MTL, GradVac, ExcessMTL) keep their state between
# steps in attributes of their weighting and have no state_dict (torchjd 0.18). These
# are those attributes, read from TorchJD's source; `restored` puts them on their
# device and rebuilds what derives from them. tests/training/test_strategies.py checks that a restored aggregator goes
# on exactly as the one it was saved from.
@dataclass(frozen=True)
class _Kept:
    holder: str
    names: tuple[str, ...]
    restored: Callable[[Any, torch.device], None]


def _nash_restored(weighting: Any, device: torch.device) -> None:
    if weighting.step > 0:  # the problem is built at step 0 only, from these values
        weighting._init_optim_problem()


def _gradvac_restored(weighting: Any, device: torch.device) -> None:
    phi = weighting._phi_t  # kept on the CPU by TorchJD
    weighting._state_key = None if phi is None else (phi.shape[0], phi.dtype)


def _excess_restored(weighting: Any, device: torch.device) -> None:
    for name in ("_weights", "_sq_grad_sum", "_initial_w", "_warmup_w_sum"):
        value = getattr(weighting, name)
        if value is not None:  # on the device of the Jacobian, as TorchJD keeps them
            setattr(weighting, name, value.to(device))
    sums = weighting._sq_grad_sum
    weighting._state_key = (
        None if sums is None else (*sums.shape, sums.dtype, sums.device)
    )


_KEPT: dict[type, _Kept] = {
    aggregation.NashMTL: _Kept(
        "weighting", ("step", "prvs_alpha", "normalization_factor", "init_gtg"),
        _nash_restored,
    ),
    aggregation.GradVac: _Kept("gramian_weighting", ("_phi_t",), _gradvac_restored),
    aggregation.ExcessMTL: _Kept(
        "weighting",
        ("_weights", "_sq_grad_sum", "_initial_w", "_warmup_w_sum", "_n_steps"),
        _excess_restored,
    ),
}  # fmt: skip


def _encode(value: Any) -> Any:
    """A value ``torch.load(weights_only=True)`` reads back: NumPy arrays as tensors."""
    if isinstance(value, np.ndarray):
        return {"numpy": torch.from_numpy(value.copy())}
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"numpy"}:
        return value["numpy"].numpy().copy()
    return value


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
