"""The task spec and the task kinds: a leaf module that models, training, evaluation
and the configuration all import, and that imports none of them.

A task kind owns everything that differs between kinds of task: the head's width, the
loss (masked, over labelled rows only), the prediction, the running metrics of the
training loop, the test metrics and the check of its labels. Adding a kind is one
class here.

Labels follow the data contract: ``int64`` class ids for classification (``-1`` =
missing), ``float32`` for regression (NaN = missing).
"""

from __future__ import annotations

import keyword
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    root_mean_squared_error,
)

from multitask_cnn.errors import UserError
from multitask_cnn.registry import Registry

__all__ = [
    "RESERVED_TASK_NAMES",
    "TASK_KINDS",
    "LabelError",
    "TaskKind",
    "TaskSpec",
    "check_labels",
    "check_task_name",
    "kinds_of",
]

# Metric names are "<split>.<task>.<metric>" next to "<split>.loss" and "weight.<task>":
# a task may not take a name those already use.
RESERVED_TASK_NAMES = frozenset(
    {"loss", "objective", "epoch", "epoch_seconds", "weight"}
)

Sums = tuple[
    torch.Tensor, torch.Tensor
]  # (sum over labelled rows, labelled rows), on device

TASK_KINDS: Registry[TaskKind] = Registry("task kind")


class LabelError(UserError, ValueError):
    """Labels that do not fit the task spec; the message names task, split and row."""


