"""Batch sources: what ``train_one_epoch`` and ``evaluate`` iterate over.

A source yields :class:`Batch` objects (images, per-task labels, and which rows belong
to which task) and can save and restore its data order. :class:`InMemorySource` draws
mini-batches from one :class:`Split`; :class:`FusedSource` (task fusion) draws one
mini-batch from each data source per step and concatenates them, so the shared stages
see every source in one forward pass; :class:`ChainedSource` goes through several
sources one after the other (validation and test: each task on its own source).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from multitask_cnn.errors import DataFileError
from multitask_cnn.tasks import TaskSpec

__all__ = [
    "Batch",
    "BatchSource",
    "ChainedSource",
    "FusedSource",
    "InMemorySource",
    "Split",
    "fuse",
    "in_turn",
    "labelled_counts",
    "task_splits",
    "used_stats",
]


@dataclass(frozen=True)
class Batch:
    """One step's data.

    ``labels`` holds the tasks this batch carries; ``rows[task]`` is the slice of rows
    that belong to ``task`` (a fused batch stacks one block per source). Without
    ``rows`` every row belongs to every task in ``labels``.
    """

    images: torch.Tensor  # (B, C, H, W) float32, normalised
    labels: Mapping[str, torch.Tensor]  # task -> (rows of that task,)
    blocks: Mapping[str, slice] | None = None

    @property
    def rows(self) -> dict[str, slice]:
        """``{task: its rows}`` for every task the batch carries."""
        if self.blocks is not None:
            return dict(self.blocks)
        return {task: slice(None) for task in self.labels}

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.images.to(device, non_blocking=True),
            {t: y.to(device, non_blocking=True) for t, y in self.labels.items()},
            self.blocks,
        )


def fuse(batches: Sequence[Batch]) -> Batch:
    """Concatenate batches of different sources (disjoint tasks) along the batch axis;
    each task keeps the block of rows its source contributed."""
    if len(batches) == 1:
        return batches[0]
    blocks, labels, start = {}, {}, 0
    for batch in batches:
        end = start + len(batch.images)
        for task, rows in batch.rows.items():
            if task in labels:
                raise ValueError(f"task {task!r} comes from two fused sources")
            first, last, _ = rows.indices(end - start)
            blocks[task] = slice(start + first, start + last)
            labels[task] = batch.labels[task]
        start = end
    return Batch(torch.cat([b.images for b in batches]), labels, blocks)


class BatchSource(Protocol):
    """An iterable of batches with a known length and a resumable data order."""

    def __iter__(self) -> Iterator[Batch]: ...

    def __len__(self) -> int: ...  # batches per pass

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class Split:
    """Images ``(N, C, H, W)`` and one label tensor ``(N,)`` per task.

    Images are either ``uint8`` pixels, normalised batch by batch with ``mean`` and
    ``std`` (of pixels scaled to [0, 1]; the model input keeps a quarter of the
    memory), or float32 that is already normalised. ``target_scaling[task]`` is the
    ``(mean, std)`` a regression task's labels were standardised with.
    """

    images: torch.Tensor | np.ndarray
    labels: Mapping[str, torch.Tensor]
    mean: float = 0.0
    std: float = 1.0
    target_scaling: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        wrong = {t: len(y) for t, y in self.labels.items() if len(y) != len(self)}
        if wrong:
            raise ValueError(
                f"{len(self)} images but label lengths {wrong} (task: rows)"
            )
        if not self.std > 0:
            raise ValueError(f"std must be positive, got {self.std}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def images_at(self, index: slice | torch.Tensor) -> torch.Tensor:
        """The images of ``index`` as normalised float32 ``(B, C, H, W)``."""
        images = self.images
        if isinstance(images, np.ndarray):  # e.g. a memory-mapped cache
            rows = index if isinstance(index, slice) else np.sort(index.numpy())
            picked = torch.from_numpy(np.array(images[rows]))  # a copy, writable
            if not isinstance(index, slice):  # back to the requested order
                picked = picked[torch.from_numpy(np.argsort(np.argsort(index.numpy())))]
        else:
            picked = images[index]
        if picked.dtype == torch.uint8:
            return picked.float().div_(255.0).sub_(self.mean).div_(self.std)
        return picked

    def batch(self, index: slice | torch.Tensor) -> Batch:
        return Batch(
            self.images_at(index), {t: y[index] for t, y in self.labels.items()}
        )

    def subset(self, rows: torch.Tensor | slice) -> Split:
        """The rows ``rows`` of this split (same normalisation)."""
        images = self.images[rows.numpy() if isinstance(self.images, np.ndarray)
                             and isinstance(rows, torch.Tensor) else rows]  # fmt: skip
        return Split(images, {t: y[rows] for t, y in self.labels.items()},
                     self.mean, self.std, self.target_scaling)  # fmt: skip

    def only(self, tasks: Iterable[str]) -> Split:
        """This split with the labels (and target scaling) of ``tasks`` only."""
        keep = set(tasks)
        return Split(self.images, {t: y for t, y in self.labels.items() if t in keep},
                     self.mean, self.std,
                     {t: v for t, v in self.target_scaling.items() if t in keep})  # fmt: skip

    def unscale(self, task: str, values: torch.Tensor) -> torch.Tensor:
        """A regression task's values (labels or predictions) in original units."""
        if task not in self.target_scaling:
            return values
        mean, std = self.target_scaling[task]
        return values * std + mean


