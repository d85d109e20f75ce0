"""The parameter schema: typed, validated once at the edge, the one place of every default.

Parameters reach nodes as plain dicts (so kedro-mlflow logs them flattened). Before any
node runs, ``hooks.py`` validates the whole tree with :func:`validate_parameters` and
hands every node the *effective* parameters (:func:`effective_parameters`: defaults
filled in), so what MLflow logs is what ran. Each node still parses its own slice (a
no-op on effective values; it makes nodes safe to call alone). Every model forbids
unknown keys, and errors name the offending key and the file it usually lives in.

This module sits above the library: it imports the registries (backbones, task kinds,
weightings, optimizers, data sources); nothing in the library imports it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
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

from multitask_cnn.data.sources import SOURCES, source_class_names
from multitask_cnn.errors import UserError
from multitask_cnn.evaluation.corruptions import CORRUPTIONS, SEVERITIES
from multitask_cnn.models import (
    BACKBONES,
    backbone_defaults,
    build_model,
    get_backbone,
    stage_shapes,
)
from multitask_cnn.models.transfer import Rename, TransferMapping
from multitask_cnn.tasks import TaskSpec, check_task_name
from multitask_cnn.training import OPTIMIZERS, WEIGHTINGS, Budget, get_weighting
from multitask_cnn.training.compiling import compile_refusal
from multitask_cnn.training.precision import fp16_refusal

__all__ = [
    "ConfigError",
    "DataPrepConfig",
    "DigitsConfig",
    "ManifestConfig",
    "FusionConfig",
    "EvaluationConfig",
    "ModelConfig",
    "PRETRAINING_SOURCES",
    "PretrainingConfig",
    "TransferConfig",
    "ProjectParameters",
    "TaskSpec",
    "TrainingConfig",
    "effective_parameters",
    "effective_tasks",
    "parse",
    "parse_tasks",
    "pretraining_budget",
    "source_class_names",
    "validate_parameters",
]

# Where each top-level parameter group is defined, for error messages.
PARAMETER_FILES = {
    "tasks": "conf/base/parameters.yml",
    "data_prep": "conf/base/parameters_data_prep.yml",
    "model": "conf/base/parameters_multitask_training.yml",
    "training": "conf/base/parameters_multitask_training.yml",
    "evaluation": "conf/base/parameters_evaluation.yml",
    "pretraining": "conf/base/parameters_transfer.yml",
    "transfer": "conf/base/parameters_transfer.yml",
    "insight": "conf/base/parameters_insight.yml",
}

M = TypeVar("M", bound="BaseModel")
Origin = Callable[[str], str | None]  # a dotted key -> where its value came from

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _check_device(value: str) -> str:
    if not _DEVICE_PATTERN.match(value):
        raise ValueError(
            f"{value!r} is not a device; use auto, cpu, cuda, cuda:N or mps"
        )
    return value


Device = Annotated[str, AfterValidator(_check_device)]


class ConfigError(UserError, ValueError):
    """Invalid parameters; the message says which key, where, and how to fix it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DigitsConfig(_Strict):
    """scikit-learn's digits on the canvas (source ``digits``)."""

    item_size: PositiveInt = 28  # each 8x8 digit is resized to this and centred
    test_fraction: float = Field(0.2, gt=0, lt=1)  # stratified; val: val_fraction


class ManifestConfig(_Strict):
    """How a CSV image manifest (source ``manifest``; the ``image_manifest`` catalog
    entry) becomes model input (README "Your own images")."""

    image_column: str = "image"  # paths relative to the catalog entry's root
    # train | val | test; None: the column `split` when there is one, else seeded fractions
    split_column: str | None = None
    test_fraction: float = Field(0.2, gt=0, lt=1)  # without a split column;
    # val: data_prep.val_fraction of the rest
    channels: Literal[1, 3] = 1  # grey (L) or RGB; the backbone's in_channels
    # decoded images up to this size are kept in memory, larger manifests stream
    memory_budget_mb: PositiveFloat = 2048
    workers: NonNegativeInt = 0  # decoding processes; 0: one per CPU core