class TaskSpec(BaseModel):
    """One task: what it predicts and how its head and loss are built."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str  # a name in TASK_KINDS: multiclass | binary | regression
    num_classes: PositiveInt | None = None  # multiclass only (>= 2)
    loss_weight: PositiveFloat = 1.0  # used by the `static` weighting
    source: str = "multifashion"  # data source that provides this task's labels
    label: str | None = None  # label name in the source; None: the task name
    head_hidden: list[PositiveInt] = Field(default_factory=list)  # hidden FC widths
    class_names: list[str] | None = None  # for reports; None: the source's names

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        return TASK_KINDS.check(kind)

    @model_validator(mode="after")
    def _fits_kind(self) -> TaskSpec:
        self.task_kind.check_spec(self)
        return self

    @property
    def task_kind(self) -> TaskKind:
        return TASK_KINDS.get(self.kind)

    @property
    def out_features(self) -> int:
        return self.task_kind.out_features(self)

    @property
    def n_classes(self) -> int | None:
        """Classes a classification task tells apart (2 for binary); None for regression."""
        return self.task_kind.n_classes(self)

    def label_name(self, task: str) -> str:
        return self.label or task

    def display_classes(self, source_names: Sequence[str] | None = None) -> list[str]:
        """Class names for reports: ``class_names``, else ``source_names`` when they fit,
        else the class ids."""
        if self.n_classes is None:
            return []
        if self.class_names is not None:
            return list(self.class_names)
        if source_names is not None and len(source_names) == self.n_classes:
            return list(source_names)
        return [str(i) for i in range(self.n_classes)]


def check_task_name(name: str) -> str:
    """A task name becomes part of metric names: an identifier, not a reserved word."""
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(
            f"task name {name!r} is not an identifier (letters, digits, _; no dots or spaces)"
        )
    if name in RESERVED_TASK_NAMES:
        raise ValueError(
            f"task name {name!r} is reserved for metric names; "
            f"avoid {sorted(RESERVED_TASK_NAMES)}"
        )
    return name


def _masked_sum(per_row: torch.Tensor, mask: torch.Tensor) -> Sums:
    # torch.where, not multiplication: a NaN in a masked row must not leak (NaN * 0 = NaN)
    return torch.where(mask, per_row, 0.0).sum(), mask.sum()


def _first_bad_row(bad: torch.Tensor) -> int | None:
    rows = bad.nonzero()
    return int(rows[0]) if len(rows) else None


class TaskKind:
    """Base class of the task kinds; subclasses are registered in :data:`TASK_KINDS`."""

    name: str = ""
    is_classifier: bool = True
    lower_is_better: frozenset[str] = frozenset()  # test metrics where less is better

    def check_spec(self, spec: TaskSpec) -> None:
        """Raise :class:`ValueError` when ``spec`` does not fit this kind."""

    def out_features(self, spec: TaskSpec) -> int:
        return 1

    def n_classes(self, spec: TaskSpec) -> int | None:
        return None

    def mask(self, target: torch.Tensor) -> torch.Tensor:
        """Rows that carry a label."""
        return target >= 0

    def loss_sums(self, output: torch.Tensor, target: torch.Tensor) -> Sums:
        """Summed per-row loss over labelled rows and their count (no host sync)."""
        raise NotImplementedError

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss over labelled rows (0 when none is labelled)."""
        total, count = self.loss_sums(output, target)
        return total / count.clamp(min=1)

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def probabilities(self, output: torch.Tensor) -> torch.Tensor | None:
        """``(N, n_classes)`` class probabilities of a classifier; None for regression."""
        return None

    def running_sums(
        self, output: torch.Tensor, target: torch.Tensor
    ) -> dict[str, Sums]:
        """Metrics the training loop accumulates on the device (``accuracy``, ``mae``)."""
        mask = self.mask(target)
        correct = self.predict(output) == target
        return {"accuracy": _masked_sum(correct.float(), mask)}

    def metrics(
        self, y_true: np.ndarray, y_pred: np.ndarray, spec: TaskSpec
    ) -> dict[str, float]:
        """Test metrics on labelled rows (scikit-learn)."""
        classes = list(range(self.n_classes(spec) or 0))
        return {
            "accuracy": float(accuracy_score(y_true, y_pred)),
            "f1_macro": float(
                f1_score(
                    y_true, y_pred, labels=classes, average="macro", zero_division=0
                )
            ),
        }

    def check_labels(
        self, task: str, spec: TaskSpec, labels: torch.Tensor, where: str
    ) -> None:
        """Raise :class:`LabelError` naming the row when ``labels`` cannot train ``spec``."""
        if labels.is_floating_point():
            raise LabelError(
                f"task {task!r} ({self.name}): {where} labels are {labels.dtype}, "
                "expected integer class ids (-1 = missing)"
            )
        n = self.n_classes(spec)
        bad = (labels < -1) | (labels >= n)
        row = _first_bad_row(bad)
        if row is not None:
            raise LabelError(
                f"task {task!r} ({self.name}, {n} classes): {where} row {row} has label "
                f"{int(labels[row])}; labels must be 0..{n - 1} or -1 (missing). "
                + self._fix_hint(int(labels.max()))
            )

    def _fix_hint(self, largest: int) -> str:
        return f"Set num_classes to at least {largest + 1}."


def _register(cls: type[TaskKind]) -> type[TaskKind]:
    """Register one (stateless) instance of a kind under its ``name``."""
    TASK_KINDS.register(cls.name)(cls())
    return cls


@_register
class Multiclass(TaskKind):
    """One of ``num_classes`` classes; softmax cross-entropy on the logits."""

    name = "multiclass"

    def check_spec(self, spec: TaskSpec) -> None:
        if (spec.num_classes or 0) < 2:
            raise ValueError("a multiclass task needs num_classes >= 2")
        if spec.class_names is not None and len(spec.class_names) != spec.num_classes:
            raise ValueError(
                f"class_names has {len(spec.class_names)} names, expected {spec.num_classes}"
            )

    def out_features(self, spec: TaskSpec) -> int:
        return spec.num_classes

    def n_classes(self, spec: TaskSpec) -> int:
        return spec.num_classes

    def loss_sums(self, output: torch.Tensor, target: torch.Tensor) -> Sums:
        mask = self.mask(target)
        safe = torch.where(
            mask.unsqueeze(1), output, 0.0
        )  # no NaN from unlabelled rows
        # unlabelled rows (-1) are ignored: they add nothing to the sum, and no gradient
        total = F.cross_entropy(safe, target, ignore_index=-1, reduction="sum")
        return total, mask.sum()

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        return output.argmax(dim=1)

    def probabilities(self, output: torch.Tensor) -> torch.Tensor:
        return output.softmax(dim=1)


