"""Training and evaluation loops over batch sources.

``train_one_epoch`` and ``evaluate`` do one pass each over a
:class:`~multitask_cnn.training.sources.BatchSource`; ``fit`` drives them with early
stopping on ``val.loss`` and leaves the model holding the best epoch's weights.
Metrics accumulate on the device and are read once per pass (no per-step host sync,
except the non-finite check, which reads a flag every ``check_every`` steps).

Loss definitions (the same for ``train`` and ``val``):
``<task>.loss`` is the task's loss averaged over the rows that carry a label for it;
``loss`` is the unweighted sum of the task losses. The weighting strategy changes
what is back-propagated, not these numbers.

Nothing here writes files or talks to MLflow: ``fit`` reports each epoch through
``on_epoch_end``.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from multitask_cnn.models import MultiTaskModel
from multitask_cnn.tasks import TaskKind

from .diagnostics import gradient_cosines
from .distributed import Group
from .precision import FP32, Precision
from .sources import Batch, BatchSource
from .state import TrainState
from .strategies import Step, Strategy

__all__ = [
    "EpochCallback",
    "GracefulStop",
    "NonFiniteLossError",
    "TrainingStopped",
    "evaluate",
    "fit",
    "predict",
    "train_one_epoch",
]

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A task's loss became NaN or infinite; the message names task, epoch and step."""


class TrainingStopped(Exception):
    """Training was asked to stop (SIGTERM, Ctrl-C) and did, after finishing a step."""


class GracefulStop:
    """While active (``with GracefulStop() as stop:``), SIGTERM and SIGINT do not kill
    training: they set :attr:`requested`, and the loop stops after the step it is in
    (:class:`TrainingStopped`). A second signal stops at once, mid-step
    (:class:`TrainingStopped` too, so the run still ends as stopped). Signals that were
    ignored (``nohup``) stay ignored. Outside the main thread, where Python cannot take
    signals, nothing is installed."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                if (
                    signal.getsignal(signum) is signal.SIG_IGN
                ):  # ignored (nohup): leave it
                    continue
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():  # None: set outside Python
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None:  # asked twice: stop now, as a stop still
            raise TrainingStopped(f"training stopped at once by a second {name}")
        self.requested = name
        logger.warning(
            "%s received: stopping after the current step (again to stop now)", name
        )


_NON_FINITE_HINT = (
    "Nothing was saved from this training. Check that task's inputs and labels, "
    "or lower training.lr."
)


class _Sums:
    """Running (sum, count) pairs, kept on the device as the steps made them and
    summed once by :meth:`read`: a step adds no tensor operation of its own (on the
    CPU, each small operation costs more dispatch time than it computes).

    Sums are added in float64 where the device has it (MPS does not: float32 there).
    With a data-parallel ``group``, :meth:`read` adds them over its workers first.
    """

    def __init__(self, device: torch.device, group: Group | None = None) -> None:
        self.dtype = torch.float32 if device.type == "mps" else torch.float64
        self.group = group
        self.parts: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}

    def add(self, name: str, total: torch.Tensor, count: torch.Tensor) -> None:
        totals, counts = self.parts.setdefault(name, ([], []))
        totals.append(total.detach())
        counts.append(count.detach())

    def read(self) -> tuple[dict[str, float], dict[str, int]]:
        """Means (NaN where nothing was counted) and counts; the one host sync."""
        names = list(self.parts)
        if not names:
            return {}, {}
        sums = torch.stack([torch.stack(self.parts[n][0]).to(self.dtype).sum()
                            for n in names])  # fmt: skip
        counts = torch.stack([torch.stack(self.parts[n][1]).sum() for n in names])
        if self.group is not None:
            sums, counts = self.group.sum(sums), self.group.sum(counts)
        sums, counts = sums.tolist(), counts.tolist()
        means = {
            n: (s / c if c else math.nan)
            for n, s, c in zip(names, sums, counts, strict=True)
        }
        return means, dict(zip(names, counts, strict=True))


def _summarise(
    sums: _Sums, tasks: list[str], where: str, epoch: int | None
) -> dict[str, float]:
    """Per-task metrics as ``<task>.<metric>`` and ``loss`` = the sum of the task losses
    of the tasks that had labelled rows. A task with labelled rows and a non-finite
    loss raises :class:`NonFiniteLossError` (it must never count as a good epoch)."""
    means, counts = sums.read()
    labelled = [t for t in tasks if counts.get(f"{t}.loss", 0) > 0]
    for task in labelled:
        if not math.isfinite(means[f"{task}.loss"]):
            at = f"epoch {epoch}, " if epoch is not None else ""
            raise NonFiniteLossError(
                f"task {task!r}: the {where} loss is not finite ({at}{where} pass). "
                + _NON_FINITE_HINT
            )
    return {"loss": float(sum(means[f"{t}.loss"] for t in labelled))} | means


class _FiniteGuard:
    """Keeps each step's task losses ``(T,)``; :meth:`check` reads those not yet
    checked (one host sync) and raises, naming the first task and step that was not
    finite."""

    def __init__(self, tasks: list[str], epoch: int | None) -> None:
        self.tasks, self.epoch = tasks, epoch
        self.pending: list[torch.Tensor] = []
        self.first_step = 1  # the step of pending[0]

    def update(self, values: torch.Tensor) -> None:
        self.pending.append(values.detach())

    def check(self, n_steps: int) -> None:
        if not self.pending:
            return
        values = torch.stack(self.pending)  # (steps, T)
        finite = torch.isfinite(values)
        if not finite.all():
            step, column = divmod(
                int((~finite).flatten().nonzero()[0]), len(self.tasks)
            )
            where = f"epoch {self.epoch}, " if self.epoch is not None else ""
            raise NonFiniteLossError(
                f"task {self.tasks[column]!r}: the loss is not finite at {where}step "
                f"{self.first_step + step} of {n_steps}. " + _NON_FINITE_HINT
            )
        self.first_step += len(self.pending)
        self.pending.clear()


def _task_losses(
    kinds: Mapping[str, TaskKind], batch, outputs: Mapping[str, torch.Tensor]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {
        task: kind.loss_sums(outputs[task], batch.labels[task])
        for task, kind in kinds.items()
    }


def _images(batch, channels_last: bool) -> torch.Tensor:
    if channels_last:
        return batch.images.contiguous(memory_format=torch.channels_last)
    return batch.images


def _forward(
    model: MultiTaskModel, images: torch.Tensor, rows, precision: Precision
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Shared features and task outputs, both float32: the trunk and the heads run
    under ``precision``'s autocast (precision.py)."""
    with precision.autocast():
        features = model.shared_features(images)
    features = features.float()  # (the same tensor when it is float32 already)
    with precision.autocast():
        outputs = model.task_outputs(features, rows)
    return features, {task: out.float() for task, out in outputs.items()}


