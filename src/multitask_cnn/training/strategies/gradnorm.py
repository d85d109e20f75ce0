"""``gradnorm``: gradient normalisation.

Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for Adaptive
Loss Balancing in Deep Multitask Networks", ICML 2018. No well-kept library ships it
(TorchJD has no GradNorm), so it is written here.

Each task has a learnable weight ``w_i`` (they sum to the number of tasks). Every step,
on the last shared layer ``W``, ``G_i = ||grad_W (w_i L_i)||``; with ``L̃_i = L_i / L_i(0)``
and ``r_i = L̃_i / mean_j L̃_j``, the weights follow the gradient of
``sum_i |G_i - mean_j(G_j) * r_i ** alpha|`` (the target treated as a constant), so a
task that trains slower gets a larger gradient. The model follows ``sum_i w_i L_i``.
``L_i(0)`` is the task's loss in its first batch with labels; a batch where a task has
no labelled row leaves that task out of the balancing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from multitask_cnn.tasks import TaskSpec

from .base import WEIGHTINGS, Step, Strategy, plain_backward


@WEIGHTINGS.register("gradnorm")
class GradNorm(Strategy):
    needs_shared = True

    def __init__(self, tasks: Mapping[str, TaskSpec], alpha: float = 1.5) -> None:
        super().__init__(tasks)
        self.alpha = alpha
        self.weights = nn.Parameter(torch.ones(len(self.tasks)))
        self.initial_losses = torch.full((len(self.tasks),), float("nan"))  # L_i(0)

    def parameters(self) -> list[nn.Parameter]:
        return [self.weights]

    def to(self, device: torch.device) -> GradNorm:
        super().to(device)
        self.weights.data = self.weights.data.to(device)
        self.initial_losses = self.initial_losses.to(device)
        return self

    def backward(self, step: Step) -> torch.Tensor:
        if not step.last_shared:
            if (
                step.shared_frozen or step.shared_params
            ):  # the last one frozen: weights kept
                return plain_backward(step, self.tasks, self.weights.detach())
            raise ValueError(
                "gradnorm needs shared parameters (model.shared_stages >= 1)"
            )
        values = self._stack(step.losses)
        labelled = (
            torch.stack([step.labelled[t] > 0 for t in self.tasks])
            if step.labelled is not None
            else torch.ones_like(values, dtype=torch.bool)
        )
        first = labelled & torch.isnan(self.initial_losses)
        self.initial_losses = torch.where(first, values.detach(), self.initial_losses)
        active = [i for i, on in enumerate(labelled.tolist()) if on]
        (self.weights.detach() * values).sum().backward(retain_graph=len(active) > 1)
        if len(active) > 1:  # balance the tasks that have a loss in this batch
            norms = torch.stack([
                torch.cat([g.flatten() for g in torch.autograd.grad(
                    self.weights[i] * values[i], step.last_shared,
                    retain_graph=True, create_graph=True)]).norm()
                for i in active
            ])  # fmt: skip
            ratio = values.detach()[active] / self.initial_losses[active]
            target = (norms.mean() * (ratio / ratio.mean()) ** self.alpha).detach()
            (self.weights.grad,) = torch.autograd.grad(
                (norms - target).abs().sum(), self.weights
            )
        return self.weights.detach().clone()

    def after_optimizer_step(self) -> None:
        """Renormalise: positive weights summing to the number of tasks."""
        with torch.no_grad():
            self.weights.clamp_(min=1e-3)
            self.weights.mul_(len(self.tasks) / self.weights.sum())

    def state_dict(self) -> dict[str, Any]:
        return {
            "weights": self.weights.detach().cpu(),
            "initial_losses": self.initial_losses.cpu(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        with torch.no_grad():
            self.weights.copy_(state["weights"])
        self.initial_losses = state["initial_losses"].to(self.device)
