"""Mixed precision and memory format for training (``training.precision``,
``training.channels_last``, ``training.cudnn_benchmark``).

The shared trunk and the heads run under :func:`torch.autocast` in bf16 or fp16; the
features a strategy sees, the task outputs and the losses are float32 (the heads cast
their inputs themselves), so every loss-balancing strategy gets the numbers it would
get in fp32, only computed faster. fp16 needs a gradient scaler against underflow: it
scales the one scalar a loss-level strategy back-propagates. Gradient-level strategies
(TorchJD's aggregators) and GradNorm take the tasks' gradients apart, which a single
scale factor would distort, so fp16 refuses them before training (bf16 has fp32's
range and needs no scaler: it works with all of them).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Literal

import torch

from multitask_cnn.errors import UserError

__all__ = [
    "FP32",
    "PRECISIONS",
    "Precision",
    "PrecisionError",
    "fp16_refusal",
    "resolve_channels_last",
    "resolve_precision",
]

logger = logging.getLogger(__name__)

PRECISIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
PrecisionName = Literal["auto", "fp32", "bf16", "fp16"]


class PrecisionError(UserError, ValueError):
    """A precision that the training cannot run in (fp16 with some strategies)."""


def fp16_refusal(weighting: str, level: str) -> str | None:
    """Why ``weighting`` (a strategy of ``level`` "loss" or "gradient") cannot train in
    fp16, or None when it can."""
    if level == "gradient" or weighting == "gradnorm":
        return (
            f"training.precision fp16 cannot be combined with training.weighting "
            f"{weighting!r}: it takes the tasks' gradients apart, and fp16's gradient "
            "scaler would distort them; use bf16 (same speed on GPUs that have it, no "
            "scaler) or fp32"
        )
    return None


@dataclass(frozen=True)
class Precision:
    """The precision a training runs in, resolved for its device."""

    name: str  # fp32 | bf16 | fp16
    device_type: str

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.name]

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward pass's context: autocast to bf16 / fp16, nothing for fp32."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler | None:
        """A gradient scaler for fp16 (None otherwise)."""
        return torch.amp.GradScaler(self.device_type) if self.name == "fp16" else None


FP32 = Precision("fp32", "cpu")  # no autocast, no scaler: the plain path on any device


def resolve_precision(
    name: str, device: torch.device, weighting: str = "equal", level: str = "loss"
) -> Precision:
    """``auto``: bf16 on a CUDA device that supports it, else fp16 there (fp32 when the
    strategy cannot take fp16); fp32 elsewhere (the CPU's bf16 is rarely faster).
    An explicit bf16 / fp16 is used on any device (CPU autocast has both)."""
    if name == "auto":
        name = "fp32"
        if device.type == "cuda":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            if name == "fp16" and fp16_refusal(weighting, level):
                logger.info("training.precision auto: fp32, as %r cannot take fp16 "
                            "and this GPU has no bf16", weighting)  # fmt: skip
                name = "fp32"
    if name not in PRECISIONS:
        raise PrecisionError(
            f"unknown training.precision {name!r}; choose from auto, {', '.join(PRECISIONS)}"
        )
    if name == "fp16" and (why := fp16_refusal(weighting, level)):
        raise PrecisionError(why)
    return Precision(name, device.type)


def resolve_channels_last(
    setting: bool | Literal["auto"], device: torch.device
) -> bool:
    """``auto``: channels-last on CUDA (faster convolutions there), not elsewhere."""
    return device.type == "cuda" if setting == "auto" else bool(setting)