class DataPrepConfig(_Strict):
    """How MultiFashion is built from Fashion-MNIST (Pareto-MTL, Lin et al. 2019)."""

    n_train: PositiveInt = (
        120_000  # composites from the official train images (val included)
    )
    n_test: PositiveInt = 20_000  # composites from the official test images
    # share of the official train images held out (stratified) as the val pool, and
    # of the n_train composites drawn from that pool: round(val_fraction * n_train)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    canvas_size: PositiveInt = 36

    def n_val(self) -> int:
        """MultiFashion's val composites (the rest of ``n_train`` are train ones)."""
        return int(round(self.val_fraction * self.n_train))

    def check_val_share(self) -> None:
        """MultiFashion's val share leaves composites in both splits (checked only when
        MultiFashion is read)."""
        if not 1 <= self.n_val() < self.n_train:
            raise ValueError(
                f"data_prep.val_fraction={self.val_fraction} of data_prep.n_train="
                f"{self.n_train} leaves {self.n_val()} val and "
                f"{self.n_train - self.n_val()} train composites; each needs at least one"
            )

    max_shift: NonNegativeInt = 4  # each item moves up to this many px inwards
    seed: NonNegativeInt = 0  # one independent stream per purpose is derived from it
    # label -> fraction of train and val rows whose label is marked missing (-1 / NaN);
    # test labels stay complete. For studies of partially labelled data.
    missing_labels: dict[str, Annotated[float, Field(ge=0, lt=1)]] = Field(
        default_factory=dict
    )
    digits: DigitsConfig = Field(default_factory=DigitsConfig)
    manifest: ManifestConfig = Field(default_factory=ManifestConfig)

    @field_validator("missing_labels")
    @classmethod
    def _known_labels(cls, value: dict[str, float]) -> dict[str, float]:
        labels = SOURCES.get("multifashion").labels
        unknown = sorted(set(value) - set(labels))
        if unknown:
            raise ValueError(
                f"unknown labels {unknown}; MultiFashion has {list(labels)}"
            )
        return value


class ModelConfig(_Strict):
    backbone: str = "lenet"  # a name in multitask_cnn.models.BACKBONES
    backbone_args: dict[str, Any] = Field(
        default_factory=dict
    )  # the factory's arguments
    shared_stages: NonNegativeInt | None = None  # None: every backbone stage shared
    # hard sharing, or soft sharing (README "Soft sharing"; models/soft.py)
    architecture: Literal["hard", "cross_stitch", "mtan", "mmoe"] = "hard"
    architecture_args: dict[str, Any] = Field(default_factory=dict)  # its options

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value: str) -> str:
        return BACKBONES.check(value)

    @model_validator(mode="after")
    def _check_backbone(self) -> ModelConfig:
        """The arguments fit the backbone and the share depth fits its stages (the
        backbone alone is built: milliseconds; no model, no heads)."""
        try:
            stages = get_backbone(self.backbone, **self.backbone_args).stage_names
        except (TypeError, ValueError) as error:
            raise ValueError(str(error)) from None
        if self.shared_stages is not None and self.shared_stages > len(stages):
            raise ValueError(
                f"model.shared_stages={self.shared_stages} but {self.backbone!r} has "
                f"{len(stages)} stages {stages}"
            )
        if self.architecture != "hard" and self.shared_stages is not None:
            raise ValueError(
                f"model.shared_stages={self.shared_stages} is hard sharing's setting; "
                f"model.architecture={self.architecture} shares by its own rules "
                '(README "Soft sharing"): leave it null'
            )
        if self.architecture == "hard" and self.architecture_args:
            raise ValueError(
                f"model.architecture_args={self.architecture_args}: hard sharing takes "
                "none (its setting is model.shared_stages)"
            )
        return self

    def hard(self) -> dict[str, Any]:
        """:meth:`effective` for a single-task model (baselines, pretraining): the
        backbone alone, all of it the task's own."""
        return self.effective() | {"shared_stages": None, "architecture": "hard",
                                   "architecture_args": {}}  # fmt: skip

    def effective(self) -> dict[str, Any]:
        """As validated, with the backbone's own defaults filled into ``backbone_args``."""
        return self.model_dump(mode="json") | {
            "backbone_args": backbone_defaults(self.backbone) | dict(self.backbone_args)
        }


