"""Typed, validated configuration.

Parameters reach nodes as plain dicts (so kedro-mlflow logs them flattened); each
node validates its slice here, and :func:`validate_parameters` checks the whole tree
once, before any node runs (see ``hooks.py``). Every model forbids unknown keys, and
errors name the offending key and the file it usually lives in.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from multitask_cnn.data.fashion_mnist import CLASSES as FASHION_MNIST_CLASSES

__all__ = [
    "ConfigError",
    "DataPrepConfig",
    "EvaluationConfig",
    "ModelConfig",
    "ProjectParameters",
    "TaskSpec",
    "TrainingConfig",
    "parse",
    "parse_tasks",
    "validate_parameters",
]

# Where each top-level parameter group is defined, for error messages.
PARAMETER_FILES = {
    "tasks": "conf/base/parameters.yml",
    "data_prep": "conf/base/parameters_data_prep.yml",
    "model": "conf/base/parameters_multitask_training.yml",
    "training": "conf/base/parameters_multitask_training.yml",
    "evaluation": "conf/base/parameters_evaluation.yml",
}

# Labels each built-in data source provides (a task's `label` must be one of them)
# and the class names of those labels.
SOURCE_LABELS = {"multifashion": ("left", "right")}
SOURCE_CLASS_NAMES = {"multifashion": FASHION_MNIST_CLASSES}

M = TypeVar("M", bound="BaseModel")

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _check_device(value: str) -> str:
    if not _DEVICE_PATTERN.match(value):
        raise ValueError(f"{value!r} is not a device; use auto, cpu, cuda, cuda:N or mps")
    return value


Device = Annotated[str, AfterValidator(_check_device)]


class ConfigError(ValueError):
    """Invalid parameters; the message says which key, where, and how to fix it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskSpec(_Strict):
    """One task: what it predicts and how its head and loss are built."""

    kind: Literal["multiclass", "binary", "regression"]
    num_classes: PositiveInt | None = None  # required for multiclass (>= 2)
    loss_weight: PositiveFloat = 1.0  # used by the `static` weighting
    source: str = "multifashion"  # data source that provides this task's labels
    label: str | None = None  # label name in the source; defaults to the task name
    head_hidden: list[PositiveInt] = Field(default_factory=list)  # hidden FC widths
    class_names: list[str] | None = None  # for reports; default: the source's names

    @model_validator(mode="after")
    def _check_classes(self) -> TaskSpec:
        if self.kind == "multiclass" and (self.num_classes or 0) < 2:
            raise ValueError("a multiclass task needs num_classes >= 2")
        if self.kind != "multiclass" and self.num_classes not in (None, 1):
            raise ValueError(f"a {self.kind} task has one output; drop num_classes")
        if self.class_names is not None and len(self.class_names) != self.n_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} names, expected {self.n_classes}"
            )
        return self

    @property
    def n_classes(self) -> int:
        """Classes a classification task tells apart (2 for binary)."""
        return self.num_classes if self.kind == "multiclass" else 2

    def display_classes(self) -> list[str]:
        """Class names for reports: ``class_names``, else the source's, else ids."""
        if self.class_names is not None:
            return list(self.class_names)
        names = SOURCE_CLASS_NAMES.get(self.source)
        if self.kind == "multiclass" and names is not None and len(names) == self.n_classes:
            return list(names)
        return [str(i) for i in range(self.n_classes)]

    def label_name(self, task: str) -> str:
        return self.label or task

    @property
    def out_features(self) -> int:
        return self.num_classes if self.kind == "multiclass" else 1


class DataPrepConfig(_Strict):
    """How MultiFashion is built from Fashion-MNIST (Pareto-MTL, Lin et al. 2019)."""

    n_train: PositiveInt = 120_000  # composites drawn from the official train images
    n_test: PositiveInt = 20_000  # composites drawn from the official test images
    val_fraction: float = Field(0.1, gt=0, lt=1)  # carved from train, seeded
    canvas_size: PositiveInt = 36
    max_shift: NonNegativeInt = 4  # each item moves up to this many px inwards
    seed: int = 0


class ModelConfig(_Strict):
    backbone: str = "lenet"  # a name in multitask_cnn.models.BACKBONES
    backbone_args: dict[str, Any] = Field(default_factory=dict)
    shared_stages: NonNegativeInt | None = None  # None: every backbone stage shared


