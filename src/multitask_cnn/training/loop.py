"""Training and evaluation loops over in-memory tensors.

``train_one_epoch`` and ``evaluate`` do one pass each; ``fit`` drives them with early
stopping on ``val.loss`` and keeps the best epoch's weights. Nothing here writes
files or talks to MLflow: ``fit`` reports each epoch through ``on_epoch_end``.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .kinds import TaskKind
from .weighting import Weighting

__all__ = ["FitResult", "Split", "evaluate", "fit", "iterate_batches", "predict", "train_one_epoch"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """Images ``(N, C, H, W)`` float32 and one label tensor ``(N,)`` per task."""

    images: torch.Tensor
    labels: Mapping[str, torch.Tensor]

    @classmethod
    def from_model_input(cls, data: Mapping[str, Any], label_of: Mapping[str, str]) -> Split:
        """Pick each task's labels (``label_of[task]``) from a model-input dict."""
        missing = {t: name for t, name in label_of.items() if name not in data["labels"]}
        if missing:
            raise KeyError(
                f"model input has no labels {missing}; it has {sorted(data['labels'])}"
            )
        return cls(data["images"], {t: data["labels"][name] for t, name in label_of.items()})

    def __len__(self) -> int:
        return len(self.images)


def iterate_batches(
    split: Split, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """Yield ``(images, labels)`` mini-batches; shuffled when ``generator`` is given."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if generator is not None else None
    for start in range(0, n, batch_size):
        if order is None:
            index = slice(start, start + batch_size)
        else:
            index = order[start : start + batch_size]
        yield split.images[index], {t: y[index] for t, y in split.labels.items()}


def _to(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def train_one_epoch(
    model: nn.Module,
    split: Split,
    kinds: Mapping[str, TaskKind],
    weighting: Weighting,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    batch_size: int,
    generator: torch.Generator,
    desc: str = "train",
) -> dict[str, float]:
    """One pass over ``split``; returns the mean total and per-task training losses."""
    model.train()
    totals = {task: 0.0 for task in kinds} | {"loss": 0.0}
    seen = 0
    n_batches = -(-len(split) // batch_size)
    bar = tqdm(iterate_batches(split, batch_size, generator), total=n_batches, desc=desc,
               leave=False, disable=None)  # disable=None: quiet when not a terminal
    for images, labels in bar:
        images, labels = images.to(device, non_blocking=True), _to(labels, device)
        outputs = model(images)
        losses = {task: kinds[task].loss(outputs[task], labels[task]) for task in kinds}
        loss = weighting.combine(losses)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        size = len(images)
        seen += size
        totals["loss"] += loss.item() * size
        for task, value in losses.items():
            totals[task] += value.item() * size
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    return {
        ("loss" if key == "loss" else f"{key}.loss"): value / max(seen, 1)
        for key, value in totals.items()
    }


@torch.no_grad()
def predict(
    model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int
) -> dict[str, torch.Tensor]:
    """Model outputs for ``images``, per task, on the CPU."""
    model.eval()
    chunks: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(images), batch_size):
        outputs = model(images[start : start + batch_size].to(device, non_blocking=True))
        for task, out in outputs.items():
            chunks.setdefault(task, []).append(out.float().cpu())
    return {task: torch.cat(parts) for task, parts in chunks.items()}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split: Split,
    kinds: Mapping[str, TaskKind],
    device: torch.device,
    batch_size: int,
) -> dict[str, float]:
    """Loss (unweighted sum over tasks), per-task loss and, for classifiers, accuracy."""
    outputs = predict(model, split.images, device, batch_size)
    metrics: dict[str, float] = {"loss": 0.0}
    for task, kind in kinds.items():
        target = split.labels[task]
        task_loss = kind.loss(outputs[task], target).item()
        metrics[f"{task}.loss"] = task_loss
        metrics["loss"] += task_loss
        if not target.is_floating_point():
            mask = kind.mask(target)
            correct = (kind.predict(outputs[task])[mask] == target[mask]).float()
            metrics[f"{task}.accuracy"] = correct.mean().item() if mask.any() else float("nan")
    return metrics


@dataclass
class FitResult:
    best_state: dict[str, torch.Tensor]
    best_epoch: int  # 1-based
    optimizer_state: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False


EpochCallback = Callable[[int, dict[str, float]], None]


def fit(
    model: nn.Module,
    train: Split,
    val: Split,
    kinds: Mapping[str, TaskKind],
    weighting: Weighting,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    epochs: int,
    batch_size: int,
    eval_batch_size: int,
    patience: int,
    min_delta: float = 0.0,
    generator: torch.Generator,
    on_epoch_end: EpochCallback | None = None,
) -> FitResult:
    """Train for up to ``epochs``, stop after ``patience`` epochs without a better
    ``val.loss`` (by more than ``min_delta``), and return the best epoch's weights."""
    model.to(device)
    best_loss, best_epoch, best_state, best_opt = float("inf"), 0, None, None
    history: list[dict[str, float]] = []
    stopped_early = False
    for epoch in range(1, epochs + 1):
        tick = time.perf_counter()
        train_metrics = train_one_epoch(model, train, kinds, weighting, optimizer, device,
                                        batch_size, generator, desc=f"epoch {epoch}/{epochs}")
        val_metrics = evaluate(model, val, kinds, device, eval_batch_size)
        record = {"epoch": epoch}
        record |= {f"train.{k}": v for k, v in train_metrics.items()}
        record |= {f"val.{k}": v for k, v in val_metrics.items()}
        record |= {f"weight.{t}": float(w) for t, w in weighting.weights.items()}
        record["epoch_seconds"] = time.perf_counter() - tick
        history.append(record)
        weighting.on_epoch_end(epoch, {t: train_metrics[f"{t}.loss"] for t in kinds})
        logger.info(
            "epoch %d/%d  train.loss %.4f  val.loss %.4f  %s  (%.1fs)",
            epoch, epochs, record["train.loss"], record["val.loss"],
            "  ".join(f"val.{t}.accuracy {record[f'val.{t}.accuracy']:.4f}"
                      for t in kinds if f"val.{t}.accuracy" in record),
            record["epoch_seconds"],
        )  # fmt: skip
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
        if val_metrics["loss"] < best_loss - min_delta:
            best_loss, best_epoch = val_metrics["loss"], epoch
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            best_opt = copy.deepcopy(optimizer.state_dict())
        elif epoch - best_epoch >= patience:
            logger.info("early stopping: no better val.loss for %d epochs", patience)
            stopped_early = True
            break
    assert best_state is not None and best_opt is not None  # epochs >= 1
    return FitResult(best_state, best_epoch, best_opt, history, stopped_early)