def task_splits(
    model_input: Mapping[str, Any],
    normalisation: Mapping[str, Any],
    specs: Mapping[str, TaskSpec],
    where: str = "",
) -> dict[str, Split]:
    """``{source: Split}`` with the labels of ``specs``' tasks of each source.

    ``model_input`` is one split of data_prep's output (``{source: {"images",
    "labels"}}``), ``normalisation`` its statistics per source (pixels, and each
    regression label's train mean and std, with which its labels are standardised).
    Sources appear in the order of their first task in ``specs``. Labels are checked
    against the task spec first (:class:`~multitask_cnn.tasks.LabelError` names task,
    split, source and row).
    """
    splits: dict[str, Split] = {}
    for source in dict.fromkeys(spec.source for spec in specs.values()):
        for name, found in (
            ("model input has", model_input),
            ("normalisation statistics have", normalisation),
        ):
            if source not in found:
                raise DataFileError(
                    f"the {where + ' ' if where else ''}{name} no source {source!r} "
                    f"(only {sorted(found)}): rerun data_prep (`kedro run --pipelines data_prep`)"
                )
        data, stats = model_input[source], normalisation[source]
        labels, scaling = {}, {}
        for task, spec in specs.items():
            if spec.source != source:
                continue
            name = spec.label_name(task)
            if name not in data["labels"]:
                raise DataFileError(
                    f"task {task!r}: source {source!r} has no label {name!r} in the model "
                    f"input; it has {sorted(data['labels'])}: rerun data_prep, or fix "
                    "the task's `label:`"
                )
            values = data["labels"][name]
            spec.task_kind.check_labels(task, spec, values, f"{where} {source}".strip())
            target = stats.get("targets", {}).get(name)
            if not spec.task_kind.is_classifier and target is not None:
                scaling[task] = (float(target["mean"]), float(target["std"]))
                values = (values - scaling[task][0]) / scaling[task][1]
            labels[task] = values
        splits[source] = Split(data["images"], labels, float(stats["mean"]),
                               float(stats["std"]), scaling)  # fmt: skip
    shapes = {source: split.image_shape for source, split in splits.items()}
    if len(set(shapes.values())) > 1:
        raise DataFileError(
            f"the tasks' sources have images of different shapes {shapes} (C, H, W); "
            "one model needs one shape: set the manifest's channels and size like the "
            "canvas (data_prep.canvas_size)"
        )
    return splits


def used_stats(
    normalisation: Mapping[str, Any], specs: Mapping[str, TaskSpec]
) -> dict[str, dict[str, Any]]:
    """The statistics a model of ``specs`` depends on: those of its sources, with the
    target statistics of the labels its tasks read (another label's do not matter)."""
    used: dict[str, dict[str, Any]] = {}
    for task, spec in specs.items():
        stats = normalisation[spec.source]
        # (not the data_prep build: data the model never reads changes it)
        entry = used.setdefault(spec.source, {k: v for k, v in stats.items()
                                              if k not in ("targets", "build")}
                                | {"targets": {}})  # fmt: skip
        target = stats.get("targets", {}).get(spec.label_name(task))
        if target is not None and not spec.task_kind.is_classifier:
            entry["targets"][spec.label_name(task)] = dict(target)
    return used


def labelled_counts(
    specs: Mapping[str, TaskSpec], splits: Mapping[str, Mapping[str, Split]]
) -> dict[str, dict[str, int]]:
    """``{task: {split: rows that carry the task's label}}`` of ``{split: {source:
    Split}}`` (what :func:`task_splits` returns, per split)."""
    counts: dict[str, dict[str, int]] = {task: {} for task in specs}
    for split, by_source in splits.items():
        for part in by_source.values():
            for task, labels in part.labels.items():
                counts[task][split] = int(specs[task].task_kind.mask(labels).sum())
    return counts


