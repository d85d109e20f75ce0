"""Batch sources: what ``train_one_epoch`` and ``evaluate`` iterate over.

A source yields :class:`Batch` objects (images, per-task labels, and which rows belong
to which task) and can save and restore its data order. Today's source holds tensors
in memory; a data-on-device source, a fused multi-dataset source (one concatenated
batch per step), a decoded-image DataLoader or a per-rank shard are each one more
small class with the same three methods.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch

__all__ = ["Batch", "BatchSource", "InMemorySource", "Split"]


@dataclass(frozen=True)
class Batch:
    """One step's data.

    ``rows[task]`` is the slice of rows that carry ``task`` (a fused batch stacks one
    block per source); ``None`` means every row carries every task.
    """

    images: torch.Tensor  # (B, C, H, W)
    labels: Mapping[str, torch.Tensor]  # task -> (B_task,)
    rows: Mapping[str, slice] | None = None

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.images.to(device, non_blocking=True),
            {t: y.to(device, non_blocking=True) for t, y in self.labels.items()},
            self.rows,
        )

    def task_rows(self, task: str, values: torch.Tensor) -> torch.Tensor:
        """The rows of ``values`` (aligned with ``images``) that belong to ``task``."""
        return values if self.rows is None else values[self.rows[task]]


class BatchSource(Protocol):
    """An iterable of batches with a known length and a resumable data order."""

    def __iter__(self) -> Iterator[Batch]: ...

    def __len__(self) -> int: ...  # batches per pass

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class Split:
    """Images ``(N, C, H, W)`` float32 and one label tensor ``(N,)`` per task."""

    images: torch.Tensor
    labels: Mapping[str, torch.Tensor]

    @classmethod
    def from_model_input(
        cls, data: Mapping[str, Any], label_of: Mapping[str, str]
    ) -> Split:
        """Pick each task's labels (``label_of[task]``) from a model-input dict."""
        missing = {
            t: name for t, name in label_of.items() if name not in data["labels"]
        }
        if missing:
            raise ValueError(
                f"model input has no labels {missing} (task: label); it has "
                f"{sorted(data['labels'])}: rerun data_prep, or fix the tasks' `label:`"
            )
        return cls(
            data["images"], {t: data["labels"][name] for t, name in label_of.items()}
        )

    def __len__(self) -> int:
        return len(self.images)


class InMemorySource:
    """Mini-batches of a :class:`Split` held in memory; shuffled each pass when
    ``seed`` is given (the data order is then part of :meth:`state_dict`)."""

    def __init__(self, split: Split, batch_size: int, seed: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.split = split
        self.batch_size = batch_size
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.split) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.split)
        order = (
            None
            if self.generator is None
            else torch.randperm(n, generator=self.generator)
        )
        for start in range(0, n, self.batch_size):
            index = (
                slice(start, start + self.batch_size)
                if order is None
                else order[start : start + self.batch_size]
            )
            yield Batch(
                self.split.images[index],
                {t: y[index] for t, y in self.split.labels.items()},
            )

    def state_dict(self) -> dict[str, Any]:
        return (
            {} if self.generator is None else {"generator": self.generator.get_state()}
        )

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"])