class EarlyStoppingConfig(_Strict):
    patience: PositiveInt = 3  # epochs without improvement of val.loss
    min_delta: NonNegativeFloat = 0.0


class FusionConfig(_Strict):
    """Task fusion: tasks of several data sources train in one model; each step
    concatenates one mini-batch of every source (README "Task fusion")."""

    # a source's own batch size per step, e.g. {digits: 32}; default training.batch_size
    batch_size: dict[str, PositiveInt] = Field(default_factory=dict)
    # steps of an epoch: largest (the source with most batches; smaller ones start a
    # new shuffled pass when they run out) | smallest | a number of steps
    steps: Literal["largest", "smallest"] | PositiveInt = "largest"


class TrainingConfig(_Strict):
    epochs: PositiveInt = 15  # maximum epochs
    batch_size: PositiveInt = 256
    eval_batch_size: PositiveInt = 1024
    optimizer: str = "adam"  # a name in multitask_cnn.training.OPTIMIZERS
    lr: PositiveFloat = 1e-3
    momentum: NonNegativeFloat = 0.9  # sgd only
    weight_decay: NonNegativeFloat = 0.0
    weighting: str = "equal"  # a name in multitask_cnn.training.WEIGHTINGS
    weighting_args: dict[str, Any] = Field(
        default_factory=dict
    )  # the strategy's options
    seed: NonNegativeInt = 0  # model init, data order and dropout get their own streams
    device: Device = "auto"  # auto | cpu | cuda | cuda:N | mps
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    log_every_epoch: bool = True  # live per-epoch metrics to MLflow
    # deterministic algorithms for the whole run (torch, cuDNN, cuBLAS): an operation
    # without one fails instead of running (README "Reproducing a run")
    deterministic: bool = False
    # continue an interrupted training (pretraining, baselines, multi-task) from its
    # last finished epoch
    # (data/06_models/*_progress.pt); false: start over
    resume: bool = True
    # validation rows on which each epoch records the cosines between the tasks'
    # gradients on the shared parameters (grad_cos.<a>.<b>); 0 = off
    grad_cos_rows: NonNegativeInt = 0
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    # mixed precision (README "GPUs"): auto = bf16 on a GPU that has it, else fp16
    # there; fp32 on the CPU | fp32 | bf16 | fp16 (with a gradient scaler)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool | Literal["auto"] = "auto"  # memory format; auto: on CUDA
    # cuDNN times its convolutions (CUDA; not while deterministic)
    cudnn_benchmark: bool = True
    # the training split moved to the GPU once (auto: when it fits in
    # device_memory_share of the free memory; else pinned host memory)
    data_on_device: bool | Literal["auto"] = "auto"
    device_memory_share: float = Field(0.5, gt=0, le=1)
    # torch.compile of the trunk and the task outputs (README "GPUs"): false | true
    # (inductor: needs a C compiler on the CPU, Triton on a GPU) | a backend's name
    compile: bool | str = False
    # data-parallel training (README "GPUs"): workers per machine (GPUs, or CPU
    # processes) x machines; batch_size stays the global batch, shared between them
    devices: PositiveInt = 1
    nodes: PositiveInt = 1
    rendezvous: str = ""  # host:port where the machines meet (nodes > 1)

    def budget(self) -> Budget:
        """What the multi-task model and its single-task baselines share."""
        return Budget(
            epochs=self.epochs, batch_size=self.batch_size,
            eval_batch_size=self.eval_batch_size, optimizer=self.optimizer, lr=self.lr,
            weight_decay=self.weight_decay, momentum=self.momentum,
            patience=self.early_stopping.patience, min_delta=self.early_stopping.min_delta,
            seed=self.seed, source_batch_size=dict(self.fusion.batch_size),
            fusion_steps=self.fusion.steps, precision=self.precision,
            channels_last=self.channels_last, cudnn_benchmark=self.cudnn_benchmark,
            data_on_device=self.data_on_device,
            device_memory_share=self.device_memory_share, devices=self.devices,
            nodes=self.nodes, rendezvous=self.rendezvous, compile=self.compile,
        )  # fmt: skip

    @field_validator("compile")
    @classmethod
    def _known_backend(cls, value: bool | str) -> bool | str:
        if isinstance(value, str):
            import torch._dynamo

            backends = torch._dynamo.list_backends(exclude_tags=())
            if value not in backends:
                raise ValueError(
                    f"unknown torch.compile backend {value!r}; choose true (inductor), "
                    f"false, or one of {backends}"
                )
        return value

    @model_validator(mode="after")
    def _machines_can_meet(self) -> TrainingConfig:
        if self.nodes > 1 and not re.fullmatch(r"[^\s:]+:\d+", self.rendezvous):
            raise ValueError(
                f"training.nodes={self.nodes} needs training.rendezvous: the host:port "
                "where the machines meet (the first machine's address and a free port), "
                f"got {self.rendezvous!r}"
            )
        return self

    @model_validator(mode="after")
    def _precision_fits_the_strategy(self) -> TrainingConfig:
        if self.precision == "fp16":
            why = fp16_refusal(self.weighting, WEIGHTINGS.get(self.weighting).level)
            if why:
                raise ValueError(why)
        if self.compile:
            level = WEIGHTINGS.get(self.weighting).level
            why = compile_refusal(self.weighting, level, self.grad_cos_rows)
            if why:
                raise ValueError(why)
        return self

    @field_validator("weighting")
    @classmethod
    def _known_weighting(cls, value: str) -> str:
        return WEIGHTINGS.check(value)

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, value: str) -> str:
        return OPTIMIZERS.check(value)


