"""Optimizers, chosen by name (``training.optimizer``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from multitask_cnn.registry import Registry

__all__ = ["OPTIMIZERS", "build_optimizer"]

OptimizerFactory = Callable[..., torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")


@OPTIMIZERS.register("adam")
def adam(
    params, *, lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    """Adam with L2 weight decay (added to the gradient)."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


@OPTIMIZERS.register("adamw")
def adamw(
    params, *, lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    """AdamW: decoupled weight decay (Loshchilov & Hutter 2019)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


@OPTIMIZERS.register("sgd")
def sgd(
    params, *, lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    """SGD with (heavy-ball) momentum and L2 weight decay."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def build_optimizer(
    name: str,
    params: Iterable[torch.nn.Parameter],
    *,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """Build the optimizer ``name``; call it after the model is on its device."""
    return OPTIMIZERS.get(name)(
        params, lr=lr, weight_decay=weight_decay, momentum=momentum
    )
