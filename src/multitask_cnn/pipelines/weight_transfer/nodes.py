"""Nodes of the ``weight_transfer`` pipeline."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from multitask_cnn.config import (
    ModelConfig,
    TrainingConfig,
    TransferConfig,
    effective_tasks,
    parse,
    parse_tasks,
)
from multitask_cnn.models import build_model
from multitask_cnn.models.transfer import (
    TransferError,
    load_state_dict_file,
    transfer_weights,
)
from multitask_cnn.pipelines.pretraining.nodes import PRETRAINED_FORMAT
from multitask_cnn.provenance import project_root
from multitask_cnn.seeds import torch_seed
from multitask_cnn.tracking import final_metrics

logger = logging.getLogger(__name__)


def _source(
    pretrained_backbone: dict[str, Any] | None,
    config: TransferConfig,
    model: ModelConfig,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The source state_dict and a description of where it comes from."""
    if config.checkpoint is not None:
        path = Path(config.checkpoint)
        path = path if path.is_absolute() else project_root() / path
        return load_state_dict_file(path), {"file": str(path)}
    if pretrained_backbone is None:
        raise TransferError(
            "no pretrained backbone (the pretrained_backbone catalog entry, "
            "<data_root>/06_models/pretrained_backbone.pt): run the pretraining pipeline "
            "first, or set transfer.checkpoint to a state_dict file"
        )
    if pretrained_backbone.get("format") != PRETRAINED_FORMAT:
        raise TransferError(
            "the pretrained_backbone file was not written by the pretraining pipeline of "
            "this version: rerun the pretraining pipeline"
        )
    then = {
        "backbone": pretrained_backbone["backbone"],
        "backbone_args": pretrained_backbone["backbone_args"],
    }
    now = {k: model.effective()[k] for k in ("backbone", "backbone_args")}
    if then != now:
        raise TransferError(
            f"the backbone was pretrained as {then} but the model is {now}: rerun the "
            "pretraining pipeline (kedro run --pipelines pretraining,weight_transfer)"
        )
    provenance = pretrained_backbone.get("provenance", {})
    return pretrained_backbone["state_dict"], {
        "pretrained": {
            "run_id": provenance.get("mlflow.run_id"),
            "pretraining_key": pretrained_backbone.get("pretraining_key"),
            "source": pretrained_backbone.get("source"),
            "epoch": pretrained_backbone.get("epoch"),
        }
    }


def _start(network: torch.nn.Module, transferred: set[str]) -> dict[str, Any]:
    """A model's whole state and the names of its transferred parameters."""
    names = {name for name, _ in network.named_parameters()}
    return {
        "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
        "transferred": sorted(transferred & names),
    }


def _baseline_start(
    task: str, single: torch.nn.Module, multitask: dict[str, torch.Tensor], transferred: set[str]
) -> tuple[set[str], dict[str, int]]:  # fmt: skip
    """Give the single-task model of ``task`` exactly the transferred tensors of the
    multi-task model on ``task``'s path (a shared stage, ``task``'s own copy or column,
    or the first expert's copy, and its head); its other tensors keep their initial
    values. Returns the names moved and counts like the report's."""
    state, moved = single.state_dict(), set()
    for name in state:
        rest = name.removeprefix("shared.")
        for origin in (name, f"task_stages.{task}.{rest}", f"experts.0.{rest}"):
            if origin in transferred:
                state[name] = multitask[origin].clone()
                moved.add(name)
                break
    single.load_state_dict(state)
    params = {n: p.numel() for n, p in single.named_parameters()}
    return moved, {
        "tensors_transferred": len(moved),
        "parameters_transferred": sum(params[n] for n in moved if n in params),
        "parameters_total": sum(params.values()),
    }


def transfer_initial_state(
    pretrained_backbone: dict[str, Any] | None,
    tasks: dict[str, Any],
    model: dict[str, Any],
    training: dict[str, Any],
    transfer: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, float]]]:
    """Build the multi-task model from its spec (the ``model_init`` stream of the seed,
    so untransferred tensors start as a scratch run's would) and fill it from the
    pretrained backbone or ``transfer.checkpoint``. Each single-task baseline starts
    from the same transferred tensors on its task's path (under ``baselines``), so
    that Δm compares sharing with not sharing, both transferred.

    Returns the initial state (whole state_dict, the transferred parameter names, the
    settings it was built with, the baselines' starts), the transfer report, and its
    counts as ``transfer.*`` metrics.
    """
    specs = parse_tasks(tasks)
    model_config = parse(ModelConfig, model, "model")
    config = parse(TransferConfig, transfer, "transfer").for_backbone(model_config)
    seed = parse(TrainingConfig, training, "training").seed
    try:
        return _transfer(pretrained_backbone, specs, model_config, config, seed)
    except TransferError as error:
        if config.enabled:
            raise
        logger.warning("transfer.enabled is false, so training starts from scratch; the "
                       "transfer itself would fail: %s", error)  # fmt: skip
        failed = {"enabled": False, "error": str(error)}
        return {"config": {}, "failed": failed}, failed, {}


def _transfer(
    pretrained_backbone: dict[str, Any] | None, specs: dict[str, Any],
    model_config: ModelConfig, config: TransferConfig, seed: int,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, float]]]:  # fmt: skip
    source, origin = _source(pretrained_backbone, config, model_config)

    def build(task_specs: dict[str, Any], **sharing: Any) -> torch.nn.Module:
        torch.manual_seed(torch_seed(seed, "model_init"))
        return build_model(task_specs, model_config.backbone,
                           backbone_args=model_config.backbone_args, **sharing)  # fmt: skip

    network = build(specs, shared_stages=model_config.shared_stages,
                    architecture=model_config.architecture,
                    architecture_args=model_config.architecture_args)  # fmt: skip
    report = transfer_weights(network, source, config.mapping())
    transferred = set(report.transferred)
    document = {"source": origin} | report.to_dict(
        {n for n, _ in network.named_parameters()}
    )
    counts = document["counts"]
    logger.info(
        "Weight transfer: %d of %d tensors transferred (%d of %d parameters), %d skipped",
        counts["tensors_transferred"], len(report.entries),
        counts["parameters_transferred"], counts["parameters_total"], counts["tensors_skipped"],
    )  # fmt: skip
    multitask_state = network.state_dict()
    baselines, document["baselines"] = {}, {}
    for task, spec in specs.items():
        single = build({task: spec})
        moved, document["baselines"][task] = _baseline_start(
            task, single, multitask_state, transferred
        )
        baselines[task] = _start(single, moved)
    initial_state = _start(network, transferred) | {
        "config": {
            "tasks": effective_tasks(specs),
            "model": model_config.effective(),
            "seed": seed,
            "transfer": config.mapping_settings(),
        },  # fmt: skip
        "source": origin,
        "baselines": baselines,
    }
    metrics = final_metrics({f"transfer.{k}": v for k, v in counts.items()})
    return initial_state, document, metrics
