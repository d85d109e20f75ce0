"""Nodes of the ``pretraining`` pipeline: the backbone trained on a source task."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from multitask_cnn.config import (
    DataPrepConfig,
    ModelConfig,
    PretrainingConfig,
    TrainingConfig,
    parse,
    pretraining_budget,
)
from multitask_cnn.data.fashion_mnist import CLASSES, FashionMNIST
from multitask_cnn.data.multifashion import scatter_items, split_pool, train_val_pools
from multitask_cnn.data.sources import SOURCES
from multitask_cnn.data.tensors import image_stats, to_model_input
from multitask_cnn.errors import DataFileError
from multitask_cnn.io import TrainProgress
from multitask_cnn.models import build_model
from multitask_cnn.models.transfer import backbone_state_dict
from multitask_cnn.pipelines.resume import resumable, without_epochs
from multitask_cnn.provenance import fingerprint
from multitask_cnn.seeds import numpy_generator
from multitask_cnn.tasks import TaskSpec, check_labels
from multitask_cnn.tracking import final_metrics, log_epoch_metrics
from multitask_cnn.training import Split, resolve_device, train_model

logger = logging.getLogger(__name__)

PRETRAINED_FORMAT = "multitask-cnn/pretrained-backbone"
PRETRAINED_VERSION = 1  # bump when a change to pretraining should redo every one


def build_pretraining_data(
    fashion_mnist: FashionMNIST,
    model_input_train: dict[str, Any],
    model_input_val: dict[str, Any],
    pretraining_file: dict[str, Any] | None,
    normalisation_stats: dict[str, Any],
    data_prep: dict[str, Any],
    pretraining: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The source task's train and val model input, and its task spec.

    ``fashion_mnist_items``: each official *train* image alone at a random position
    on the MultiFashion canvas; train items from MultiFashion's train pool, val items
    from its val pool (the same split, so no val-pool image is trained on, and the
    test images are never used). ``multifashion``: MultiFashion's own splits with one
    label. ``file``: the ``pretraining_file`` catalog entry, split like data_prep.
    Each is ``{"images": uint8 (N, 1, H, W), "labels", "normalisation"}``; images are
    normalised with MultiFashion's train statistics (the input the transferred weights
    will see), or with the source's own train statistics when no task reads
    MultiFashion.
    """
    config = parse(PretrainingConfig, pretraining, "pretraining")
    prep = parse(DataPrepConfig, data_prep, "data_prep")
    label = config.label_name()
    if config.source == "multifashion":
        info = SOURCES.get("multifashion").labels[label]
        train, val = ({"images": m["multifashion"]["images"],
                       "labels": {label: m["multifashion"]["labels"][label]}}
                      for m in (model_input_train, model_input_val))  # fmt: skip
        spec = _spec_for(info.n_classes, info.class_names)
    elif config.source == "fashion_mnist_items":
        pools = train_val_pools(
            fashion_mnist.train_labels, prep.val_fraction, prep.seed
        )
        train, val = (
            _scattered(fashion_mnist, pool, prep, label, split)
            for pool, split in zip(pools, ("train", "val"), strict=True)
        )
        spec = _spec_for(len(CLASSES), CLASSES)
    else:
        train, val, spec = _from_file(pretraining_file, label, prep)
    if config.n_train is not None:
        keep = numpy_generator(prep.seed, "pretraining_subset").permutation(
            len(train["images"])
        )
        keep = np.sort(keep[: config.n_train])
        train = {"images": train["images"][keep],
                 "labels": {k: y[keep] for k, y in train["labels"].items()}}  # fmt: skip
    stats = normalisation_stats.get("multifashion") or image_stats(train["images"])
    train, val = ({**d, "normalisation": {k: stats[k] for k in ("mean", "std")}}
                  for d in (train, val))  # fmt: skip
    logger.info(
        "Pretraining source %r (label %r): %d train / %d val images",
        config.source, label, len(train["images"]), len(val["images"]),
    )  # fmt: skip
    return train, val, spec


