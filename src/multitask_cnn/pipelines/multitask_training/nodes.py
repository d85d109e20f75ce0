"""Nodes of the ``multitask_training`` pipeline."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import pandas as pd

from multitask_cnn.config import (
    ModelConfig,
    TrainingConfig,
    TransferConfig,
    effective_tasks,
    parse,
    parse_tasks,
)
from multitask_cnn.initial_state import transfer_record, warm_start
from multitask_cnn.io import TrainProgress
from multitask_cnn.models import build_model
from multitask_cnn.models.checkpoint import build_checkpoint
from multitask_cnn.pipelines.resume import resumable
from multitask_cnn.provenance import fingerprint
from multitask_cnn.tracking import (
    final_metrics,
    log_epoch_metrics,
)
from multitask_cnn.training import (
    labelled_counts,
    resolve_device,
    task_splits,
    train_model,
    used_stats,
)

logger = logging.getLogger(__name__)


def train_multitask_model(
    model_input_train: dict[str, Any],
    model_input_val: dict[str, Any],
    normalisation_stats: dict[str, Any],
    tasks: dict[str, Any],
    model: dict[str, Any],
    training: dict[str, Any],
    provenance: dict[str, Any],
    initial_state: dict[str, Any] | None,
    transfer: dict[str, Any],
    training_progress: TrainProgress | None = None,
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any]]:
    """Train the shared multi-task CNN with early stopping on ``val.loss``; from the
    transferred ``initial_state`` when ``transfer.enabled``, else from scratch.

    After every epoch the whole train state goes to ``training_progress`` (atomically);
    a run that was killed, or stopped by SIGTERM / Ctrl-C (after the step it was in),
    continues from there when the same command runs again, and ends as an
    uninterrupted run would. Progress saved under other parameters or inputs is
    refused, naming what differs (``training.resume: false`` starts over). The file is
    removed once training has finished.

    Returns the best epoch's self-describing checkpoint, the per-epoch history, and the
    final :class:`~multitask_cnn.training.TrainState` (everything a resume needs).
    """
    specs = parse_tasks(tasks)
    model_config = parse(ModelConfig, model, "model")
    config = parse(TrainingConfig, training, "training")
    # per data source; labels checked before any long work
    train = task_splits(model_input_train, normalisation_stats, specs, "train")
    val = task_splits(model_input_val, normalisation_stats, specs, "val")

    transfer_config = parse(TransferConfig, transfer, "transfer").for_backbone(
        model_config
    )
    start = warm_start(initial_state, specs, model_config, config.seed, transfer_config)
    # the images and labels read (not the data_prep build: other data changes it)
    input_fingerprint = {
        split: fingerprint({s: {k: m[s][k] for k in ("images", "labels")} for s in read})
        for split, m, read in (("train", model_input_train, train),
                               ("val", model_input_val, val))
    }  # fmt: skip
    identity = _progress_identity(specs, model_config, config, transfer_config, start,
                                  input_fingerprint)  # fmt: skip
    with resumable(training_progress, identity, enabled=config.resume) as resumed:
        state = train_model(
            partial(build_model, specs, model_config.backbone,  # picklable: for workers
                    backbone_args=model_config.backbone_args,
                    shared_stages=model_config.shared_stages,
                    architecture=model_config.architecture,
                    architecture_args=model_config.architecture_args),
            specs, train, val, resolve_device(config.device), config.budget(),
            weighting=config.weighting, weighting_args=config.weighting_args,
            on_epoch_end=log_epoch_metrics if config.log_every_epoch else None,
            probe_rows=config.grad_cos_rows, warm_start=start,
            resume=resumed.state_for(_PART), stop=resumed.stop,
            on_checkpoint=resumed.saver(_PART),
        )  # fmt: skip
    checkpoint = build_checkpoint(
        state.model, best_epoch=state.best_epoch, best_loss=state.best_loss,
        config={"tasks": effective_tasks(specs), "model": model_config.effective(),
                "training": config.model_dump(mode="json"),
                "transfer": transfer_record(transfer_config, initial_state, start)},
        normalisation=used_stats(normalisation_stats, specs),
        input_fingerprint=input_fingerprint,
        labelled=labelled_counts(specs, {"train": train, "val": val}),
        train_seconds=sum(r["epoch_seconds"] for r in state.history),
        train_peak_memory=(state.peak_memory_mb, state.peak_memory_method),
        provenance=provenance,
        strategy=state.strategy.state_dict(),
    )  # fmt: skip
    return checkpoint, pd.DataFrame(state.history), state.state_dict()


# training settings that do not change what training computes
_NOT_IDENTITY = (
    "epochs",
    "resume",
    "log_every_epoch",
    "device",
    "rendezvous",
    "compile",
)
_PART = "multitask"  # the one model this node trains (its part in the progress file)


def _progress_identity(specs, model_config, config, transfer_config, start, inputs):
    """What saved progress must match to be continued: tasks, model, training (but its
    epoch budget, resume and logging), the transfer and the initial state, the data."""
    training = {
        k: v
        for k, v in config.model_dump(mode="json").items()
        if k not in _NOT_IDENTITY
    }
    if config.devices * config.nodes == 1:  # one process: as before workers existed
        training = {k: v for k, v in training.items() if k not in ("devices", "nodes")}
    return {
        "tasks": effective_tasks(specs),
        "model": model_config.effective(),
        "training": training,
        "transfer": transfer_config.model_dump(mode="json"),
        "initial_state": None if start is None else fingerprint(dict(start.state)),
        "inputs": inputs,
    }


def summarise_training(
    multitask_checkpoint: dict[str, Any], training_history: pd.DataFrame
) -> dict[str, dict[str, float]]:
    """Summary metrics for MLflow (kept out of the training node, so that
    ``kedro run --only-missing-outputs`` can skip training and still log them)."""
    summary = {
        "train.best_epoch": multitask_checkpoint["epoch"],
        "train.epochs_run": len(training_history),
        "train.seconds": training_history["epoch_seconds"].sum(),
        "model.parameters": multitask_checkpoint["n_parameters"],
    }
    return final_metrics(summary)
