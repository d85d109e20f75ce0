"""Model input: uint8 images and their labels as the tensors the models train on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["to_model_input"]


def to_model_input(
    images: np.ndarray, labels: Mapping[str, np.ndarray], stats: Mapping[str, Any]
) -> dict[str, Any]:
    """uint8 images ``(N, H, W)`` or ``(N, C, H, W)`` scaled to [0, 1] and normalised
    with ``stats`` (``mean``, ``std``) into float32 ``(N, C, H, W)``; labels as tensors."""
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(
            f"images must be uint8 of shape (N, H, W) or (N, C, H, W), got "
            f"{images.dtype} {images.shape}"
        )
    tensor = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    tensor = tensor.sub_(stats["mean"]).div_(stats["std"])
    if tensor.dim() == 3:
        tensor = tensor.unsqueeze(1)  # (N, 1, H, W)
    return {
        "images": tensor.contiguous(),
        "labels": {
            name: torch.from_numpy(np.ascontiguousarray(y))
            for name, y in labels.items()
        },
    }
