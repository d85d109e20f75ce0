"""The multi-task checkpoint: its format, and the checks before it is used.

A checkpoint describes itself (see the ``multitask_training`` node): weights, best
epoch, the effective configuration, the normalisation statistics, fingerprints of its
training data and its provenance. Before evaluating it, :func:`check_checkpoint`
refuses one that was trained for other tasks or on differently normalised data.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from multitask_cnn.errors import DataFileError, UserError
from multitask_cnn.tasks import TaskSpec

__all__ = [
    "CHECKPOINT_FORMAT",
    "load_weights_only",
    "build_checkpoint",
    "CheckpointMismatchError",
    "check_checkpoint",
    "describe_checkpoint",
    "task_differences",
]

CHECKPOINT_FORMAT = 3  # 2: one data source; 1: before the checkpoint described itself
_COMPARED = ("kind", "num_classes", "source", "label")


_FIX = (
    "rerun the pipeline that writes it, or point its catalog entry or parameter at the "
    "right file"
)


def load_weights_only(path: str | os.PathLike[str], fix: str = _FIX) -> Any:
    """What ``torch.save`` wrote to ``path``, loaded onto the CPU with
    ``weights_only=True`` (tensors, numbers, strings and containers; nothing that could
    run code). A file that is not one, or holds other objects, raises
    :class:`DataFileError` naming it, and ``fix``: what to do about it. An error of
    the file system or of memory is left as it is."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (MemoryError, OSError):
        raise
    except Exception as error:  # noqa: BLE001 - pickle, zip and torch errors alike
        text = str(error)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if found:  # pickled objects: refused, not run
            raise DataFileError(
                f"{path} holds Python objects other than tensors, numbers and "
                f"containers ({found.group(1)}); refused (weights_only=True: loading it "
                f"could run code). Save tensors and plain dicts with torch.save; {fix}"
            ) from None
        reason = text.partition("WeightsUnpickler error:")[2].strip() or text
        reason = (reason or type(error).__name__).splitlines()[0][:200]
        raise DataFileError(
            f"{path} is not a file torch.save wrote, or it is damaged ({reason}); {fix}"
        ) from None


class CheckpointMismatchError(UserError, ValueError):
    """The checkpoint does not fit the current task spec or data; the message says how."""


def task_differences(
    current: Mapping[str, TaskSpec], trained: Mapping[str, TaskSpec]
) -> list[str]:
    """What differs between two task specs in what a trained head depends on."""
    problems = [f"task {t!r} is in the spec but not in the checkpoint"
                for t in sorted(set(current) - set(trained))]  # fmt: skip
    problems += [f"task {t!r} is in the checkpoint but not in the spec"
                 for t in sorted(set(trained) - set(current))]  # fmt: skip
    for task in sorted(set(current) & set(trained)):
        for key in _COMPARED:
            now, then = (
                spec.label_name(task) if key == "label" else getattr(spec, key)
                for spec in (current[task], trained[task])
            )
            if now != then:
                problems.append(
                    f"task {task!r}: {key} is {now!r} in the spec, {then!r} in the checkpoint"
                )
    return problems


def check_checkpoint(
    checkpoint: Mapping[str, Any],
    specs: Mapping[str, TaskSpec],
    normalisation: Mapping[str, Any] | None = None,
) -> dict[str, TaskSpec]:
    """Refuse a checkpoint of another format, trained for other tasks (kinds, classes,
    labels), or on data normalised otherwise than ``normalisation``; naming each
    difference. Returns the task spec it was trained with (heads are built from it)."""
    version = (checkpoint.get("format_version")
               if isinstance(checkpoint, Mapping) else None)  # fmt: skip
    if version != CHECKPOINT_FORMAT:
        raise CheckpointMismatchError(
            f"checkpoint format {version!r} is not {CHECKPOINT_FORMAT}; it was written by "
            "another version of this project: retrain with `kedro run`"
        )
    trained = {
        task: TaskSpec(**spec) for task, spec in checkpoint["config"]["tasks"].items()
    }
    problems = task_differences(specs, trained)
    if normalisation is not None:
        problems += _normalisation_differences(
            normalisation, checkpoint["normalisation"]
        )
    if problems:
        raise CheckpointMismatchError(
            "the checkpoint does not match the current spec and data:\n  - "
            + "\n  - ".join(problems)
            + "\nRetrain (`kedro run`), or restore the settings it was trained with."
        )
    return trained


def _normalisation_differences(
    now: Mapping[str, Any], then: Mapping[str, Any]
) -> list[str]:
    """How the data's per-source statistics (pixels, regression targets) differ from
    those the model was trained with."""
    problems = []
    for source, trained in then.items():
        if source not in now:
            problems.append(
                f"the model was trained on source {source!r}, which the data lacks"
            )
            continue
        pairs = [
            ("", key, now[source].get(key), trained[key]) for key in ("mean", "std")
        ]
        for label, target in trained.get("targets", {}).items():
            current = now[source].get("targets", {}).get(label, {})
            pairs += [(f" label {label!r}", key, current.get(key), target[key])
                      for key in ("mean", "std")]  # fmt: skip
        for what, key, value, value_then in pairs:
            if value is None or not math.isclose(value, value_then, rel_tol=1e-9):
                shown = "none" if value is None else f"{value:.6g}"
                problems.append(
                    f"source {source!r}{what}: the data is normalised with {key} {shown}, "
                    f"the model was trained with {value_then:.6g} (data_prep settings "
                    "changed since)"
                )
    return problems


def build_checkpoint(
    model: nn.Module,
    *,
    best_epoch: int,
    best_loss: float,
    config: Mapping[str, Any],
    normalisation: Mapping[str, Any],
    input_fingerprint: Mapping[str, str],
    provenance: Mapping[str, Any],
    strategy: Mapping[str, Any] | None = None,
    labelled: Mapping[str, Any] | None = None,
    train_seconds: float | None = None,
    train_peak_memory: tuple[float | None, str | None] = (None, None),
) -> dict[str, Any]:
    """The self-describing checkpoint of ``model`` (its current weights: the best
    epoch's after ``fit``); ``config`` holds the effective tasks, model and training,
    ``strategy`` the loss-balancing strategy's state (learned task weights, ...),
    ``normalisation`` the statistics of each data source it read (pixels, regression
    targets), ``labelled`` each task's labelled rows per split."""
    return {
        "format_version": CHECKPOINT_FORMAT,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "epoch": best_epoch,
        "val_loss": best_loss,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "config": dict(config),
        "normalisation": dict(normalisation),
        "input_fingerprint": dict(input_fingerprint),
        "provenance": dict(provenance),
        "strategy": dict(strategy or {}),
        "labelled": dict(labelled or {}),
        "train_seconds": train_seconds,  # wall time of its training epochs
        # peak memory of its training (MiB) and how it was measured (training/memory.py)
        "train_peak_memory_mb": train_peak_memory[0],
        "train_peak_memory_method": train_peak_memory[1],
    }


def describe_checkpoint(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """Which checkpoint this is: the run and commit that trained it, its best epoch and
    the fingerprints of its training data."""
    return {
        "provenance": dict(checkpoint.get("provenance", {})),
        "epoch": checkpoint.get("epoch"),
        "input_fingerprint": dict(checkpoint.get("input_fingerprint", {})),
    }