def _losses_again(
    model: MultiTaskModel,
    kinds: Mapping[str, TaskKind],
    batch,
    precision: Precision = FP32,
    channels_last: bool = False,
) -> dict[str, torch.Tensor]:
    """The batch's task losses after the optimizer step (FAMO), in train mode as the
    step's own losses were, with the batch-norm running statistics left as they were."""
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    with torch.no_grad():
        _, outputs = _forward(
            model, _images(batch, channels_last), batch.rows, precision
        )
        again = _task_losses(kinds, batch, outputs)
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    return {task: total / count.clamp(min=1) for task, (total, count) in again.items()}


def train_one_epoch(
    model: MultiTaskModel,
    source: BatchSource,
    kinds: Mapping[str, TaskKind],
    strategy: Strategy,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    epoch: int | None = None,
    check_every: int | None = None,
    desc: str = "train",
    stop: GracefulStop | None = None,
    precision: Precision = FP32,
    scaler: torch.amp.GradScaler | None = None,
    channels_last: bool = False,
    group: Group | None = None,
) -> dict[str, float]:
    """One pass over ``source``: ``loss`` and ``<task>.loss`` averaged over labelled
    rows, and ``weight.<task>``, the strategy's task weights averaged over the steps.

    The forward pass runs under ``precision``'s autocast, on channels-last images with
    ``channels_last``; with ``scaler`` (fp16), the strategy's backward is scaled and the
    optimizer steps through it (precision.py).

    The strategy owns the backward step (:meth:`Strategy.backward`). Raises
    :class:`NonFiniteLossError` when a task's loss is NaN or infinite; the check reads
    the device every ``check_every`` steps (default: every step on the CPU, where it is
    free, before the optimizer step; every 50 steps elsewhere).

    With a data-parallel ``group`` (distributed.py), the gradients are averaged over
    its workers after the strategy's backward, in one all-reduce that also carries
    the task losses the check reads and the stop request.
    """
    model.train()
    tasks = list(kinds)
    sums = _Sums(device, group)
    guard = _FiniteGuard(tasks, epoch)
    weights_seen: list[torch.Tensor] = []
    n_steps = len(source)
    if check_every is None:
        check_every = 1 if device.type == "cpu" else 50
    shared_params = [p for p in model.shared_parameters() if p.requires_grad]
    last_shared = [p for p in model.last_shared_layer() if p.requires_grad]
    frozen = any(not p.requires_grad for p in model.shared_parameters())
    shared_ids = {id(p) for p in shared_params}
    task_params = [
        p for p in model.parameters() if p.requires_grad and id(p) not in shared_ids
    ]
    trained = [
        p for g in optimizer.param_groups for p in g["params"] if p.requires_grad
    ]
    bar = tqdm(
        source, total=n_steps, desc=desc, leave=False, disable=None
    )  # quiet off a tty
    for step, batch in enumerate(bar, start=1):
        batch = batch.to(device)
        features, outputs = _forward(
            model, _images(batch, channels_last), batch.rows, precision
        )
        terms = _task_losses(kinds, batch, outputs)
        losses = {
            task: total / count.clamp(min=1) for task, (total, count) in terms.items()
        }
        for task, (total, count) in terms.items():
            sums.add(f"{task}.loss", total, count)
        stacked = torch.stack([losses[task] for task in tasks])
        if group is None:
            guard.update(stacked)
            if step % check_every == 0:
                guard.check(n_steps)  # before the step: the weights stay finite
        optimizer.zero_grad(set_to_none=True)
        labelled = {task: count for task, (_, count) in terms.items()}
        weights = strategy.backward(
            Step(
                losses,
                features if model.features_cut else None,
                shared_params,
                last_shared,
                labelled,
                shared_frozen=frozen and not shared_params,
                scale=None if scaler is None else scaler.scale,
                task_params=task_params,
            )
        )
        stop_now = stop is not None and stop.requested
        if group is not None:  # every worker's gradients, losses and stop request
            averaged, stop_flag = group.average_gradients(trained, stacked)
            guard.update(averaged)
            # (the one host sync, as without a group; and at the epoch's last step, so
            # that a stop request is read however few steps an epoch has)
            if step % check_every == 0 or step == n_steps:
                guard.check(n_steps)  # the same verdict on every worker
                stop_now = stop_now or bool(stop_flag > 0)
        if scaler is None:
            optimizer.step()
        else:  # unscales, skips the step if a gradient overflowed, adapts the scale
            scaler.step(optimizer)
            scaler.update()
        strategy.after_optimizer_step()
        if strategy.needs_losses_after_step:
            strategy.after_step(
                _losses_again(model, kinds, batch, precision, channels_last)
            )
        weights_seen.append(weights)
        if stop_now:
            where = f"epoch {epoch}, " if epoch is not None else ""
            raise TrainingStopped(
                f"training stopped by {_who(stop)} after {where}step {step} of {n_steps}"
            )
    guard.check(n_steps)
    metrics = _summarise(sums, tasks, "train", epoch)
    if weights_seen:  # the strategy's weights, averaged over the steps
        mean = torch.stack(weights_seen).to(sums.dtype).mean(0).tolist()
        metrics |= {f"weight.{t}": w for t, w in zip(strategy.tasks, mean, strict=True)}
    return metrics


