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
    TransferReport,
    load_state_dict_file,
    transfer_weights,
)
from multitask_cnn.provenance import project_root
from multitask_cnn.seeds import torch_seed
from multitask_cnn.tracking import final_metrics

logger = logging.getLogger(__name__)


def _source(
    pretrained_backbone: dict[str, Any] | None, config: TransferConfig, backbone: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The source state_dict and a description of where it comes from."""
    if config.checkpoint is not None:
        path = Path(config.checkpoint)
        path = path if path.is_absolute() else project_root() / path
        return load_state_dict_file(path), {"file": str(path)}
    if pretrained_backbone is None:
        raise TransferError(
            "no pretrained backbone at data/06_models/pretrained_backbone.pt (the "
            "pretrained_backbone catalog entry): run the pretraining pipeline first, or "
            "set transfer.checkpoint to a state_dict file"
        )
    if pretrained_backbone["backbone"] != backbone:
        raise TransferError(
            f"the pretrained backbone is {pretrained_backbone['backbone']!r} but "
            f"model.backbone is {backbone!r}: rerun the pretraining pipeline"
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


def _transferred(
    specs: dict[str, Any], model_config: ModelConfig, shared_stages: int | None,
    source: dict[str, torch.Tensor], config: TransferConfig, seed: int,
) -> tuple[torch.nn.Module, TransferReport]:  # fmt: skip
    """A model built as training builds it (the ``model_init`` stream of the seed, so
    untransferred tensors start as a scratch run's would), filled from ``source``."""
    torch.manual_seed(torch_seed(seed, "model_init"))
    network = build_model(specs, model_config.backbone, backbone_args=model_config.backbone_args,
                          shared_stages=shared_stages)  # fmt: skip
    return network, transfer_weights(network, source, config.mapping())


def _start(network: torch.nn.Module, report: TransferReport) -> dict[str, Any]:
    names = {name for name, _ in network.named_parameters()}
    return {
        "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
        "transferred": sorted(set(report.transferred) & names),
    }


def transfer_initial_state(
    pretrained_backbone: dict[str, Any] | None,
    tasks: dict[str, Any],
    model: dict[str, Any],
    training: dict[str, Any],
    transfer: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, float]]]:
    """Build the multi-task model from its spec and fill it from the pretrained
    backbone or ``transfer.checkpoint``. Each single-task baseline gets its start from
    the same source and mapping (under ``baselines``), so that Δm compares sharing
    with not sharing, both transferred.

    Returns the initial state (whole state_dict, the transferred parameter names, the
    spec it fits, the baselines' starts), the transfer report, and its counts as
    ``transfer.*`` metrics.
    """
    specs = parse_tasks(tasks)
    model_config = parse(ModelConfig, model, "model")
    config = parse(TransferConfig, transfer, "transfer")
    seed = parse(TrainingConfig, training, "training").seed
    source, origin = _source(pretrained_backbone, config, model_config.backbone)

    network, report = _transferred(specs, model_config, model_config.shared_stages,
                                   source, config, seed)  # fmt: skip
    parameter_names = {name for name, _ in network.named_parameters()}
    document = {"source": origin} | report.to_dict(parameter_names)
    counts = document["counts"]
    logger.info(
        "Weight transfer: %d of %d tensors transferred (%d of %d parameters), %d skipped",
        counts["tensors_transferred"], len(report.entries),
        counts["parameters_transferred"], counts["parameters_total"], counts["tensors_skipped"],
    )  # fmt: skip
    baselines = {}
    document["baselines"] = {}
    for task, spec in specs.items():
        single, single_report = _transferred(
            {task: spec}, model_config, None, source, config, seed
        )
        baselines[task] = _start(single, single_report)
        document["baselines"][task] = single_report.counts(
            {n for n, _ in single.named_parameters()}
        )
    initial_state = _start(network, report) | {
        "config": {
            "tasks": effective_tasks(specs),
            "model": model_config.effective(),
            "seed": seed,
        },  # fmt: skip
        "source": origin,
        "baselines": baselines,
    }
    metrics = final_metrics({f"transfer.{k}": v for k, v in counts.items()})
    return initial_state, document, metrics
