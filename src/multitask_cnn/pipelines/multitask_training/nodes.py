"""Nodes of the ``multitask_training`` pipeline."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import torch

from multitask_cnn.config import ModelConfig, TrainingConfig, parse, parse_tasks
from multitask_cnn.models import build_model, count_parameters
from multitask_cnn.tracking import log_epoch_metrics
from multitask_cnn.training import (
    TASK_KINDS,
    Split,
    fit,
    get_weighting,
    resolve_device,
    seed_everything,
)

logger = logging.getLogger(__name__)

OPTIMIZERS = {
    "adam": lambda p, c: torch.optim.Adam(p, lr=c.lr, weight_decay=c.weight_decay),
    "adamw": lambda p, c: torch.optim.AdamW(p, lr=c.lr, weight_decay=c.weight_decay),
    "sgd": lambda p, c: torch.optim.SGD(
        p, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay
    ),
}


def train_multitask_model(
    model_input_train: dict[str, Any],
    model_input_val: dict[str, Any],
    tasks: dict[str, Any],
    model: dict[str, Any],
    training: dict[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Train the shared multi-task CNN with early stopping on ``val.loss``.

    Returns the best epoch's checkpoint (model and optimizer state, epoch, parameter
    count, config) and the per-epoch history.
    """
    specs = parse_tasks(tasks)
    model_config = parse(ModelConfig, model, "model")
    config = parse(TrainingConfig, training, "training")
    label_of = {task: spec.label_name(task) for task, spec in specs.items()}
    train = Split.from_model_input(model_input_train, label_of)
    val = Split.from_model_input(model_input_val, label_of)

    generator = seed_everything(config.seed)
    device = resolve_device(config.device)
    network = build_model(model_config, specs)
    optimizer = OPTIMIZERS[config.optimizer](network.parameters(), config)
    weighting = get_weighting(config.weighting, specs)
    logger.info(
        "Training %s (%d parameters, %d shared stages) on %s: %d train / %d val samples",
        model_config.backbone, count_parameters(network), network.shared_stages, device,
        len(train), len(val),
    )  # fmt: skip
    result = fit(
        network, train, val, {t: TASK_KINDS[s.kind] for t, s in specs.items()},
        weighting, optimizer, device,
        epochs=config.epochs, batch_size=config.batch_size,
        eval_batch_size=config.eval_batch_size,
        patience=config.early_stopping.patience,
        min_delta=config.early_stopping.min_delta, generator=generator,
        on_epoch_end=log_epoch_metrics if config.log_every_epoch else None,
    )  # fmt: skip
    return {
        "model": result.best_state,
        "optimizer": result.optimizer_state,
        "epoch": result.best_epoch,
        "n_parameters": count_parameters(network),
        "config": {"tasks": tasks, "model": model, "training": training},
    }, pd.DataFrame(result.history)


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