PRETRAINING_SOURCES = {
    "fashion_mnist_items": "one Fashion-MNIST item at a random position on the canvas, "
    "from the official train images of the train pool (label: class)",
    "multifashion": "MultiFashion's own train / val composites with one of its labels",
    "file": "your labelled images: the `pretraining_file` catalog entry "
    "(data/01_raw/pretraining.pt: images uint8 (N, H, W), labels {name: int64 (N,)})",
}


class PretrainingConfig(_Strict):
    """The source task the backbone is pretrained on (``pretraining`` pipeline)."""

    source: str = "fashion_mnist_items"  # a key of PRETRAINING_SOURCES
    label: str | None = None  # the source's label (default: class; multifashion: left)
    n_train: PositiveInt | None = None  # train images used (None: all of them)
    # changes to the multi-task `training` budget for pretraining, e.g. {epochs: 5}
    training: dict[str, Any] = Field(default_factory=dict)

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        if value not in PRETRAINING_SOURCES:
            raise ValueError(
                f"unknown pretraining source {value!r}; choose from {list(PRETRAINING_SOURCES)}"
            )
        return value

    @model_validator(mode="after")
    def _known_label(self) -> PretrainingConfig:
        if self.source == "multifashion" and self.label is not None:
            labels = SOURCES.get("multifashion").labels
            if self.label not in labels:
                raise ValueError(
                    f"pretraining.label={self.label!r}: MultiFashion has {list(labels)}"
                )
        if self.source == "fashion_mnist_items" and self.label not in (None, "class"):
            raise ValueError(
                f"pretraining.label={self.label!r}: fashion_mnist_items has one label, 'class'"
            )
        return self

    def label_name(self) -> str:
        return self.label or ("left" if self.source == "multifashion" else "class")


