"""Nodes of the ``data_prep`` pipeline."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import pandas as pd

from multitask_cnn.config import (
    DataPrepConfig,
    PretrainingConfig,
    parse,
    parse_tasks,
    source_class_names,
)
from multitask_cnn.data.digits import split_digits
from multitask_cnn.data.fashion_mnist import FashionMNIST
from multitask_cnn.data.manifest import (
    SPLITS,
    ManifestError,
    decode_images,
    manifest_splits,
    plan_manifest,
)
from multitask_cnn.data.multifashion import (
    compose_multifashion,
    derived_labels,
    hide_labels,
    train_val_pools,
)
from multitask_cnn.data.sources import SOURCES
from multitask_cnn.data.tensors import image_stats, labelled, to_model_input
from multitask_cnn.errors import DataFileError
from multitask_cnn.io import ImageManifest
from multitask_cnn.provenance import fingerprint
from multitask_cnn.seeds import numpy_generator

logger = logging.getLogger(__name__)

# split -> {"images": uint8 (N, H, W) or (N, C, H, W), "labels": {label: int64 /
#           float32 (N,)}, and for MultiFashion "source_index": int64 (N, 2), the left
#           and right item's index into the official split's images (train and val:
#           official train; test: official test)}
RawSplits = dict[str, dict[str, Any]]
RawSources = dict[str, RawSplits]  # data source -> its splits


def needed_sources(tasks: dict[str, Any], pretraining: dict[str, Any]) -> set[str]:
    """The data sources the tasks (and a pretraining on MultiFashion) read."""
    specs = parse_tasks(tasks)
    wanted = {spec.source for spec in specs.values()}
    if parse(PretrainingConfig, pretraining, "pretraining").source == "multifashion":
        wanted.add("multifashion")
    return wanted


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


def compose_splits(
    fashion_mnist: FashionMNIST,
    data_prep: dict[str, Any],
    tasks: dict[str, Any] | None = None,
    pretraining: dict[str, Any] | None = None,
) -> RawSplits:
    """Compose MultiFashion train/val/test (nothing when ``tasks`` are given and none
    of them, nor the pretraining, reads it); train and val share no source image.

    The official train images are split, stratified by class, into a train pool and
    a held-out val pool (``val_fraction`` of each class); train composites use only
    the train pool, val composites only the val pool, test composites only the
    official test images. Each purpose draws from its own random stream
    (:func:`multitask_cnn.seeds.numpy_generator`), so e.g. ``n_test`` never moves
    the train or val data.
    """
    config = parse(DataPrepConfig, data_prep, "data_prep")
    if tasks is not None and "multifashion" not in needed_sources(
        tasks, pretraining or {}
    ):
        logger.info("No task reads MultiFashion: not composed")
        return {}
    config.check_val_share()
    n_val = config.n_val()
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


def prepare_digits(
    digits: dict[str, Any],
    data_prep: dict[str, Any],
    tasks: dict[str, Any],
    pretraining: dict[str, Any],
) -> RawSplits:
    """scikit-learn's digits on the canvas, split train / val / test (stratified,
    seeded); nothing when no task reads them."""
    if "digits" not in needed_sources(tasks, pretraining):
        return {}
    config = parse(DataPrepConfig, data_prep, "data_prep")
    splits = split_digits(
        digits["images"], digits["labels"], canvas_size=config.canvas_size,
        item_size=config.digits.item_size, val_fraction=config.val_fraction,
        test_fraction=config.digits.test_fraction, seed=config.seed,
    )  # fmt: skip
    logger.info("Digits sizes: %s", {s: len(d["images"]) for s, d in splits.items()})
    return splits


def prepare_manifest(
    image_manifest: ImageManifest | None,
    data_prep: dict[str, Any],
    tasks: dict[str, Any],
    pretraining: dict[str, Any],
) -> RawSplits:
    """Your images (the ``image_manifest`` catalog entry) for the tasks whose source
    is ``manifest``; nothing when none is. Every row is checked (columns, paths inside
    the root, files present, labels of each task's kind, splits) before any image is
    decoded; then the images are decoded in parallel, converted to
    ``data_prep.manifest.channels`` and resized to the canvas."""
    specs = {t: s for t, s in parse_tasks(tasks).items() if s.source == "manifest"}
    if not specs:
        return {}
    if image_manifest is None:
        raise ManifestError(
            f"tasks {sorted(specs)} read source 'manifest' but the image_manifest "
            'catalog entry has no file; point it at your CSV (README "Your own images")'
        )
    config = parse(DataPrepConfig, data_prep, "data_prep")
    options = config.manifest
    plan = plan_manifest(
        image_manifest.table, image_manifest.root, specs,
        image_column=options.image_column, split_column=options.split_column,
        channels=options.channels, size=config.canvas_size,
        val_fraction=config.val_fraction, test_fraction=options.test_fraction,
        seed=config.seed,
    )  # fmt: skip
    budget = options.memory_budget_mb * 2**20
    streams = plan.decoded_bytes > budget
    logger.info(
        "Manifest %s: %d images, %.1f MB decoded (budget %.0f MB): %s",
        image_manifest.filepath, len(plan.paths), plan.decoded_bytes / 2**20,
        options.memory_budget_mb,
        "streams from a memory-mapped cache" if streams else "kept in memory",
    )  # fmt: skip
    workers = options.workers or os.cpu_count() or 1

    column = options.image_column

    def in_memory(parts):
        return {split: decode_images(paths, plan.channels, plan.size, workers=workers,
                                     rows=rows, column=column)
                for split, (paths, rows) in parts.items()}  # fmt: skip

    def to_cache(parts):
        return image_manifest.decode_to_cache(parts, plan.channels, plan.size, key=plan.key(),
                                              workers=workers, column=column)  # fmt: skip

    splits = manifest_splits(plan, to_cache if streams else in_memory)
    logger.info("Manifest sizes: %s", {s: len(d["images"]) for s, d in splits.items()})
    return splits


def gather_sources(
    multifashion_splits: RawSplits, digits_splits: RawSplits, manifest_splits: RawSplits
) -> RawSources:
    """``{source: its splits}`` for the sources that were prepared."""
    found = {"multifashion": multifashion_splits, "digits": digits_splits,
             "manifest": manifest_splits}  # fmt: skip
    return {source: splits for source, splits in found.items() if splits}


def identify_build(sources: RawSources) -> str:
    """This build of the model input: a hash of every split's images and labels. Each
    model input file and the normalisation statistics carry it (``build``), so a mix
    of two builds, which a data_prep stopped part-way leaves, is refused when they are
    read together (``DataBuildHook``)."""
    return fingerprint({f"{source}/{split}": {"images": data["images"], "labels": data["labels"]}
                        for source, splits in sources.items()
                        for split, data in splits.items()})  # fmt: skip


def compute_normalisation(
    sources: RawSources, build: str | None = None
) -> dict[str, dict[str, Any]]:
    """Per source, from its **train split only**: the pixel mean and std (of images
    scaled to [0, 1]) and, per real-valued label, the mean and std of its labelled
    values (regression targets are standardised with them, and reported back in
    original units)."""
    build = build or identify_build(sources)
    stats = {}
    for source, splits in sources.items():
        train = splits["train"]
        try:
            pixels = image_stats(train["images"])
        except ValueError as error:
            raise DataFileError(f"source {source!r}: {error}") from None
        targets = {}
        for name, labels in train["labels"].items():
            if np.issubdtype(labels.dtype, np.floating):
                values = labels[labelled(labels)].astype(np.float64)
                if len(values) == 0:
                    raise DataFileError(
                        f"source {source!r}: label {name!r} has no value in the train split"
                    )
                std = float(values.std())
                targets[name] = {"mean": float(values.mean()),
                                 "std": std if std > 0 else 1.0, "n": int(len(values))}  # fmt: skip
        stats[source] = pixels | {"computed_on": "train", "n_images": int(len(train["images"])),
                                  "targets": targets, "build": build}  # fmt: skip
    return stats


def build_model_input(
    sources: RawSources, build: str | None = None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Per split, ``{source: {"images": uint8 (N, C, H, W), "labels": {...}}}``; the
    batch sources normalise the pixels with the source's statistics as they read them.

    Only ``images`` and ``labels`` go into the model input (not ``source_index``), and
    the ``build`` (:func:`identify_build`).
    """
    build = build or identify_build(sources)
    return tuple(
        {source: to_model_input(splits[s]["images"], splits[s]["labels"]) | {"build": build}
         for source, splits in sources.items()}
        for s in SPLITS
    )  # fmt: skip


def report_class_balance(sources: RawSources, tasks: dict[str, Any]) -> pd.DataFrame:
    """Per source, split and label: the count and fraction of each class and of
    missing labels (``class_id`` -1; real-valued labels: missing only), and, on every
    row, how many rows of that split carry the label (``labelled``)."""
    names = _class_names(sources, parse_tasks(tasks))
    rows = []
    for source, splits in sources.items():
        for split, data in splits.items():
            for name, labels in data["labels"].items():
                n, present = len(labels), labelled(labels)
                n_labelled = int(present.sum())
                counts: dict[str, tuple[int, int]] = {}
                if not np.issubdtype(labels.dtype, np.floating):
                    found = np.bincount(labels[present],
                                        minlength=len(names.get((source, name), ())))  # fmt: skip
                    known = names.get((source, name)) or [
                        str(c) for c in range(len(found))
                    ]
                    counts = {known[c] if c < len(known) else str(c): (c, int(k))
                              for c, k in enumerate(found)}  # fmt: skip
                counts["missing"] = (-1, n - n_labelled)
                for class_name, (class_id, count) in counts.items():
                    rows.append({
                        "source": source, "split": split, "label": name,
                        "class_id": class_id, "class_name": class_name, "count": count,
                        "fraction": float(count / max(n, 1)), "labelled": n_labelled,
                    })  # fmt: skip
    return pd.DataFrame(rows)


def _class_names(
    sources: RawSources, specs: dict[str, Any]
) -> dict[tuple[str, str], list[str]]:
    """``{(source, label): class names}`` from the task spec, else the source's."""
    names = {}
    for task, spec in specs.items():
        if spec.source in sources and spec.task_kind.is_classifier:
            names[(spec.source, spec.label_name(task))] = source_class_names(spec, task)
    for source in sources:
        if source in SOURCES:
            for label, info in SOURCES.get(source).labels.items():
                if info.class_names:
                    names.setdefault((source, label), list(info.class_names))
    return names
