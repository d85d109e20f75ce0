"""scikit-learn's bundled handwritten digits (``load_digits``: 1,797 images of 8×8
pixels with 17 grey levels), placed on the MultiFashion canvas so that one model can
train on both (task fusion). Bundled with scikit-learn: nothing is downloaded."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from multitask_cnn.seeds import numpy_generator

from .multifashion import split_pool

__all__ = ["CLASSES", "digits_on_canvas", "split_digits"]

CLASSES = tuple(str(d) for d in range(10))


def digits_on_canvas(
    images: np.ndarray, canvas_size: int, item_size: int
) -> np.ndarray:
    """``images`` (N, 8, 8) with values 0..16, resized (bilinear) to ``item_size`` and
    centred on a black ``canvas_size`` square: uint8 (N, canvas_size, canvas_size)."""
    if item_size > canvas_size:
        raise ValueError(
            f"digits item_size={item_size} does not fit the canvas ({canvas_size})"
        )
    pixels = torch.from_numpy(np.asarray(images, dtype=np.float32) / 16.0).unsqueeze(1)
    resized = F.interpolate(pixels, size=(item_size, item_size), mode="bilinear",
                            align_corners=False).squeeze(1)  # fmt: skip
    items = (resized.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    canvas = np.zeros((len(items), canvas_size, canvas_size), dtype=np.uint8)
    top = (canvas_size - item_size) // 2
    canvas[:, top : top + item_size, top : top + item_size] = items
    return canvas


def split_digits(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    canvas_size: int,
    item_size: int,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> dict[str, dict[str, Any]]:
    """Stratified, seeded train / val / test splits (each image in exactly one) of the
    digits on the canvas, with the label ``digit``."""
    labels = np.asarray(labels, dtype=np.int64)
    rest, test = split_pool(labels, test_fraction, numpy_generator(seed, "digits_test"))
    train, val = split_pool(
        labels[rest], val_fraction, numpy_generator(seed, "digits_val")
    )
    canvas = digits_on_canvas(images, canvas_size, item_size)
    rows = {"train": rest[train], "val": rest[val], "test": test}
    return {
        split: {"images": canvas[index], "labels": {"digit": labels[index]}}
        for split, index in rows.items()
    }
