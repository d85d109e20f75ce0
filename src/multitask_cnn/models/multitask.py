"""The multi-task model: shared backbone stages, per-task remaining stages and heads."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from multitask_cnn.tasks import TaskSpec

from .backbones import Backbone, backbone_defaults, get_backbone
from .soft import CrossStitchModel, MMoEModel, MTANModel

__all__ = [
    "ARCHITECTURES",
    "MultiTaskModel",
    "build_head",
    "build_model",
    "count_parameters",
]


def build_head(in_features: int, spec: TaskSpec) -> nn.Sequential:
    """A small head: optional hidden FC layers, then one linear output layer."""
    layers: list[nn.Module] = []
    width = in_features
    for hidden in spec.head_hidden:
        layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
        width = hidden
    layers.append(nn.Linear(width, spec.out_features))
    return nn.Sequential(*layers)


class MultiTaskModel(nn.Module):
    """Hard parameter sharing over a :class:`Backbone`.

    Stages ``< shared_stages`` run once on the whole batch; the remaining stages are
    deep-copied per task (each task gets its own weights), followed by the task head.
    ``forward(x)`` returns ``{task: output}``; outputs are logits ``(B, classes)`` for
    multiclass tasks and ``(B,)`` for binary / regression tasks.
    """

    def __init__(
        self,
        backbone: Backbone,
        heads: Mapping[str, nn.Module],
        shared_stages: int | None = None,
    ) -> None:
        super().__init__()
        names = backbone.stage_names
        k = len(names) if shared_stages is None else shared_stages
        if not 0 <= k <= len(names):
            raise ValueError(
                f"model.shared_stages={shared_stages} but the backbone has "
                f"{len(names)} stages {names}"
            )
        self.shared_stages = k
        self.shared = nn.ModuleDict({n: backbone.stages[n] for n in names[:k]})
        self.task_stages = nn.ModuleDict(
            {
                task: nn.ModuleDict(
                    {n: copy.deepcopy(backbone.stages[n]) for n in names[k:]}
                )
                for task in heads
            }
        )
        self.heads = nn.ModuleDict(dict(heads))

    architecture = "hard"
    # shared_features() ends where the tasks' own parameters begin: gradient-level
    # strategies back-propagate each task to it once (TorchJD's mtl_backward)
    features_cut = True

    @property
    def tasks(self) -> list[str]:
        return list(self.heads.keys())

    def shared_parameters(self) -> list[nn.Parameter]:
        """The parameters every task's loss depends on: the shared stages'."""
        return list(self.shared.parameters())

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """The parameters only ``task``'s loss depends on: its stages and head."""
        return [*self.task_stages[task].parameters(), *self.heads[task].parameters()]

    def shared_features(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.shared.values():  # (B, C, H, W) -> ... -> shared features
            x = stage(x)
        return x

    def forward(
        self, x: torch.Tensor, rows: Mapping[str, slice] | None = None
    ) -> dict[str, torch.Tensor]:
        return self.task_outputs(self.shared_features(x), rows)

    def last_shared_layer(self) -> list[nn.Parameter]:
        """The parameters of the last shared convolution or linear layer."""
        for module in reversed(list(self.shared.modules())):
            if isinstance(module, nn.Conv2d | nn.Linear):
                return list(module.parameters())
        return []

    def task_outputs(
        self, shared: torch.Tensor, rows: Mapping[str, slice] | None = None
    ) -> dict[str, torch.Tensor]:
        """Each task's remaining stages and head on the shared features; with ``rows``
        (a fused batch), only the tasks it names, each on its own rows."""
        outputs = {}
        for task in self.heads if rows is None else rows:
            head = self.heads[task]
            block = None if rows is None else rows[task]
            features = (
                shared if block is None or block == slice(None) else shared[block]
            )
            for stage in self.task_stages[task].values():
                features = stage(features)
            out = head(features)  # (B, out_features)
            outputs[task] = out.squeeze(1) if out.shape[1] == 1 else out
        return outputs


ARCHITECTURES = ("hard", "cross_stitch", "mtan", "mmoe")


def build_model(
    tasks: Mapping[str, TaskSpec],
    backbone: str = "lenet",
    *,
    backbone_args: Mapping[str, Any] | None = None,
    shared_stages: int | None = None,
    architecture: str = "hard",
    architecture_args: Mapping[str, Any] | None = None,
) -> nn.Module:
    """The multi-task model: ``backbone`` (a registered name) with one head per task of
    ``tasks``, shared as ``architecture`` says: ``hard`` (the first ``shared_stages``
    stages shared, the rest copied per task) or a soft-sharing architecture of
    :mod:`multitask_cnn.models.soft` with its ``architecture_args``."""
    args = dict(backbone_args or {})
    network = get_backbone(backbone, **args)
    heads = {
        name: build_head(network.out_features, spec) for name, spec in tasks.items()
    }
    options = dict(architecture_args or {})
    if architecture == "hard":
        if options:
            raise TypeError(
                f"model.architecture_args: hard sharing takes none, got {options}"
            )
        return MultiTaskModel(network, heads, shared_stages=shared_stages)
    if shared_stages is not None:
        raise ValueError(
            f"model.shared_stages={shared_stages} is hard sharing's setting; "
            f"model.architecture={architecture} shares by its own rules (README "
            '"Soft sharing"): leave it null'
        )
    defaults = backbone_defaults(backbone) | args
    image_shape = (defaults.get("in_channels", 1), defaults["input_size"],
                   defaults["input_size"])  # fmt: skip
    soft = {"cross_stitch": (CrossStitchModel, ()),
            "mtan": (MTANModel, (image_shape,)),
            "mmoe": (MMoEModel, (image_shape,))}  # fmt: skip
    if architecture not in soft:
        raise ValueError(
            f"unknown model.architecture {architecture!r}; choose from {list(ARCHITECTURES)}"
        )
    cls, extra = soft[architecture]
    try:
        inspect.signature(cls).bind(network, heads, *extra, **options)
    except TypeError as error:
        raise TypeError(
            f"model.architecture_args for {architecture!r}: {error}"
        ) from None
    return cls(network, heads, *extra, **options)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(
        p.numel() for p in module.parameters() if p.requires_grad or not trainable_only
    )