class EarlyStoppingConfig(_Strict):
    patience: PositiveInt = 3  # epochs without improvement of val.loss
    min_delta: NonNegativeFloat = 0.0


class TrainingConfig(_Strict):
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 256
    eval_batch_size: PositiveInt = 1024
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: PositiveFloat = 1e-3
    momentum: NonNegativeFloat = 0.9  # sgd only
    weight_decay: NonNegativeFloat = 0.0
    weighting: str = "equal"  # a name in multitask_cnn.training.WEIGHTINGS
    seed: int = 0
    device: Device = "auto"  # auto | cpu | cuda | cuda:N | mps
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    log_every_epoch: bool = True  # live per-epoch metrics to MLflow

    @field_validator("weighting")
    @classmethod
    def _check_weighting(cls, value: str) -> str:
        from multitask_cnn.training.weighting import WEIGHTINGS

        if value not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {value!r}; choose from {sorted(WEIGHTINGS)}")
        return value


class EvaluationConfig(_Strict):
    batch_size: PositiveInt = 1024
    device: Device = "auto"  # auto | cpu | cuda | cuda:N | mps



class ProjectParameters(_Strict):
    """The whole parameter tree, checked before a run starts."""

    tasks: dict[str, TaskSpec]
    data_prep: DataPrepConfig = Field(default_factory=DataPrepConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    allow_download: bool = False  # read by the `fashion_mnist` catalog entry

    @field_validator("tasks")
    @classmethod
    def _check_tasks(cls, tasks: dict[str, TaskSpec]) -> dict[str, TaskSpec]:
        if not tasks:
            raise ValueError("at least one task is needed")
        for name, spec in tasks.items():
            labels = SOURCE_LABELS.get(spec.source)
            if labels is None:
                raise ValueError(
                    f"task {name!r}: unknown source {spec.source!r}; "
                    f"choose from {sorted(SOURCE_LABELS)}"
                )
            label = spec.label or name
            if label not in labels:
                raise ValueError(
                    f"task {name!r}: source {spec.source!r} has no label {label!r}; "
                    f"it provides {list(labels)} (set `label:`)"
                )
        return tasks

    @model_validator(mode="after")
    def _check_model(self) -> ProjectParameters:
        """The backbone exists and its arguments and share depth fit (built once: ms)."""
        from multitask_cnn.models import BACKBONES, get_backbone

        if self.model.backbone not in BACKBONES:
            raise ValueError(
                f"model.backbone: unknown backbone {self.model.backbone!r}; "
                f"choose from {sorted(BACKBONES)}"
            )
        try:
            stages = get_backbone(self.model.backbone, **self.model.backbone_args).stage_names
        except (TypeError, ValueError) as error:
            raise ValueError(str(error)) from None
        shared = self.model.shared_stages
        if shared is not None and shared > len(stages):
            raise ValueError(
                f"model.shared_stages={shared} but {self.model.backbone!r} has "
                f"{len(stages)} stages {stages}"
            )
        return self


def _format_error(error: ValidationError, prefix: str) -> str:
    lines = []
    for item in error.errors():
        loc = ".".join(str(part) for part in (prefix, *item["loc"]) if part != "")
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling)"
        elif "input" in item and not isinstance(item["input"], dict):
            message += f" (got {item['input']!r})"
        if loc:
            where = PARAMETER_FILES.get(loc.split(".")[0], "conf/base/parameters*.yml")
            lines.append(f"  - parameter '{loc}' ({where} or --params): {message}")
        else:  # a check across groups; its message names the keys
            lines.append(f"  - {message}")
    return "Invalid parameters:\n" + "\n".join(lines)


def parse(model: type[M], params: dict[str, Any], key: str = "") -> M:
    """Validate ``params`` (the ``key`` group) into ``model`` or raise :class:`ConfigError`."""
    try:
        return model.model_validate(params or {})
    except ValidationError as error:
        raise ConfigError(_format_error(error, key)) from None


def parse_tasks(tasks: dict[str, Any]) -> dict[str, TaskSpec]:
    """Validate the task spec (the ``tasks`` parameter)."""
    return parse(ProjectParameters, {"tasks": tasks}).tasks


def validate_parameters(params: dict[str, Any]) -> ProjectParameters:
    """Validate the whole parameter tree; raises :class:`ConfigError`."""
    return parse(ProjectParameters, params)
