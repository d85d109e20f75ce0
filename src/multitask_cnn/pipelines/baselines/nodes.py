"""Nodes of the ``baselines`` pipeline: the single-task models Δm compares against,
one branch (``stl.<task>``) per task."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import pandas as pd

from multitask_cnn.config import (
    ConfigError,
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
from multitask_cnn.pipelines.resume import Resumption, resumable, without_epochs
from multitask_cnn.provenance import fingerprint
from multitask_cnn.tracking import (
    final_metrics,
    interrupted_run,
    log_epoch_metrics,
    note_resumed_run,
)
from multitask_cnn.training import (
    labelled_counts,
    resolve_device,
    task_splits,
    train_model,
    used_stats,
)

logger = logging.getLogger(__name__)


BASELINE_VERSION = 1  # bump when a change to training should retrain every baseline
_NOT_IN_KEY = {
    "loss_weight",
    "class_names",
    "eval_batch_size",
}  # no effect on a baseline


def _baseline_inputs(
    task_spec: dict, model: dict, budget: dict, data: dict[str, str],
    transferred: dict[str, Any] | None,
) -> dict[str, Any]:  # fmt: skip
    """What a baseline depends on: its images and labels, task, backbone, budget, seed,
    and its transferred start (None: from scratch). Its fingerprint is the baseline's
    key."""
    return {
        "version": BASELINE_VERSION, "model": model, "data": data, "transfer": transferred,
        "task": {k: v for k, v in task_spec.items() if k not in _NOT_IN_KEY},
        "budget": {k: v for k, v in budget.items() if k not in _NOT_IN_KEY},
    }  # fmt: skip


def train_baseline(
    task: str,
    model_input_train: dict[str, Any],
    model_input_val: dict[str, Any],
    normalisation_stats: dict[str, Any],
    tasks: dict[str, Any],
    model: dict[str, Any],
    training: dict[str, Any],
    previous_baseline: dict[str, Any] | None,
    provenance: dict[str, Any],
    initial_state: dict[str, Any] | None,
    transfer: dict[str, Any],
    baseline_progress: TrainProgress | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """The single-task model of ``task``: the multi-task model's backbone (all of it
    the task's own), budget and seed, trained with the plain task loss on the task's
    own source.

    With ``transfer.enabled`` it starts from weight_transfer's start for it (the same
    source and mapping as the multi-task model's). ``previous_baseline`` (the one the
    last run saved) is reused, not retrained, when its inputs (data fingerprints, task
    spec, backbone, budget, seed, transferred start) are unchanged. Returns the
    checkpoint (with ``baseline_key``, ``reused`` and ``resumed``; its ``history``
    inside) and its per-epoch history (metrics ``stl.<task>.*``).

    Resumable (``pipelines/resume.py``): a rerun after a kill or a stop continues the
    training from its last epoch (``baseline_progress``).
    """
    specs = parse_tasks(tasks)
    if task not in specs:
        raise ConfigError(
            f"the baselines pipeline has a branch for task {task!r}, which the task spec "
            f"does not list (only {sorted(specs)}): register the pipelines with this "
            "run's configuration (`kedro run` does)"
        )
    spec = specs[task]
    model_config = parse(ModelConfig, model, "model")
    config = parse(TrainingConfig, training, "training")
    effective_model = model_config.hard()
    budget = config.budget()
    inputs = {"train": model_input_train, "val": model_input_val}
    splits = {split: task_splits(m, normalisation_stats, {task: spec}, split)
              for split, m in inputs.items()}  # fmt: skip  # its labels checked
    transfer_config = parse(TransferConfig, transfer, "transfer").for_backbone(
        model_config
    )
    # every task's spec: the initial state must have been built for this run's tasks
    start = warm_start(initial_state, specs, model_config, config.seed, transfer_config,
                       baseline=task)  # fmt: skip
    source, label = spec.source, spec.label_name(task)
    # the data of this baseline: its source's images, its labels and their scaling
    task_data = {split: fingerprint({"images": fingerprint({"images": m[source]["images"]}),
                                     "labels": m[source]["labels"][label],
                                     "normalisation": used_stats(normalisation_stats, {task: spec})})
                 for split, m in inputs.items()}  # fmt: skip
    transferred = None if start is None else {
        "state": fingerprint(dict(start.state)), "freeze_epochs": start.freeze_epochs,
        "lr_scale": start.lr_scale}  # fmt: skip
    depends_on = _baseline_inputs(effective_tasks({task: spec})[task], effective_model,
                                  budget.single_source(source), task_data, transferred)  # fmt: skip
    key = fingerprint(depends_on)
    if (previous_baseline or {}).get("baseline_key") == key:
        return _kept(task, previous_baseline)
    with resumable(baseline_progress, without_epochs(depends_on),
                   enabled=config.resume) as resumed:  # fmt: skip
        checkpoint = _train_baseline(
            task, spec, splits, resolve_device(config.device), budget, config,
            model_config, effective_model, transfer_config, initial_state, start,
            provenance, normalisation_stats, task_data, resumed,
        )  # fmt: skip
    trained = checkpoint | {"baseline_key": key, "reused": False, "resumed": False}
    return trained, pd.DataFrame(trained["history"])


def _kept(task: str, previous: dict[str, Any]) -> tuple[dict[str, Any], pd.DataFrame]:
    """The saved baseline of ``task``, whose inputs are unchanged, and its curves.

    Trained by a run that did not finish (killed after this baseline's node, or
    failed later), it is *resumed*: this run continues that one, so its curves are
    logged here too (``note_resumed_run``), as for a training continued from its
    progress file. Otherwise it is *reused* from a finished run."""
    history = list(previous.get("history", []))
    trained_in = previous["provenance"].get("mlflow.run_id")
    if interrupted_run(trained_in):
        logger.info("Baseline %r: trained by the interrupted run %s, kept; its curves "
                    "go into this run", task, trained_in)  # fmt: skip
        note_resumed_run(trained_in, history)
        return previous | {"reused": False, "resumed": True}, pd.DataFrame(history)
    logger.info("Baseline %r: inputs unchanged, reusing the one trained in run %s",
                task, trained_in)  # fmt: skip
    return previous | {"reused": True, "resumed": False}, pd.DataFrame(history)


def _train_baseline(
    task, spec, splits, device, budget, config, model_config, effective_model,
    transfer_config, initial_state, start, provenance, normalisation_stats, task_data,
    resumed: Resumption,
) -> dict[str, Any]:  # fmt: skip
    """Train the baseline of ``task`` (continuing what an interrupted run saved of it);
    return its checkpoint, its per-epoch history inside (``history``: in the report of
    every run that compares with it)."""
    train, val = (
        {spec.source: splits[split][spec.source]} for split in ("train", "val")
    )
    state = train_model(
        partial(build_model, {task: spec}, model_config.backbone,
                backbone_args=model_config.backbone_args),  # picklable: for workers
        {task: spec}, train, val, device, budget, prefix=f"stl.{task}.",
        on_epoch_end=log_epoch_metrics if config.log_every_epoch else None,
        warm_start=start, resume=resumed.state_for(task), stop=resumed.stop,
        on_checkpoint=resumed.saver(task),
    )  # fmt: skip
    checkpoint = build_checkpoint(
        state.model, best_epoch=state.best_epoch, best_loss=state.best_loss,
        config={"tasks": effective_tasks({task: spec}), "model": effective_model,
                "training": config.model_dump(mode="json") | {"weighting": "equal"},
                "transfer": transfer_record(transfer_config, initial_state, start)},
        normalisation=used_stats(normalisation_stats, {task: spec}), input_fingerprint=task_data,
        provenance=provenance, labelled=labelled_counts({task: spec}, {"train": train, "val": val}),
        train_seconds=sum(r[f"stl.{task}.epoch_seconds"] for r in state.history),
        train_peak_memory=(state.peak_memory_mb, state.peak_memory_method),
    )  # fmt: skip
    return checkpoint | {"history": state.history}


def collect_baselines(**checkpoints: dict[str, Any]) -> dict[str, Any]:
    """``{task: checkpoint}`` of the baselines (what Δm, the efficiency report and the
    insight compare against), in the task spec's order."""
    return checkpoints


def collect_histories(**histories: pd.DataFrame) -> pd.DataFrame:
    """The per-epoch histories of the baselines the run compares with, one table
    (a baseline saved before checkpoints kept their history has none)."""
    trained = [history for history in histories.values() if not history.empty]
    return pd.concat(trained, ignore_index=True) if trained else pd.DataFrame()


def summarise_baselines(
    baseline_checkpoints: dict[str, Any],
) -> dict[str, dict[str, float]]:
    """``stl.<task>.best_epoch`` and ``stl.<task>.parameters`` for MLflow (a node of
    its own, so a rerun that reuses the baselines still logs them, and records which
    baselines it used)."""
    summary = {}
    for task, checkpoint in baseline_checkpoints.items():
        summary[f"stl.{task}.best_epoch"] = checkpoint["epoch"]
        summary[f"stl.{task}.parameters"] = checkpoint["n_parameters"]
    return final_metrics(summary)