class TransferConfig(_Strict):
    """How the multi-task model starts from pretrained weights (``weight_transfer``)."""

    enabled: bool = True  # multitask_training starts from the transferred state
    # a state_dict file to transfer from (.pt, loaded weights_only); None: the
    # backbone the pretraining pipeline saved
    checkpoint: str | None = None
    include: list[str] = Field(default_factory=lambda: ["*"])  # globs on target names
    # globs left out; None: the backbone's `fc` stage when it has one (README "The
    # transfer study": the FC features of a one-item task do not help two items)
    exclude: list[str] | None = None
    renames: list[str] = Field(
        default_factory=list
    )  # "conv1.* -> backbone.stem.conv1.*"
    channel_adapt: Literal["sum", "mean"] = "sum"  # RGB first conv -> 1 channel
    freeze_epochs: NonNegativeInt = 0  # transferred parameters frozen this many epochs
    lr_scale: PositiveFloat = 1.0  # their learning rate, relative to training.lr

    @field_validator("renames")
    @classmethod
    def _renames_parse(cls, value: list[str]) -> list[str]:
        for text in value:
            Rename.parse(text)
        return value

    def for_backbone(self, model: ModelConfig) -> TransferConfig:
        """With ``exclude`` filled in for ``model``'s backbone when it is None."""
        if self.exclude is not None:
            return self
        stages = get_backbone(model.backbone, **model.backbone_args).stage_names
        return self.model_copy(
            update={"exclude": ["backbone.fc.*"] if "fc" in stages else []}
        )

    def mapping_settings(self) -> dict[str, Any]:
        """What an initial state is built with (freezing and the learning-rate scale
        are read when training starts)."""
        keys = ("checkpoint", "include", "exclude", "renames", "channel_adapt")
        return {k: v for k, v in self.model_dump(mode="json").items() if k in keys}

    def mapping(self) -> TransferMapping:
        if self.exclude is None:
            raise ValueError(
                "transfer.exclude is not filled in: call for_backbone() first"
            )
        return TransferMapping.from_config(
            self.include, self.exclude, self.renames, self.channel_adapt
        )


class EvaluationConfig(_Strict):
    batch_size: PositiveInt = 1024
    device: Device = "auto"  # auto | cpu | cuda | cuda:N | mps
    # timed passes per model for the efficiency report's latency and throughput (the
    # median is reported); fewer in the smoke envs
    timing_repeats: PositiveInt = 20
    # the multi-task model as an MLflow model (README "The model in MLflow")
    log_model: bool = True
    registered_model_name: str | None = "multitask-cnn"  # None: logged, not registered
    model_alias: str | None = "candidate"  # given to the new version


class InsightConfig(_Strict):
    """The ``insight`` stage (README "Insight"): each part runs when true."""

    # on by default: the parts that cost under 1 % of the default run's training
    # (README "Insight", bench/insight_cost.py)
    sharing: bool = True  # per-stage CKA of the single-task models, gradient cosines
    saliency: bool = True  # Grad-CAM heat maps per task (captum)
    robustness: bool = False  # test metrics under common corruptions, by severity
    generalisation: bool = True  # train / val / test gap, and a shifted test set
    corruptions: list[str] = Field(default_factory=lambda: list(CORRUPTIONS))
    severities: list[Literal[1, 2, 3, 4, 5]] = Field(
        default_factory=lambda: list(SEVERITIES)
    )
    max_images: PositiveInt = 2000  # first rows of each split that the parts read
    seed: int = 0  # the random corruptions' draws and the shifted composites
    # sharing and saliency: the first probe_images test rows of each source
    probe_images: int = Field(default=500, ge=2)
    # a stage is worth sharing when every task pair's CKA there is at least this (and
    # the tasks' gradients do not disagree on average where the model shares it)
    cka_threshold: float = Field(default=0.5, gt=0.0, le=1.0)
    # Grad-CAM's stage (a backbone stage name); None: the deepest one whose output is
    # still an image
    saliency_stage: str | None = None
    saliency_images: PositiveInt = 6  # test images shown in saliency.png

    @field_validator("corruptions", "severities")
    @classmethod
    def _some_and_distinct(cls, values: list[Any]) -> list[Any]:
        if not values or len(set(values)) != len(values):
            raise ValueError(f"list at least one value, each once; got {values}")
        unknown = [v for v in values if isinstance(v, str) and v not in CORRUPTIONS]
        if unknown:
            raise ValueError(
                f"unknown corruptions {unknown}; known: {list(CORRUPTIONS)}"
            )
        return values


