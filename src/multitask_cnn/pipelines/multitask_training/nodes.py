"""Nodes of the ``multitask_training`` pipeline."""

from __future__ import annotations

import logging
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
from multitask_cnn.models import build_model
from multitask_cnn.models.checkpoint import build_checkpoint
from multitask_cnn.provenance import fingerprint
from multitask_cnn.tasks import check_labels
from multitask_cnn.tracking import final_metrics, log_epoch_metrics
from multitask_cnn.training import Split, WarmStart, resolve_device, train_model

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
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any]]:
    """Train the shared multi-task CNN with early stopping on ``val.loss``; from the
    transferred ``initial_state`` when ``transfer.enabled``, else from scratch.

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

    transfer_config = parse(TransferConfig, transfer, "transfer")
    warm_start = (
        _warm_start(initial_state, specs, model_config, config, transfer_config)
        if transfer_config.enabled
        else None
    )
    state = train_model(
        lambda: build_model(specs, model_config.backbone, backbone_args=model_config.backbone_args,
                            shared_stages=model_config.shared_stages),
        specs, train, val, resolve_device(config.device), config.budget(),
        weighting=config.weighting, weighting_args=config.weighting_args,
        on_epoch_end=log_epoch_metrics if config.log_every_epoch else None,
        probe_rows=config.grad_cos_rows, warm_start=warm_start,
    )  # fmt: skip
    checkpoint = build_checkpoint(
        state.model, best_epoch=state.best_epoch, best_loss=state.best_loss,
        config={"tasks": effective_tasks(specs), "model": model_config.effective(),
                "training": config.model_dump(mode="json"),
                "transfer": transfer_config.model_dump(mode="json")
                | {"source": initial_state["source"] if warm_start else None}},
        normalisation=normalisation_stats,
        input_fingerprint={"train": fingerprint(model_input_train),
                           "val": fingerprint(model_input_val)},
        provenance=provenance,
        strategy=state.strategy.state_dict(),
    )  # fmt: skip
    return checkpoint, pd.DataFrame(state.history), state.state_dict()


def _warm_start(
    initial_state: dict[str, Any] | None,
    specs: dict[str, Any],
    model_config: ModelConfig,
    config: TrainingConfig,
    transfer: TransferConfig,
) -> WarmStart:
    """The transferred start, refused when it was built for another spec."""
    if initial_state is None:
        raise FileNotFoundError(
            "transfer.enabled is true but there is no initial state at "
            "data/06_models/initial_state.pt: run the weight_transfer pipeline first "
            "(kedro run --pipelines weight_transfer), or set transfer.enabled: false"
        )
    now = {
        "tasks": effective_tasks(specs),
        "model": model_config.effective(),
        "seed": config.seed,
    }
    differs = sorted(k for k in now if initial_state["config"].get(k) != now[k])
    if differs:
        raise ValueError(
            f"the initial state was transferred for other {', '.join(differs)} than "
            "this run's: rerun weight_transfer (kedro run --pipelines "
            "weight_transfer,multitask_training)"
        )
    return WarmStart(
        state=initial_state["state_dict"],
        transferred=frozenset(initial_state["transferred"]),
        freeze_epochs=transfer.freeze_epochs,
        lr_scale=transfer.lr_scale,
    )


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