def _spec_for(n_classes: int | None, names: Any) -> dict[str, Any]:
    if n_classes is None:
        return {"kind": "regression"}
    if n_classes == 2:
        return {"kind": "binary", "class_names": list(names) if names else None}
    return {"kind": "multiclass", "num_classes": n_classes,
            "class_names": list(names) if names else None}  # fmt: skip


def _scattered(
    data: FashionMNIST, pool: np.ndarray, prep: DataPrepConfig, label: str, split: str,
) -> dict[str, Any]:  # fmt: skip
    canvas, _ = scatter_items(
        data.train_images[pool], numpy_generator(prep.seed, f"pretraining_items:{split}"),
        prep.canvas_size,
    )  # fmt: skip
    labels = data.train_labels[pool].astype(np.int64)
    return to_model_input(canvas, {label: labels})


def _from_file(
    data: dict[str, Any] | None, label: str, prep: DataPrepConfig
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    where = "the pretraining_file catalog entry (data/01_raw/pretraining.pt)"
    if data is None:
        raise DataFileError(
            f"pretraining.source is 'file' but {where} does not exist; save "
            "{'images': uint8 (N, H, W), 'labels': {name: int64 (N,)}} there with torch.save"
        )
    if not isinstance(data, dict) or "images" not in data or "labels" not in data:
        raise DataFileError(f"{where} must be a dict with 'images' and 'labels'")
    images = np.asarray(data["images"])
    side = prep.canvas_size
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (side, side):
        raise DataFileError(
            f"{where}: images must be uint8 (N, {side}, {side}), grey like the canvas "
            f"(data_prep.canvas_size), got {images.dtype} {images.shape}"
        )
    if label not in data["labels"]:
        raise DataFileError(
            f"{where} has no label {label!r} (pretraining.label); it has {sorted(data['labels'])}"
        )
    labels = np.asarray(data["labels"][label])
    if (
        not np.issubdtype(labels.dtype, np.integer) or labels.shape != (len(images),)
        or len(labels) < 2 or labels.min() < -1 or len(np.unique(labels[labels >= 0])) < 2
    ):  # fmt: skip
        raise DataFileError(
            f"{where}: label {label!r} must hold one integer class id per image (>= 0; "
            f"-1 = missing), at least two classes, for its {len(images)} images; got "
            f"{labels.dtype} of shape {labels.shape}"
        )
    labels = labels.astype(np.int64)
    train_rows, val_rows = split_pool(
        labels, prep.val_fraction, numpy_generator(prep.seed, "pretraining_file_val")
    )  # stratified by class, as data_prep splits the official train images
    return (
        to_model_input(images[train_rows], {label: labels[train_rows]}),
        to_model_input(images[val_rows], {label: labels[val_rows]}),
        _spec_for(int(labels.max()) + 1, None),
    )


_PART = "pretraining"  # its part in the progress file


def _pretraining_inputs(data: dict[str, str], task: dict[str, Any], model: dict[str, Any],
                        budget: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """What a pretraining depends on: its data, task, backbone, budget and seed (its
    fingerprint is the pretraining's key)."""
    return {"version": PRETRAINED_VERSION, "data": data, "task": task,
            "backbone": {k: model[k] for k in ("backbone", "backbone_args")},
            "budget": budget}  # fmt: skip


def pretrain_backbone(
    pretraining_train: dict[str, Any],
    pretraining_val: dict[str, Any],
    pretraining_task: dict[str, Any],
    model: dict[str, Any],
    training: dict[str, Any],
    pretraining: dict[str, Any],
    previous_pretrained: dict[str, Any] | None,
    provenance: dict[str, Any],
    pretraining_progress: TrainProgress | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Train the whole backbone, with one head, on the source task (metrics
    ``pretrain.*``); save the backbone's tensors under backbone names.

    The multi-task ``training`` budget applies, with ``pretraining.training``'s
    changes. A pretraining whose inputs (data, task, backbone, budget, seed) are those
    of ``previous_pretrained`` is reused, not repeated. Resumable
    (``pipelines/resume.py``): a rerun after a kill or a stop continues from the last
    epoch saved in ``pretraining_progress``.
    """
    config = parse(PretrainingConfig, pretraining, "pretraining")
    model_config = parse(ModelConfig, model, "model")
    budget_config = pretraining_budget(
        parse(TrainingConfig, training, "training").model_dump(), config.training
    )
    budget = budget_config.budget()
    label = config.label_name()
    specs = {label: TaskSpec(**pretraining_task)}
    data = {
        "train": fingerprint(pretraining_train),
        "val": fingerprint(pretraining_val),
    }
    effective_model = model_config.effective() | {"shared_stages": None}
    # the backbone takes the source's channels (grey), whatever the tasks' images are
    channels = int(pretraining_train["images"].shape[1])
    effective_model["backbone_args"] |= {"in_channels": channels}
    backbone_args = dict(model_config.backbone_args) | {"in_channels": channels}
    inputs = _pretraining_inputs(
        data,
        specs[label].model_dump(mode="json"),
        effective_model,
        budget.single_source(),
    )
    key = fingerprint(inputs)
    if (
        previous_pretrained is not None
        and previous_pretrained.get("pretraining_key") == key
    ):
        logger.info("Pretraining: inputs unchanged, reusing the backbone pretrained in run %s",
                    previous_pretrained["provenance"].get("mlflow.run_id"))  # fmt: skip
        return previous_pretrained | {"reused": True}, pd.DataFrame()

    train, val = (
        Split(d["images"], {label: d["labels"][label]}, **d["normalisation"])
        for d in (pretraining_train, pretraining_val)
    )
    check_labels(specs, train.labels, "pretraining train")
    identity = without_epochs(inputs)
    with resumable(
        pretraining_progress, identity, enabled=budget_config.resume
    ) as resumed:
        state = train_model(
            partial(build_model, specs, model_config.backbone, backbone_args=backbone_args),
            specs, train, val, resolve_device(budget_config.device), budget, prefix="pretrain.",
            on_epoch_end=log_epoch_metrics if budget_config.log_every_epoch else None,
            resume=resumed.state_for(_PART), stop=resumed.stop,
            on_checkpoint=resumed.saver(_PART),
        )  # fmt: skip
    best = next(r for r in state.history if r["epoch"] == state.best_epoch)
    pretrained = {
        "format": PRETRAINED_FORMAT,
        "format_version": PRETRAINED_VERSION,
        "state_dict": backbone_state_dict(state.model),
        "backbone": effective_model["backbone"],
        "backbone_args": effective_model["backbone_args"],
        "source": {"source": config.source, "label": label, "task": specs[label].model_dump(mode="json")},
        "budget": budget_config.model_dump(mode="json"),
        "n_parameters": sum(p.numel() for p in state.model.shared.parameters()),
        "epoch": state.best_epoch,
        "val_loss": state.best_loss,
        "best": {k: float(v) for k, v in best.items() if k.startswith("pretrain.val.")},
        "input_fingerprint": data,
        "pretraining_key": key,
        "provenance": dict(provenance),
        "reused": False,
    }  # fmt: skip
    return pretrained, pd.DataFrame(state.history)


def summarise_pretraining(
    pretrained_backbone: dict[str, Any],
) -> dict[str, dict[str, float]]:
    """``pretrain.best_epoch``, ``pretrain.reused``, ``pretrain.parameters`` (the
    backbone's) and the best epoch's ``pretrain.best.val.*`` for MLflow (a node of its own, so a reused pretraining
    still logs them)."""
    summary = {
        "pretrain.best_epoch": pretrained_backbone["epoch"],
        "pretrain.reused": float(bool(pretrained_backbone.get("reused"))),
        "pretrain.parameters": pretrained_backbone["n_parameters"],
    } | {k.replace("pretrain.", "pretrain.best.", 1): v
         for k, v in pretrained_backbone["best"].items()}  # fmt: skip
    return final_metrics(summary)
