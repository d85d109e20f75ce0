"""Nodes of the ``baselines`` pipeline: the single-task models Δm compares against."""

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
from multitask_cnn.pipelines.resume import Resumption, resumable, without_epochs
from multitask_cnn.provenance import fingerprint
from multitask_cnn.tracking import final_metrics, log_epoch_metrics
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


def train_baselines(
    model_input_train: dict[str, Any],
    model_input_val: dict[str, Any],
    normalisation_stats: dict[str, Any],
    tasks: dict[str, Any],
    model: dict[str, Any],
    training: dict[str, Any],
    previous_baselines: dict[str, Any] | None,
    provenance: dict[str, Any],
    initial_state: dict[str, Any] | None,
    transfer: dict[str, Any],
    baseline_progress: TrainProgress | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """One single-task model per task: the multi-task model's backbone (all of it the
    task's own), budget and seed, trained with the plain task loss.

    With ``transfer.enabled`` each starts from weight_transfer's start for it (the
    same source and mapping as the multi-task model's). A baseline in
    ``previous_baselines`` whose inputs (data fingerprints, task spec, backbone,
    budget, seed, transferred start) are unchanged is reused, not retrained. Returns
    ``{task: checkpoint}`` (each with ``baseline_key`` and ``reused``) and the
    per-epoch history of the baselines trained now (metrics ``stl.<task>.*``).

    Resumable (``pipelines/resume.py``): a rerun after a kill or a stop keeps the
    baselines the interrupted run finished and continues the one under way from its
    last epoch (``baseline_progress``).
    """
    specs = parse_tasks(tasks)
    model_config = parse(ModelConfig, model, "model")
    config = parse(TrainingConfig, training, "training")
    effective_model = model_config.hard()
    budget = config.budget()
    inputs = {"train": model_input_train, "val": model_input_val}
    splits = {split: task_splits(m, normalisation_stats, specs, split)
              for split, m in inputs.items()}  # fmt: skip  # labels checked, all tasks
    transfer_config = parse(TransferConfig, transfer, "transfer").for_backbone(
        model_config
    )
    starts = {task: warm_start(initial_state, specs, model_config, config.seed, transfer_config,
                               baseline=task) for task in specs}  # fmt: skip
    images = {split: {source: fingerprint({"images": m[source]["images"]}) for source in splits[split]}
              for split, m in inputs.items()}  # fmt: skip  # once per source (a cache: a disk read)
    previous = previous_baselines or {}
    device = resolve_device(config.device)
    inputs_of = {}  # task -> what its baseline depends on
    for task, spec in specs.items():
        source, label = spec.source, spec.label_name(task)
        # the data of this baseline: its source's images, its labels and their scaling
        task_data = {split: fingerprint({"images": images[split][source],
                                         "labels": m[source]["labels"][label],
                                         "normalisation": used_stats(normalisation_stats, {task: spec})})
                     for split, m in inputs.items()}  # fmt: skip
        start = starts[task]
        transferred = None if start is None else {
            "state": fingerprint(dict(start.state)), "freeze_epochs": start.freeze_epochs,
            "lr_scale": start.lr_scale}  # fmt: skip
        inputs_of[task] = _baseline_inputs(effective_tasks({task: spec})[task], effective_model,
                                           budget.single_source(source), task_data, transferred)  # fmt: skip
    keys = {task: fingerprint(i) for task, i in inputs_of.items()}
    identity = {task: without_epochs(i) for task, i in inputs_of.items()}
    baselines, histories = {}, []
    for task in specs:
        if previous.get(task, {}).get("baseline_key") == keys[task]:
            logger.info("Baseline %r: inputs unchanged, reusing the one trained in run %s",
                        task, previous[task]["provenance"].get("mlflow.run_id"))  # fmt: skip
            baselines[task] = previous[task] | {"reused": True}
    if len(baselines) == len(specs):  # nothing to train: no progress to read or keep
        return baselines, pd.DataFrame()
    with resumable(baseline_progress, identity, enabled=config.resume) as resumed:
        for task, spec in specs.items():
            key = keys[task]
            if task in baselines:
                continue
            done = resumed.done.get(task)
            if done is not None and done["checkpoint"]["baseline_key"] == key:
                logger.info("Baseline %r: trained by the interrupted run, kept", task)
                baselines[task] = done["checkpoint"] | {"resumed": True}
                histories.append(pd.DataFrame(done["history"]))
                continue
            checkpoint, history = _train_baseline(
                task, spec, splits, device, budget, config, model_config, effective_model,
                transfer_config, initial_state, starts[task], provenance,
                normalisation_stats, inputs_of[task]["data"], resumed,
            )  # fmt: skip
            baselines[task] = checkpoint | {"baseline_key": key, "reused": False}
            histories.append(pd.DataFrame(history))
            resumed.finished(task, {"checkpoint": baselines[task], "history": history})
    history = pd.concat(histories, ignore_index=True) if histories else pd.DataFrame()
    return {task: baselines[task] for task in specs}, history


def _train_baseline(
    task, spec, splits, device, budget, config, model_config, effective_model,
    transfer_config, initial_state, start, provenance, normalisation_stats, task_data,
    resumed: Resumption,
) -> tuple[dict[str, Any], list[dict[str, float]]]:  # fmt: skip
    """Train the baseline of ``task`` (continuing what an interrupted run saved of it);
    return its checkpoint and per-epoch history."""
    train, val = (
        {spec.source: splits[split][spec.source].only([task])}
        for split in ("train", "val")
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
    return checkpoint, state.history


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
