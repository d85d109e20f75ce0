"""``training.compile``: ``torch.compile`` of the model the loop trains.

The trunk and the task outputs are compiled (the two calls the loop makes, and that
``forward`` chains), in place: the parameters, their names and the state dict stay the
model's own. A compiled region's backward runs once per step; a strategy that
differentiates through the model several times in one step (each task's gradient
apart: the gradient-level strategies and GradNorm; the gradient-cosine probe) cannot
use it, and is refused before training (:func:`compile_refusal`).
"""

from __future__ import annotations

import torch

from multitask_cnn.errors import UserError
from multitask_cnn.models import MultiTaskModel

__all__ = ["CompileError", "compile_model", "compile_refusal"]


class CompileError(UserError, ValueError):
    """``training.compile`` with a training it cannot serve."""


def compile_refusal(weighting: str, level: str, grad_cos_rows: int = 0) -> str | None:
    """Why a training with ``weighting`` (of ``level`` "loss" or "gradient") and the
    gradient-cosine probe on ``grad_cos_rows`` rows cannot be compiled, or None."""
    if level == "gradient" or weighting == "gradnorm":
        return (
            f"training.compile cannot be combined with training.weighting {weighting!r}: "
            "it back-propagates each task's loss through the model apart, and a "
            "compiled model's backward runs once per step; use a loss-level strategy "
            "or training.compile=false"
        )
    if grad_cos_rows:
        return (
            "training.compile cannot be combined with training.grad_cos_rows "
            f"{grad_cos_rows}: the probe back-propagates each task apart; set one of "
            "them off"
        )
    return None


def compile_model(model: MultiTaskModel, backend: str) -> None:
    """Compile ``model``'s trunk and task outputs with ``backend`` (``inductor``: C
    compiler on the CPU, Triton on a GPU), in place."""
    model.shared_features = torch.compile(model.shared_features, backend=backend)
    model.task_outputs = torch.compile(model.task_outputs, backend=backend)
