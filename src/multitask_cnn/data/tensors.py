"""Model input: uint8 images and their labels as tensors, and the pixel statistics the
batch sources normalise them with."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["image_stats", "labelled", "to_model_input"]


def _check_images(images: np.ndarray) -> None:
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(
            f"images must be uint8 of shape (N, H, W) or (N, C, H, W), got "
            f"{images.dtype} {images.shape}"
        )


def to_model_input(
    images: np.ndarray, labels: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """uint8 images ``(N, H, W)`` or ``(N, C, H, W)`` as a uint8 tensor ``(N, C, H, W)``
    (a quarter of float32's memory; normalised batch by batch when read) and the labels
    as tensors. A memory-mapped ``(N, C, H, W)`` cache stays mapped (it is saved by
    reference and read batch by batch)."""
    _check_images(images)
    if isinstance(images, np.memmap):  # a cache larger than memory stays on disk
        if images.ndim != 4:
            raise ValueError(
                f"a memory-mapped cache holds (N, C, H, W), got {images.shape}"
            )
        tensor = images
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(images))
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(1)  # (N, 1, H, W)
    return {
        "images": tensor if isinstance(tensor, np.memmap) else tensor.contiguous(),
        "labels": {
            name: torch.from_numpy(np.ascontiguousarray(y))
            for name, y in labels.items()
        },
    }


def image_stats(
    images: np.ndarray | torch.Tensor, chunk: int = 8192
) -> dict[str, float]:
    """Mean and std of the pixels of uint8 ``images`` scaled to [0, 1] (float64 sums,
    in chunks: no float copy of the whole array)."""
    images = np.asarray(images)
    _check_images(images)
    total = total_sq = 0.0
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk].astype(np.float64) / 255.0
        total += float(part.sum())
        total_sq += float(np.square(part).sum())
    n = images.size
    if n == 0:
        raise ValueError("no images to compute the normalisation from")
    mean = total / n
    std = float(np.sqrt(max(total_sq / n - mean * mean, 0.0)))
    if std == 0:
        raise ValueError("train images are constant; cannot normalise")
    return {"mean": mean, "std": std}


def labelled(values: np.ndarray) -> np.ndarray:
    """Which rows carry a label: class ids >= 0, real values that are finite."""
    values = np.asarray(values)
    return (
        np.isfinite(values) if np.issubdtype(values.dtype, np.floating) else values >= 0
    )