class ProjectParameters(_Strict):
    """The whole parameter tree, checked before a run starts."""

    tasks: dict[str, TaskSpec]
    data_prep: DataPrepConfig = Field(default_factory=DataPrepConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    pretraining: PretrainingConfig = Field(default_factory=PretrainingConfig)
    transfer: TransferConfig = Field(default_factory=TransferConfig)
    insight: InsightConfig = Field(default_factory=InsightConfig)
    allow_download: bool = False  # read by the `fashion_mnist` catalog entry
    # read by conf/base/mlflow.yml (tracking.run): log into this MLflow run (an Airflow
    # DAG run's tasks share one), under this name
    mlflow_run_id: str | None = None
    mlflow_run_name: str | None = None

    @field_validator("tasks", mode="before")
    @classmethod
    def _drop_removed(cls, tasks: Any) -> Any:
        return drop_removed_tasks(tasks)

    @field_validator("tasks")
    @classmethod
    def _check_tasks(cls, tasks: dict[str, TaskSpec]) -> dict[str, TaskSpec]:
        return check_tasks(tasks)

    @model_validator(mode="after")
    def _backbone_reads_the_canvas(self) -> ProjectParameters:
        """The backbone's ``input_size`` is the canvas MultiFashion draws: one setting,
        ``data_prep.canvas_size``, filled into ``backbone_args`` (:meth:`effective`)."""
        given = self.model.backbone_args.get("input_size")
        canvas = self.data_prep.canvas_size
        if given is not None and given != canvas:
            raise ValueError(
                f"model.backbone_args.input_size={given} but data_prep.canvas_size={canvas}; "
                "drop input_size (the backbone takes the canvas size) or set both alike"
            )
        try:
            get_backbone(self.model.backbone, **self._backbone_args())
        except (TypeError, ValueError) as error:
            raise ValueError(f"data_prep.canvas_size={canvas}: {error}") from None
        return self

    @model_validator(mode="after")
    def _saliency_stage_exists(self) -> ProjectParameters:
        """``insight.saliency_stage`` names a stage of the backbone whose output is
        still an image (Grad-CAM needs a spatial map)."""
        stage = self.insight.saliency_stage
        if stage is None:
            return self
        backbone = get_backbone(self.model.backbone, **self._backbone_args())
        if stage not in backbone.stage_names:
            raise ValueError(
                f"insight.saliency_stage={stage!r} is not a stage of "
                f"{self.model.backbone!r}; its stages are {backbone.stage_names}"
            )
        size = self.data_prep.canvas_size
        image = (self.model.backbone_args.get("in_channels", 1), size, size)
        shape = stage_shapes(backbone, image)[stage]
        if len(shape) != 3:
            raise ValueError(
                f"insight.saliency_stage={stage!r}: its output is flat {shape}, "
                "not an image; Grad-CAM needs a convolutional stage"
            )
        return self

    @model_validator(mode="after")
    def _architecture_builds(self) -> ProjectParameters:
        """A soft-sharing architecture takes its options and fits the backbone (the
        model is built once, without data)."""
        if self.model.architecture == "hard":
            return self
        try:
            build_model(self.tasks, self.model.backbone,
                        backbone_args=self._backbone_args(),
                        architecture=self.model.architecture,
                        architecture_args=self.model.architecture_args)  # fmt: skip
        except (TypeError, ValueError) as error:
            raise ValueError(str(error)) from None
        return self

    @model_validator(mode="after")
    def _strategy_fits(self) -> ProjectParameters:
        """The strategy takes its options, and a gradient-level one has shared
        parameters to aggregate (built once: no model, no data)."""
        name, options = self.training.weighting, self.training.weighting_args
        try:
            strategy = get_weighting(name, self.tasks, **options)
        except (TypeError, ValueError) as error:
            raise ValueError(str(error)) from None
        if (
            strategy.needs_shared
            and self.model.architecture == "hard"
            and (self.model.shared_stages == 0)
        ):
            raise ValueError(
                f"training.weighting={name!r} works on the shared parameters' gradients, "
                "but model.shared_stages=0 shares none; share at least one stage or use "
                "equal, static, uncertainty, dwa, famo or rlw"
            )
        return self

    @model_validator(mode="after")
    def _manifest_channels(self) -> ProjectParameters:
        """A manifest's channel count is the backbone's input channels."""
        if any(spec.source == "manifest" for spec in self.tasks.values()):
            channels = self.data_prep.manifest.channels
            given = self.model.backbone_args.get("in_channels", 1)
            if given != channels:
                raise ValueError(
                    f"data_prep.manifest.channels={channels} but the backbone takes "
                    f"{given} (model.backbone_args.in_channels); set both alike"
                )
            transfer = self.transfer
            if channels != 1 and transfer.enabled and transfer.checkpoint is None:
                raise ValueError(
                    f"data_prep.manifest.channels={channels}, but the pretrained backbone "
                    "sees grey images (the pretraining sources are grey): set "
                    "transfer.enabled: false, or transfer.checkpoint to weights for "
                    f"{channels} channels"
                )
        return self

    @model_validator(mode="after")
    def _fusion_sources(self) -> ProjectParameters:
        """``training.fusion.batch_size`` names sources the tasks read."""
        read = {spec.source for spec in self.tasks.values()}
        unknown = sorted(set(self.training.fusion.batch_size) - read)
        if unknown:
            raise ValueError(
                f"training.fusion.batch_size names sources {unknown} that no task reads; "
                f"the tasks read {sorted(read)}"
            )
        return self

    @model_validator(mode="after")
    def _batch_fits_the_data(self) -> ProjectParameters:
        """MultiFashion's splits are not empty, and a batch is no larger than its train
        split (the sizes of other sources are known once their data is read: the
        training checks them)."""
        tasks_read = any(spec.source == "multifashion" for spec in self.tasks.values())
        if tasks_read or self.pretraining.source == "multifashion":
            self.data_prep.check_val_share()
        if not tasks_read:
            return self
        rows = self.data_prep.n_train - self.data_prep.n_val()
        given = self.training.fusion.batch_size.get("multifashion")
        key = (
            "training.fusion.batch_size.multifashion"
            if given
            else "training.batch_size"
        )
        size = given or self.training.batch_size
        if size > rows:
            raise ValueError(
                f"{key}={size} is larger than MultiFashion's train split ({rows} "
                f"composites: data_prep.n_train={self.data_prep.n_train} less the val "
                f"share); lower it or raise data_prep.n_train"
            )
        return self

    @model_validator(mode="after")
    def _pretraining_budget(self) -> ProjectParameters:
        """``pretraining.training`` changes valid ``training`` keys."""
        pretraining_budget(self.training.model_dump(), self.pretraining.training)
        return self

    def _backbone_args(self) -> dict[str, Any]:
        return dict(self.model.backbone_args) | {
            "input_size": self.data_prep.canvas_size
        }

    def effective(self) -> dict[str, Any]:
        """The whole tree as it runs: every default filled in (JSON-able)."""
        model = self.model.effective()
        model["backbone_args"] |= {"input_size": self.data_prep.canvas_size}
        return self.model_dump(mode="json") | {
            "tasks": effective_tasks(self.tasks),
            "model": model,
            "transfer": self.transfer.for_backbone(self.model).model_dump(mode="json"),
        }


def pretraining_budget(
    training: dict[str, Any], changes: dict[str, Any]
) -> TrainingConfig:
    """The multi-task ``training`` budget with ``pretraining.training``'s changes."""
    try:
        return TrainingConfig.model_validate(_merge(training, changes))
    except ValidationError as error:
        raise ValueError(_format_error(error, "pretraining.training")) from None


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def effective_tasks(tasks: dict[str, TaskSpec]) -> dict[str, dict[str, Any]]:
    """The task spec as it runs (``label`` filled in), JSON-able."""
    return {
        name: spec.model_dump(mode="json") | {"label": spec.label_name(name)}
        for name, spec in tasks.items()
    }


def drop_removed_tasks(tasks: Any) -> Any:
    """Without the tasks set to ``null``: an environment's parameters merge key by key
    into ``conf/base`` (``tasks.left: null`` in ``conf/<env>/parameters.yml`` removes
    the base task ``left``)."""
    if isinstance(tasks, dict):
        return {name: spec for name, spec in tasks.items() if spec is not None}
    return tasks


def check_tasks(tasks: dict[str, TaskSpec]) -> dict[str, TaskSpec]:
    """Task names usable in metric names; each task's source has its label, and the
    label fits the task's kind (a binary task on a 10-class label, a multiclass task
    with fewer classes than the label has, regression on class ids are refused)."""
    if not tasks:
        raise ValueError("at least one task is needed")
    for name, spec in tasks.items():
        try:
            check_task_name(name)
        except ValueError as error:
            raise ValueError(f"task {name!r}: {error}") from None
        if spec.source not in SOURCES:
            raise ValueError(
                f"task {name!r}: unknown source {spec.source!r}; choose from {SOURCES.names()}"
            )
        if SOURCES.get(spec.source).labels_from_spec:
            continue  # a manifest's columns are checked when data_prep reads it
        labels = SOURCES.get(spec.source).labels
        label = spec.label_name(name)
        if label not in labels:
            raise ValueError(
                f"task {name!r}: source {spec.source!r} has no label {label!r}; "
                f"it provides {list(labels)} (set `label:`)"
            )
        found, wanted = labels[label].n_classes, spec.n_classes
        if (found is None) != (wanted is None) or (
            wanted is not None and wanted < found
        ):
            raise ValueError(
                f"task {name!r} ({spec.kind}"
                + (f", {wanted} classes" if wanted else "")
                + f"): label {label!r} of {spec.source!r} "
                + (f"has {found} classes" if found else "holds real values")
                + "; "
                + _kind_hint(found)
            )
    return tasks


def _kind_hint(n_classes: int | None) -> str:
    if n_classes is None:
        return "use kind: regression"
    if n_classes == 2:
        return "use kind: binary (or multiclass with num_classes: 2)"
    return f"use kind: multiclass with num_classes: {n_classes}"


def _format_error(
    error: ValidationError, prefix: str, origin: Origin | None = None
) -> str:
    lines = []
    for item in error.errors():
        loc = ".".join(str(part) for part in (prefix, *item["loc"]) if part != "")
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling)"
        elif "input" in item and not isinstance(item["input"], dict):
            message += f" (got {item['input']!r})"
        if loc:
            where = origin(loc) if origin else None
            if where is None:
                usual = PARAMETER_FILES.get(
                    loc.split(".")[0], "conf/base/parameters*.yml"
                )
                where = f"{usual} or --params"
            lines.append(f"  - parameter '{loc}' ({where}): {message}")
        else:  # a check across groups; its message names the keys
            lines.append(f"  - {message}")
    return "Invalid parameters:\n" + "\n".join(lines)


