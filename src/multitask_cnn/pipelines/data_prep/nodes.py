"""Nodes of the ``data_prep`` pipeline."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from multitask_cnn.config import DataPrepConfig, parse
from multitask_cnn.data.fashion_mnist import FashionMNIST
from multitask_cnn.data.multifashion import (
    compose_multifashion,
    derived_labels,
    hide_labels,
    train_val_pools,
)
from multitask_cnn.data.sources import SOURCES
from multitask_cnn.data.tensors import to_model_input
from multitask_cnn.seeds import numpy_generator

logger = logging.getLogger(__name__)

# split -> {"images": uint8 (N, H, W), "labels": {label: int64 / float32 (N,)},
#           "source_index": int64 (N, 2), the left and right item's index into the
#           official split's images (train and val: official train; test: official test)}
RawSplits = dict[str, dict[str, Any]]


def _compose(
    images: np.ndarray,
    labels: np.ndarray,
    n: int,
    config: DataPrepConfig,
    purpose: str,
    pool: np.ndarray | None = None,
) -> dict[str, Any]:
    """One split of ``n`` composites from ``images[pool]``, drawn from ``purpose``'s
    stream, with every MultiFashion label; in train and val, ``missing_labels`` of
    them are marked missing (their own stream)."""
    canvas, items, source_index = compose_multifashion(
        images, labels, n, numpy_generator(config.seed, purpose),
        config.canvas_size, config.max_shift, pool=pool,
    )  # fmt: skip
    all_labels = items | derived_labels(canvas, items)
    if purpose != "test_composites":
        for name, fraction in config.missing_labels.items():  # one stream per label
            rng = numpy_generator(config.seed, f"missing_labels:{purpose}:{name}")
            all_labels = hide_labels(all_labels, {name: fraction}, rng)
    return {"images": canvas, "labels": all_labels, "source_index": source_index}


def compose_splits(fashion_mnist: FashionMNIST, data_prep: dict[str, Any]) -> RawSplits:
    """Compose MultiFashion train/val/test; train and val share no source image.

    The official train images are split, stratified by class, into a train pool and
    a held-out val pool (``val_fraction`` of each class); train composites use only
    the train pool, val composites only the val pool, test composites only the
    official test images. Each purpose draws from its own random stream
    (:func:`multitask_cnn.seeds.numpy_generator`), so e.g. ``n_test`` never moves
    the train or val data.
    """
    config = parse(DataPrepConfig, data_prep, "data_prep")
    n_val = int(round(config.val_fraction * config.n_train))
    if n_val < 1 or n_val >= config.n_train:
        raise ValueError(
            f"data_prep.val_fraction={config.val_fraction} leaves no train or no val "
            f"samples out of n_train={config.n_train}"
        )
    logger.info("Composing MultiFashion from %s", fashion_mnist.source)
    train_pool, val_pool = train_val_pools(
        fashion_mnist.train_labels, config.val_fraction, config.seed
    )
    train_images, train_labels = fashion_mnist.train_images, fashion_mnist.train_labels
    test_images, test_labels = fashion_mnist.test_images, fashion_mnist.test_labels
    splits = {
        "train": _compose(train_images, train_labels, config.n_train - n_val,
                          config, "train_composites", train_pool),
        "val": _compose(train_images, train_labels, n_val, config, "val_composites", val_pool),
        "test": _compose(test_images, test_labels, config.n_test, config, "test_composites"),
    }  # fmt: skip
    sizes = {s: len(d["images"]) for s, d in splits.items()}
    pools = {"train": len(train_pool), "val": len(val_pool)}
    logger.info(
        "MultiFashion sizes: %s; official train images per pool: %s", sizes, pools
    )
    return splits


def compute_normalisation(splits: RawSplits) -> dict[str, float]:
    """Pixel mean and std (of images scaled to [0, 1]) over the **train split only**."""
    train = splits["train"]["images"]
    pixels = train.reshape(-1).astype(np.float64) / 255.0
    mean, std = float(pixels.mean()), float(pixels.std())
    if std == 0:
        raise ValueError("train images are constant; cannot normalise")
    return {
        "mean": mean,
        "std": std,
        "computed_on": "train",
        "n_images": int(len(train)),
    }


def build_model_input(
    splits: RawSplits, stats: dict[str, float]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Normalised float32 images ``(N, 1, H, W)`` and int64 labels per split.

    Only ``images`` and ``labels`` go into the model input; ``source_index`` stays in
    the raw splits.
    """
    return tuple(
        to_model_input(splits[s]["images"], splits[s]["labels"], stats)
        for s in ("train", "val", "test")
    )


def report_class_balance(splits: RawSplits) -> pd.DataFrame:
    """Per split and class label: count and fraction of each class, and of missing
    labels (``class_id`` -1); real-valued labels report their labelled count only."""
    info = SOURCES.get("multifashion").labels
    rows = []
    for split, data in splits.items():
        for name, labels in data["labels"].items():
            n_classes, names = info[name].n_classes, info[name].class_names
            if n_classes is None:
                labelled = int(np.isfinite(labels).sum())
                counts = {"labelled": labelled, "missing": len(labels) - labelled}
            else:
                found = np.bincount(labels[labels >= 0], minlength=n_classes)
                counts = {
                    names[c] if names else str(c): int(k) for c, k in enumerate(found)
                }
                counts["missing"] = int((labels < 0).sum())
            for class_id, (class_name, count) in enumerate(counts.items()):
                rows.append({
                    "split": split, "label": name,
                    "class_id": -1 if class_name == "missing" else class_id,
                    "class_name": class_name, "count": count,
                    "fraction": float(count / max(len(labels), 1)),
                })  # fmt: skip
    return pd.DataFrame(rows)
