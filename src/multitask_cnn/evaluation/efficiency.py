"""What a model costs: parameters (shared and per task), multiply-accumulates per image,
inference latency and throughput, and the multi-task ÷ single-task ratios.

MACs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts the FLOPs of
convolutions and matrix products (2 per multiply-accumulate; bias additions,
activations and pooling are not counted), so MACs = FLOPs / 2.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from multitask_cnn.models import MultiTaskModel
from multitask_cnn.training.memory import PeakMemory

__all__ = [
    "cost_ratios",
    "inference_peak_memory",
    "inference_speed",
    "inference_speeds",
    "macs_per_image",
    "parameter_counts",
]


def parameter_counts(model: MultiTaskModel) -> dict[str, Any]:
    """``total``, ``shared`` (what every task's loss depends on: the shared stages;
    with soft sharing, models/soft.py says) and ``per_task`` (each task's own)."""

    def count(parameters: Sequence[nn.Parameter]) -> int:
        return sum(p.numel() for p in parameters)

    per_task = {task: count(model.task_parameters(task)) for task in model.tasks}
    return {"total": count(list(model.parameters())),
            "shared": count(model.shared_parameters()), "per_task": per_task}  # fmt: skip


@torch.no_grad()
def macs_per_image(
    model: nn.Module, image_shape: tuple[int, ...], task: str | None = None
) -> int:
    """Multiply-accumulates of one forward pass of one image ``(C, H, W)``; with
    ``task``, of answering that task alone (what its path computes: the shared part,
    its own stages and head)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    x = torch.zeros((1, *image_shape), device=device)
    with counter:
        if task is None:
            model(x)
        else:
            model(x, {task: slice(None)})
    model.train(was_training)
    return int(counter.get_total_flops()) // 2


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def inference_speeds(
    models: Mapping[str, nn.Module],
    images: torch.Tensor,
    device: torch.device,
    *,
    batch_size: int,
    repeats: int = 20,
) -> dict[str, dict[str, float]]:
    """Per model: median latency (ms) of one image and throughput (images/s) at
    ``batch_size``, over ``repeats`` timed passes each after a warm-up pass, on
    ``device``, in eval mode (``images``: normalised float ``(N, C, H, W)``, ``N >=
    batch_size``). The models take turns pass by pass, so that a machine that speeds up
    or slows down meanwhile does so for all of them alike."""
    moved = {name: model.eval().to(device) for name, model in models.items()}
    inputs = {"latency": images[:1].to(device), "batch": images[:batch_size].to(device)}
    timings = {name: {kind: [] for kind in inputs} for name in moved}
    for kind, x in inputs.items():
        for model in moved.values():
            model(x)  # warm-up (allocations, kernel choice)
        _synchronise(device)
        for _ in range(repeats):
            for name, model in moved.items():
                tick = time.perf_counter()
                model(x)
                _synchronise(device)
                timings[name][kind].append(time.perf_counter() - tick)
    return {
        name: {
            "latency_ms": statistics.median(t["latency"]) * 1e3,
            "throughput": len(inputs["batch"]) / statistics.median(t["batch"]),
            "throughput_batch": len(inputs["batch"]),
        }
        for name, t in timings.items()
    }


def inference_speed(
    model: nn.Module,
    images: torch.Tensor,
    device: torch.device,
    *,
    batch_size: int,
    repeats: int = 20,
) -> dict[str, float]:
    """:func:`inference_speeds` of one model."""
    return inference_speeds({"model": model}, images, device, batch_size=batch_size,
                            repeats=repeats)["model"]  # fmt: skip


@torch.no_grad()
def inference_peak_memory(
    models: Sequence[nn.Module], images: torch.Tensor, device: torch.device
) -> tuple[float | None, str | None]:
    """Peak memory (MiB) of answering the batch ``images`` with each of ``models`` in
    turn, in eval mode on ``device``, above what the models and the batch already hold
    there; and how it was measured (:class:`~multitask_cnn.training.memory.PeakMemory`)."""
    moved = [model.eval().to(device) for model in models]
    batch = images.to(device)
    for model in moved:  # warm-up: one-off allocations (kernels, workspaces)
        model(batch[:1])
    with PeakMemory(device) as peak:
        for model in moved:
            model(batch)
    return peak.megabytes, peak.method


def cost_ratios(
    multitask: Mapping[str, float | None], single_task: Mapping[str, float | None]
) -> dict[str, float | None]:
    """``multitask[k] / single_task[k]`` for every cost both have (None when either is
    missing or the single-task cost is 0)."""
    ratios: dict[str, float | None] = {}
    for key, value in multitask.items():
        other = single_task.get(key)
        ratios[key] = (
            None if value is None or other in (None, 0) else float(value) / float(other)
        )
    return ratios
