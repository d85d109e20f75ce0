"""Nodes of the ``data_prep`` pipeline."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch

from multitask_cnn.config import DataPrepConfig, parse
from multitask_cnn.data.fashion_mnist import CLASSES, FashionMNIST
from multitask_cnn.data.multifashion import compose_multifashion

logger = logging.getLogger(__name__)

RawSplits = dict[str, dict[str, Any]]  # split -> {"images": uint8 (N,H,W), "labels": {task: (N,)}}


def compose_splits(fashion_mnist: FashionMNIST, data_prep: dict[str, Any]) -> RawSplits:
    """Compose MultiFashion train/val/test; val is carved from train with a fixed seed.

    Train (and val) composites use only the official train images, test composites
    only the official test images.
    """
    config = parse(DataPrepConfig, data_prep, "data_prep")
    rng = np.random.default_rng(config.seed)
    logger.info("Composing MultiFashion from %s", fashion_mnist.source)
    images, labels = compose_multifashion(
        fashion_mnist.train_images, fashion_mnist.train_labels, config.n_train, rng,
        config.canvas_size, config.max_shift,
    )  # fmt: skip
    test_images, test_labels = compose_multifashion(
        fashion_mnist.test_images, fashion_mnist.test_labels, config.n_test, rng,
        config.canvas_size, config.max_shift,
    )  # fmt: skip
    order = rng.permutation(config.n_train)
    n_val = int(round(config.val_fraction * config.n_train))
    if n_val < 1 or n_val >= config.n_train:
        raise ValueError(
            f"data_prep.val_fraction={config.val_fraction} leaves no train or no val "
            f"samples out of n_train={config.n_train}"
        )
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])

    def take(index: np.ndarray) -> dict[str, Any]:
        return {"images": images[index], "labels": {t: y[index] for t, y in labels.items()}}

    splits = {
        "train": take(train_idx),
        "val": take(val_idx),
        "test": {"images": test_images, "labels": test_labels},
    }
    logger.info("MultiFashion sizes: %s", {s: len(d["images"]) for s, d in splits.items()})
    return splits


def compute_normalisation(splits: RawSplits) -> dict[str, float]:
    """Pixel mean and std (of images scaled to [0, 1]) over the **train split only**."""
    train = splits["train"]["images"]
    pixels = train.reshape(-1).astype(np.float64) / 255.0
    mean, std = float(pixels.mean()), float(pixels.std())
    if std == 0:
        raise ValueError("train images are constant; cannot normalise")
    return {"mean": mean, "std": std, "computed_on": "train", "n_images": int(len(train))}


def _to_tensors(split: dict[str, Any], stats: dict[str, float]) -> dict[str, Any]:
    images = torch.from_numpy(split["images"]).float().div_(255.0)
    images = images.sub_(stats["mean"]).div_(stats["std"]).unsqueeze(1)  # (N, 1, H, W)
    labels = {t: torch.from_numpy(np.ascontiguousarray(y)) for t, y in split["labels"].items()}
    return {"images": images.contiguous(), "labels": labels}


def build_model_input(
    splits: RawSplits, stats: dict[str, float]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Normalised float32 images ``(N, 1, H, W)`` and int64 labels per split."""
    return tuple(_to_tensors(splits[s], stats) for s in ("train", "val", "test"))


def report_class_balance(splits: RawSplits) -> pd.DataFrame:
    """Class counts and fractions per split and task."""
    rows = []
    for split, data in splits.items():
        for task, labels in data["labels"].items():
            counts = np.bincount(labels, minlength=len(CLASSES))
            for class_id, count in enumerate(counts):
                rows.append({
                    "split": split, "task": task, "class_id": class_id,
                    "class_name": CLASSES[class_id], "count": int(count),
                    "fraction": float(count / max(len(labels), 1)),
                })  # fmt: skip
    return pd.DataFrame(rows)