@torch.no_grad()
def predict(
    model: nn.Module, source: BatchSource, device: torch.device
) -> dict[str, torch.Tensor]:
    """Model outputs for every row of ``source`` (in order), per task, on the CPU."""
    model.eval()
    chunks: dict[str, list[torch.Tensor]] = {}
    for batch in source:
        outputs = model(batch.images.to(device, non_blocking=True), batch.rows)
        for task, out in outputs.items():
            chunks.setdefault(task, []).append(out.float().cpu())
    return {task: torch.cat(parts) for task, parts in chunks.items()}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    source: BatchSource,
    kinds: Mapping[str, TaskKind],
    device: torch.device,
    *,
    epoch: int | None = None,
    precision: Precision = FP32,
    channels_last: bool = False,
    group: Group | None = None,
) -> dict[str, float]:
    """``loss``, ``<task>.loss`` (as in training) and each kind's running metrics
    (``<task>.accuracy`` for classifiers, ``<task>.mae`` for regression); the forward
    pass as in :func:`train_one_epoch`.

    Raises :class:`NonFiniteLossError` when a task's loss over its labelled rows is
    not finite (it must never count as the best epoch)."""
    model.eval()
    sums = _Sums(device, group)
    for batch in source:
        batch = batch.to(device)
        _, outputs = _forward(
            model, _images(batch, channels_last), batch.rows, precision
        )
        for task, output in outputs.items():
            kind, target = kinds[task], batch.labels[task]
            sums.add(f"{task}.loss", *kind.loss_sums(output, target))
            for name, (total, count) in kind.running_sums(output, target).items():
                sums.add(f"{task}.{name}", total, count)
    return _summarise(sums, list(kinds), "val", epoch)


EpochCallback = Callable[[int, dict[str, float]], None]


def _who(stop: GracefulStop | None) -> str:
    """What asked training to stop (a worker is told through the all-reduce)."""
    return stop.requested if stop is not None and stop.requested else "a stop request"