def parse(
    model: type[M], params: dict[str, Any], key: str = "", origin: Origin | None = None
) -> M:
    """Validate ``params`` (the ``key`` group) into ``model`` or raise
    :class:`ConfigError`; ``origin`` names where a key's value came from (else the
    file the key usually lives in)."""
    try:
        return model.model_validate(params or {})
    except ValidationError as error:
        raise ConfigError(_format_error(error, key, origin)) from None


class _TasksOnly(_Strict):
    tasks: dict[str, TaskSpec]

    @field_validator("tasks", mode="before")
    @classmethod
    def _drop_removed(cls, tasks: Any) -> Any:
        return drop_removed_tasks(tasks)

    @field_validator("tasks")
    @classmethod
    def _check_tasks(cls, tasks: dict[str, TaskSpec]) -> dict[str, TaskSpec]:
        return check_tasks(tasks)


def parse_tasks(tasks: dict[str, Any]) -> dict[str, TaskSpec]:
    """Validate the task spec (the ``tasks`` parameter) alone; builds no model."""
    return parse(_TasksOnly, {"tasks": tasks}).tasks


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (kedro-mlflow's ``flatten: true``, sep
    "."; an empty dict is a value)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def validate_parameters(
    params: dict[str, Any], origin: Origin | None = None
) -> ProjectParameters:
    """Validate the whole parameter tree; raises :class:`ConfigError`."""
    return parse(ProjectParameters, params, origin=origin)


def parameter_origin(
    runtime: dict[str, Any], files: list[tuple[str, dict[str, Any]]]
) -> Origin:
    """Where a dotted key's value came from: ``from --params`` (``runtime``), else the
    first of ``files`` (``(name, parameters)``, highest precedence first: the run's env
    before base) that sets it (or the value holding it); None when none does, and for a
    group (``tasks``, ``model``) whose check spans keys that may come from several."""
    sources = [("from --params", flatten(runtime))]
    sources += [(f"from {name}", flatten(tree)) for name, tree in files]

    def origin(loc: str) -> str | None:
        for name, flat in sources:
            if any(key == loc or loc.startswith(f"{key}.") for key in flat):
                return name
        return None

    return origin


def effective_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """The validated tree with every default filled in: what the nodes run with."""
    return validate_parameters(params).effective()