class InMemorySource:
    """Mini-batches of a :class:`Split`; shuffled each pass when ``seed`` is given
    (the data order is then part of :meth:`state_dict`)."""

    def __init__(self, split: Split, batch_size: int, seed: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.split = split
        self.batch_size = batch_size
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)
        self.pass_state: Any = None  # the generator's state when the current pass began
        self.position = len(split)  # rows of the current pass handed out

    def __len__(self) -> int:
        return -(-len(self.split) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        return self.iterate()

    def iterate(self, pass_state: Any = None, start: int = 0) -> Iterator[Batch]:
        """One pass from row ``start``; ``pass_state`` (the generator's state when the
        pass began) draws that pass's order again, to finish a pass left unfinished."""
        n = len(self.split)
        order = None
        if self.generator is not None:
            if pass_state is not None:
                self.generator.set_state(pass_state)
            self.pass_state = self.generator.get_state()
            order = torch.randperm(n, generator=self.generator)
        for begin in range(start, n, self.batch_size):
            self.position = begin + self.batch_size
            index = (
                slice(begin, begin + self.batch_size)
                if order is None
                else order[begin : begin + self.batch_size]
            )
            yield self.split.batch(index)

    def state_dict(self) -> dict[str, Any]:
        return (
            {} if self.generator is None else {"generator": self.generator.get_state()}
        )

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"])


class FusedSource:
    """Task fusion: each step takes one mini-batch from every source and concatenates
    them (:func:`fuse`).

    ``steps`` defines an epoch: ``"largest"`` runs as many steps as the source with the
    most batches has (smaller sources start a new shuffled pass when they run out),
    ``"smallest"`` as many as the one with the fewest, an integer that many steps.
    """

    def __init__(
        self, sources: Mapping[str, InMemorySource], steps: str | int = "largest"
    ) -> None:
        if not sources:
            raise ValueError("FusedSource needs at least one source")
        lengths = [len(s) for s in sources.values()]
        if steps == "largest":
            self.steps = max(lengths)
        elif steps == "smallest":
            self.steps = min(lengths)
        elif isinstance(steps, int) and steps >= 1:
            self.steps = steps
        else:
            raise ValueError(
                f"steps must be 'largest', 'smallest' or a positive integer, got {steps!r}"
            )
        self.sources = dict(sources)
        self._iterators: dict[str, Iterator[Batch]] = {}

    def __len__(self) -> int:
        return self.steps

    def _next(self, name: str) -> Batch:
        """The next batch of ``name``; a new pass when its last one ran out (a pass
        left unfinished at the end of an epoch carries on in the next)."""
        iterator = self._iterators.get(name)
        if iterator is not None:
            batch = next(iterator, None)
            if batch is not None:
                return batch
        self._iterators[name] = iter(self.sources[name])
        return next(self._iterators[name])

    def __iter__(self) -> Iterator[Batch]:
        for _ in range(self.steps):
            yield fuse([self._next(name) for name in self.sources])

    def state_dict(self) -> dict[str, Any]:
        """Each source's generator and, for a pass left unfinished at the end of an
        epoch, where it stands (the next epoch carries on with it)."""
        state = {}
        for name, source in self.sources.items():
            state[name] = source.state_dict()
            unfinished = name in self._iterators and source.position < len(source.split)
            if unfinished and source.generator is not None:
                state[name] |= {"pass": source.pass_state, "position": source.position}
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._iterators = {}
        for name, source in self.sources.items():
            saved = state.get(name, {})
            source.load_state_dict(saved)
            if "pass" in saved:
                after = source.generator.get_state()
                self._iterators[name] = _then_restore(
                    source.iterate(saved["pass"], saved["position"]), source, after
                )


def _then_restore(
    batches: Iterator[Batch], source: InMemorySource, state: Any
) -> Iterator[Batch]:
    """The rest of a resumed pass; once its order is drawn again, the generator goes
    back to where the saved state left it."""
    first = True
    for batch in batches:
        if first:
            source.generator.set_state(state)
            first = False
        yield batch


class ChainedSource:
    """Every batch of each source in turn (no shuffling of the order of sources)."""

    def __init__(self, sources: Sequence[InMemorySource]) -> None:
        self.sources = list(sources)

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources)

    def __iter__(self) -> Iterator[Batch]:
        return itertools.chain.from_iterable(self.sources)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


def in_turn(splits: Mapping[str, Split], batch_size: int) -> BatchSource:
    """Unshuffled batches of each split in turn (validation and test: each task on its
    own source's rows)."""
    sources = [InMemorySource(split, batch_size) for split in splits.values()]
    return sources[0] if len(sources) == 1 else ChainedSource(sources)