@dataclass(frozen=True)
class Freeze:
    """``params`` (transferred weights) take no gradient in epochs ``1 … epochs``."""

    params: list[nn.Parameter]
    epochs: int

    def apply(self, epoch: int) -> int:
        """Freeze or unfreeze for ``epoch``; returns the number of frozen values."""
        frozen = epoch <= self.epochs
        for param in self.params:
            param.requires_grad_(not frozen)
        return sum(p.numel() for p in self.params) if frozen else 0

    def release(self) -> None:
        for param in self.params:
            param.requires_grad_(True)


def fit(
    state: TrainState,
    train: BatchSource,
    val: BatchSource,
    kinds: Mapping[str, TaskKind],
    device: torch.device,
    *,
    epochs: int,
    patience: int,
    min_delta: float = 0.0,
    prefix: str = "",
    on_epoch_end: EpochCallback | None = None,
    probe: Batch | None = None,
    freeze: Freeze | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    stop: GracefulStop | None = None,
    precision: Precision = FP32,
    channels_last: bool = False,
    group: Group | None = None,
) -> TrainState:
    """Train ``state.model`` (already on ``device``) from ``state.epoch`` up to
    ``epochs``; stop after ``patience`` epochs without a ``val.loss`` lower by more
    than ``min_delta``. Returns ``state`` with the model holding the best weights.

    Metric names take ``prefix`` (``"stl.left."``), so several models can train in one
    MLflow run. With a ``probe`` batch, each epoch also records the cosines between the
    tasks' gradients on the shared parameters (``grad_cos.<a>.<b>``). With ``freeze``,
    its parameters stay frozen in its first epochs (``transfer.frozen_parameters``
    records how many values were frozen in each epoch). ``on_checkpoint`` receives the
    state dict (:meth:`TrainState.state_dict`) after every epoch (to save it: a resume continues from there); with ``stop``,
    a stop request ends training after the current step (:class:`TrainingStopped`).
    ``precision``, ``channels_last`` and ``group``: see :func:`train_one_epoch` (the
    gradient scaler, for fp16, is ``state.scaler``); with a ``group``, a stop request
    reaches this worker through the steps' all-reduce.
    """
    model, strategy = state.model, state.strategy
    state.hold_last()  # continue from the last epoch, not from the best
    while state.epoch < epochs and not state.stopped_early:
        epoch = state.epoch + 1
        tick = time.perf_counter()
        frozen = freeze.apply(epoch) if freeze is not None else None
        train_metrics = train_one_epoch(model, train, kinds, strategy, state.optimizer, device,
                                        epoch=epoch, desc=f"{prefix}epoch {epoch}/{epochs}",
                                        stop=stop, precision=precision, scaler=state.scaler,
                                        channels_last=channels_last, group=group)  # fmt: skip
        weights = {
            k: train_metrics.pop(k)
            for k in list(train_metrics)
            if k.startswith("weight.")
        }
        if group is not None:  # every worker validates with the first one's statistics
            group.broadcast_buffers(model)
        val_metrics = evaluate(model, val, kinds, device, epoch=epoch, precision=precision,
                               channels_last=channels_last, group=group)  # fmt: skip
        record: dict[str, Any] = {"epoch": epoch}
        record |= {f"{prefix}train.{k}": v for k, v in train_metrics.items()}
        record |= {f"{prefix}val.{k}": v for k, v in val_metrics.items()}
        record |= {f"{prefix}{k}": v for k, v in weights.items()}
        if frozen is not None:
            record[f"{prefix}transfer.frozen_parameters"] = frozen
        record[f"{prefix}epoch_seconds"] = time.perf_counter() - tick
        if probe is not None:
            cosines = gradient_cosines(model, probe, kinds, device)
            record |= {f"{prefix}{k}": v for k, v in cosines.items()}
        strategy.on_epoch_end(epoch)
        state.end_epoch(record, val_metrics["loss"], min_delta, patience, train)
        logger.info(
            "%sepoch %d/%d  train.loss %.4f  val.loss %.4f  %s  (%.1fs)",
            prefix, epoch, epochs, train_metrics["loss"], val_metrics["loss"],
            "  ".join(f"val.{t}.accuracy {val_metrics[f'{t}.accuracy']:.4f}"
                      for t in kinds if f"{t}.accuracy" in val_metrics),
            record[f"{prefix}epoch_seconds"],
        )  # fmt: skip
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
        if on_checkpoint is not None:  # everything a resume needs, after each epoch
            on_checkpoint(state.state_dict())
        if stop is not None and stop.requested:  # asked during validation or saving
            raise TrainingStopped(
                f"training stopped by {stop.requested} after epoch {epoch}"
            )
        if state.stopped_early:
            logger.info(
                "%searly stopping: no better val.loss for %d epochs", prefix, patience
            )
    if freeze is not None:
        freeze.release()
    state.hold_best()
    return state
