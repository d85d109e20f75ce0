"""The strategy interface: a loss-balancing method owns the backward step.

Loss-level methods turn the task losses into one scalar and back-propagate it;
gradient-level methods back-propagate each task's loss to the shared features, then
aggregate the tasks' gradients on the shared parameters themselves. Both sit behind
``training.weighting`` and the same loop. A strategy may have learnable parameters
(:meth:`Strategy.parameters`: they join the optimizer) and state between steps or
epochs (:meth:`Strategy.state_dict`: saved in the train state).

Every strategy returns, each step, the weight it gave each task: for loss-level
methods the derivative of the objective with respect to each task loss (the weight
that task's gradient gets), for gradient-level methods the aggregator's weights. The
loop averages them over the epoch and logs them as ``weight.<task>``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from multitask_cnn.registry import Registry
from multitask_cnn.tasks import TaskSpec

__all__ = [
    "WEIGHTINGS",
    "LossStrategy",
    "Step",
    "Strategy",
    "get_weighting",
    "plain_backward",
]


@dataclass
class Step:
    """What one training step hands the strategy."""

    losses: dict[str, torch.Tensor]  # task -> scalar loss (mean over labelled rows)
    # the shared trunk's output, inside the graph; None where no one tensor separates
    # the shared parameters from the tasks' own (soft sharing, models/soft.py)
    features: torch.Tensor | None
    shared_params: list[nn.Parameter]  # parameters every task's loss depends on
    last_shared: list[nn.Parameter]  # the last shared layer's (GradNorm measures there)
    labelled: dict[str, torch.Tensor] | None = (
        None  # task -> labelled rows in the batch
    )
    shared_frozen: bool = False  # the model shares parameters, all frozen just now
    # fp16's gradient scaler (GradScaler.scale), applied to the one scalar a loss-level
    # strategy back-propagates (precision.py); None: no scaling
    scale: Callable[[torch.Tensor], torch.Tensor] | None = None
    # the trained parameters not in shared_params (each task's own)
    task_params: list[nn.Parameter] | None = None

    def backward_scalar(self, scalar: torch.Tensor) -> None:
        """Back-propagate ``scalar``, scaled when the step says so."""
        (scalar if self.scale is None else self.scale(scalar)).backward()


def plain_backward(
    step: Step, tasks: list[str], weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Back-propagate the weighted sum of the task losses (weights default to 1) and
    return the weights: what a gradient-level method reduces to when no shared
    parameter takes a gradient (all frozen), since the tasks then cannot conflict."""
    values = torch.stack([step.losses[task] for task in tasks])
    if weights is None:
        weights = torch.ones_like(values.detach())
    step.backward_scalar((weights * values).sum())
    return weights.detach().clone()


class Strategy:
    """Base class of the loss-balancing strategies."""

    level: ClassVar[str] = "loss"  # "loss" or "gradient"
    needs_shared: ClassVar[bool] = (
        False  # needs shared parameters (model.shared_stages >= 1)
    )
    needs_losses_after_step: ClassVar[bool] = False  # FAMO: losses again after the step

    def __init__(self, tasks: Mapping[str, TaskSpec]) -> None:
        self.tasks = list(tasks)
        self.device = torch.device("cpu")

    def parameters(self) -> list[nn.Parameter]:
        """Learnable parameters the optimizer should update (none by default)."""
        return []

    def to(self, device: torch.device) -> Strategy:
        self.device = torch.device(device)
        return self

    def backward(self, step: Step) -> torch.Tensor:
        """Put gradients into ``.grad``; return the task weights ``(T,)``, detached."""
        raise NotImplementedError

    def after_optimizer_step(self) -> None:
        """Called right after ``optimizer.step()`` (GradNorm renormalises its weights)."""

    def after_step(self, losses: Mapping[str, torch.Tensor]) -> None:
        """The same batch's losses after the optimizer step (if ``needs_losses_after_step``)."""

    def on_epoch_end(self, epoch: int) -> None:
        """Hook for strategies that update their state between epochs."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            raise ValueError(
                f"{type(self).__name__} keeps no state, got {sorted(state)}"
            )

    def _stack(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([losses[task] for task in self.tasks])  # (T,)


class LossStrategy(Strategy):
    """A loss-level method: :meth:`objective` turns the task losses ``(T,)`` into the
    scalar to back-propagate; the weights are its derivative by each loss.

    A task without a labelled row in the batch has no loss there; the objective sees
    that task's last labelled loss as a constant instead (no gradient, and no 0 that
    would distort an adaptive method's state: UW's variances, DWA's averages, FAMO's
    normaliser)."""

    def objective(self, values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _fill_unlabelled(self, values: torch.Tensor, step: Step) -> torch.Tensor:
        last = getattr(self, "_last_values", None)
        if last is None:
            last = torch.ones_like(values.detach())
        if step.labelled is None:
            self._last_values = values.detach()
            return values
        labelled = torch.stack([step.labelled[t] for t in self.tasks]) > 0
        self._last_values = torch.where(labelled, values.detach(), last)
        return torch.where(labelled, values, last)

    def state_dict(self) -> dict[str, Any]:
        last = getattr(self, "_last_values", None)
        return {"last_values": None if last is None else last.cpu()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        last = state.get("last_values")
        self._last_values = None if last is None else last.to(self.device)

    def backward(self, step: Step) -> torch.Tensor:
        values = self._fill_unlabelled(self._stack(step.losses), step)
        objective = self.objective(values)
        (weights,) = torch.autograd.grad(objective, values, retain_graph=True)
        step.backward_scalar(objective)
        return weights.detach()


WEIGHTINGS: Registry[type[Strategy]] = Registry("weighting")


def get_weighting(name: str, tasks: Mapping[str, TaskSpec], **options: Any) -> Strategy:
    """Build the strategy registered as ``name`` with its ``options``
    (``training.weighting_args``)."""
    cls = WEIGHTINGS.get(name)
    try:
        return cls(tasks, **options)
    except TypeError as error:
        raise TypeError(f"training.weighting_args for {name!r}: {error}") from None