@_register
class Binary(TaskKind):
    """Yes or no; one logit, binary cross-entropy. Labels 0 / 1 (-1 = missing)."""

    name = "binary"

    def check_spec(self, spec: TaskSpec) -> None:
        if spec.num_classes not in (None, 2):
            raise ValueError("a binary task has two classes; drop num_classes")
        if spec.class_names is not None and len(spec.class_names) != 2:
            raise ValueError(
                f"class_names has {len(spec.class_names)} names, expected 2"
            )

    def n_classes(self, spec: TaskSpec) -> int:
        return 2

    def loss_sums(self, output: torch.Tensor, target: torch.Tensor) -> Sums:
        mask = self.mask(target)
        safe = torch.where(mask, output, 0.0)
        per_row = F.binary_cross_entropy_with_logits(
            safe, target.clamp(min=0).to(output.dtype), reduction="none"
        )
        return _masked_sum(per_row, mask)

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        return (output > 0).long()

    def probabilities(self, output: torch.Tensor) -> torch.Tensor:
        yes = output.sigmoid().reshape(-1)
        return torch.stack([1 - yes, yes], dim=1)

    def _fix_hint(self, largest: int) -> str:
        return f"Labels go up to {largest}: use kind: multiclass with num_classes: {largest + 1}."


@_register
class Regression(TaskKind):
    """A real value; mean squared error on targets standardised with the train split's
    mean and std; test metrics (MAE, RMSE) in original units. Labels float (NaN =
    missing)."""

    name = "regression"
    is_classifier = False
    lower_is_better = frozenset({"mae", "rmse"})

    def check_spec(self, spec: TaskSpec) -> None:
        if spec.num_classes is not None:
            raise ValueError("a regression task has one output; drop num_classes")
        if spec.class_names is not None:
            raise ValueError("a regression task has no classes; drop class_names")

    def mask(self, target: torch.Tensor) -> torch.Tensor:
        return ~torch.isnan(target)

    def loss_sums(self, output: torch.Tensor, target: torch.Tensor) -> Sums:
        mask = self.mask(target)
        diff = torch.where(mask, output, 0.0) - torch.where(mask, target, 0.0)
        return _masked_sum(diff.square(), mask)

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        return output

    def running_sums(
        self, output: torch.Tensor, target: torch.Tensor
    ) -> dict[str, Sums]:
        mask = self.mask(target)
        diff = torch.where(mask, output, 0.0) - torch.where(mask, target, 0.0)
        return {"mae": _masked_sum(diff.abs(), mask)}

    def metrics(
        self, y_true: np.ndarray, y_pred: np.ndarray, spec: TaskSpec
    ) -> dict[str, float]:
        return {
            "mae": float(mean_absolute_error(y_true, y_pred)),
            "rmse": float(root_mean_squared_error(y_true, y_pred)),
        }

    def check_labels(
        self, task: str, spec: TaskSpec, labels: torch.Tensor, where: str
    ) -> None:
        if not labels.is_floating_point():
            raise LabelError(
                f"task {task!r} (regression): {where} labels are {labels.dtype}, "
                "expected float values (NaN = missing); to predict class ids use "
                "kind: multiclass"
            )


def kinds_of(specs: Mapping[str, TaskSpec]) -> dict[str, TaskKind]:
    """``{task: its TaskKind}``."""
    return {task: spec.task_kind for task, spec in specs.items()}


def check_labels(
    specs: Mapping[str, TaskSpec], labels: Mapping[str, torch.Tensor], where: str
) -> None:
    """Check every task's labels (``labels[task]``) against its spec, before training."""
    for task, spec in specs.items():
        spec.task_kind.check_labels(task, spec, labels[task], where)
