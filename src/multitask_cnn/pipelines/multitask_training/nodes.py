"""Nodes of the ``multitask_training`` pipeline."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import torch

from multitask_cnn.config import (
    ModelConfig,
    TrainingConfig,
    effective_tasks,
    parse,
    parse_tasks,
)
from multitask_cnn.models import build_model, count_parameters
from multitask_cnn.models.checkpoint import CHECKPOINT_FORMAT
from multitask_cnn.provenance import fingerprint
from multitask_cnn.seeds import torch_seed
from multitask_cnn.tasks import check_labels, kinds_of
from multitask_cnn.tracking import log_epoch_metrics
from multitask_cnn.training import (
    InMemorySource,
    Split,
    TrainState,
    build_optimizer,
    fit,
    get_weighting,
    resolve_device,
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
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any]]:
    """Train the shared multi-task CNN with early stopping on ``val.loss``.

    Returns the best epoch's self-describing checkpoint, the per-epoch history, and the
    final :class:`~multitask_cnn.training.TrainState` (everything a resume needs).
    """
    specs = parse_tasks(tasks)
    model_config = parse(ModelConfig, model, "model")
    config = parse(TrainingConfig, training, "training")
    label_of = {task: spec.label_name(task) for task, spec in specs.items()}
    train = Split.from_model_input(model_input_train, label_of)
    val = Split.from_model_input(model_input_val, label_of)
    check_labels(specs, train.labels, "train")  # before any long work
    check_labels(specs, val.labels, "val")

    device = resolve_device(config.device)
    torch.manual_seed(torch_seed(config.seed, "model_init"))
    network = build_model(specs, model_config.backbone, backbone_args=model_config.backbone_args,
                          shared_stages=model_config.shared_stages).to(device)  # fmt: skip
    strategy = get_weighting(config.weighting, specs, **config.weighting_args).to(
        device
    )
    optimizer = build_optimizer(config.optimizer, [*network.parameters(), *strategy.parameters()],
                                lr=config.lr, weight_decay=config.weight_decay,
                                momentum=config.momentum)  # fmt: skip
    torch.manual_seed(torch_seed(config.seed, "dropout"))  # dropout, random weights
    state = TrainState(network, optimizer, strategy)
    logger.info(
        "Training %s (%d parameters, %d shared stages) on %s: %d train / %d val samples",
        model_config.backbone, count_parameters(network), network.shared_stages, device,
        len(train), len(val),
    )  # fmt: skip
    state = fit(
        state,
        InMemorySource(train, config.batch_size, seed=torch_seed(config.seed, "data_order")),
        InMemorySource(val, config.eval_batch_size),
        kinds_of(specs), device,
        epochs=config.epochs, patience=config.early_stopping.patience,
        min_delta=config.early_stopping.min_delta,
        on_epoch_end=log_epoch_metrics if config.log_every_epoch else None,
    )  # fmt: skip
    checkpoint = {
        "format_version": CHECKPOINT_FORMAT,
        "model": {
            k: v.detach().cpu() for k, v in network.state_dict().items()
        },  # best epoch
        "epoch": state.best_epoch,
        "val_loss": state.best_loss,
        "n_parameters": count_parameters(network),
        "config": {
            "tasks": effective_tasks(specs),
            "model": model_config.effective(),
            "training": config.model_dump(mode="json"),
        },  # fmt: skip
        "normalisation": dict(normalisation_stats),
        "input_fingerprint": {
            "train": fingerprint(model_input_train),
            "val": fingerprint(model_input_val),
        },  # fmt: skip
        "provenance": dict(provenance),
    }
    return checkpoint, pd.DataFrame(state.history), state.state_dict()


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
    return {name: {"value": float(value), "step": 0} for name, value in summary.items()}
