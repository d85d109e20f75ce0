"""Nodes of the ``multitask_training`` pipeline."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd

from multitask_cnn.config import (
    ModelConfig,
    TrainingConfig,
    TransferConfig,
    effective_tasks,
    flatten,
    parse,
    parse_tasks,
)
from multitask_cnn.initial_state import transfer_record, warm_start
from multitask_cnn.io import TrainProgress
from multitask_cnn.models import build_model
from multitask_cnn.models.checkpoint import build_checkpoint
from multitask_cnn.provenance import fingerprint
from multitask_cnn.tracking import (
    active_run_id,
    final_metrics,
    log_epoch_metrics,
    note_resumed_run,
)
from multitask_cnn.training import (
    GracefulStop,
    NonFiniteLossError,
    TrainState,
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
    input_fingerprint = {"train": fingerprint({s: model_input_train[s] for s in train}),
                         "val": fingerprint({s: model_input_val[s] for s in val})}  # fmt: skip
    identity = _progress_identity(specs, model_config, config, transfer_config, start,
                                  input_fingerprint)  # fmt: skip
    resume = (_previous_progress(training_progress, identity)
              if config.resume and training_progress is not None else None)  # fmt: skip

    def save_progress(state: TrainState) -> None:  # with a progress file to keep
        training_progress.write({"identity": identity, "state": state.state_dict(),
                                 "mlflow_run_id": active_run_id()})  # fmt: skip

    with GracefulStop() as stop, _dropped_on(NonFiniteLossError, training_progress):
        state = train_model(
            lambda: build_model(specs, model_config.backbone, backbone_args=model_config.backbone_args,
                                shared_stages=model_config.shared_stages),
            specs, train, val, resolve_device(config.device), config.budget(),
            weighting=config.weighting, weighting_args=config.weighting_args,
            on_epoch_end=log_epoch_metrics if config.log_every_epoch else None,
            probe_rows=config.grad_cos_rows, warm_start=start,
            resume=resume["state"] if resume else None, stop=stop,
            on_checkpoint=save_progress if training_progress is not None else None,
        )  # fmt: skip
    if training_progress is not None:
        training_progress.clear()  # finished: the next run starts afresh
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
_NOT_IDENTITY = ("epochs", "resume", "log_every_epoch", "device")


def _progress_identity(specs, model_config, config, transfer_config, start, inputs):
    """What saved progress must match to be continued: tasks, model, training (but its
    epoch budget, resume and logging), the transfer and the initial state, the data."""
    training = {
        k: v
        for k, v in config.model_dump(mode="json").items()
        if k not in _NOT_IDENTITY
    }
    return {
        "tasks": effective_tasks(specs),
        "model": model_config.effective(),
        "training": training,
        "transfer": transfer_config.model_dump(mode="json"),
        "initial_state": None if start is None else fingerprint(dict(start.state)),
        "inputs": inputs,
    }


@contextmanager
def _dropped_on(
    error: type[Exception], progress: TrainProgress | None
) -> Iterator[None]:
    """Remove the saved progress when ``error`` ends training: resuming would run into
    it again (a loss that went NaN)."""
    try:
        yield
    except error:
        if progress is not None:
            progress.clear()
        raise


def _previous_progress(
    progress: TrainProgress, identity: dict[str, Any]
) -> dict[str, Any] | None:
    """The progress an interrupted run left, if any; refused (naming what differs) when
    it was made with other parameters or data."""
    previous = progress.read()
    if previous is None:
        return None
    saved, now = flatten(previous["identity"]), flatten(identity)
    differs = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
    if differs:
        shown = "; ".join(
            f"{k}: {saved.get(k)!r} then, {now.get(k)!r} now" for k in differs[:6]
        )
        raise ValueError(
            f"{progress.path} holds the progress of an interrupted training with other "
            f"settings or data ({shown}{'; ...' if len(differs) > 6 else ''}). Run with "
            "the settings it had to finish it, or with --params training.resume=false "
            "to start over (or delete the file)"
        )
    logger.info("Resuming the interrupted training after epoch %d (MLflow run %s)",
                previous["state"]["epoch"], previous.get("mlflow_run_id"))  # fmt: skip
    note_resumed_run(previous.get("mlflow_run_id"), previous["state"]["history"])
    return previous


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
