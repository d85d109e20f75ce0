"""Soft parameter sharing: each task keeps its own columns (or its own mixture of
shared experts) and learns how much to borrow from the others.

Every architecture here is built from a :class:`~multitask_cnn.models.Backbone` and
its named stages, answers ``forward(x, rows)`` with ``{task: output}`` as
:class:`~multitask_cnn.models.MultiTaskModel` does, and says which parameters every
task's loss depends on (:meth:`shared_parameters`: what gradient-level strategies
aggregate) and which only one task's does (:meth:`task_parameters`).

- ``cross_stitch`` (Misra et al., "Cross-stitch Networks for Multi-task Learning",
  CVPR 2016): one backbone column per task (``task_stages.<task>.<stage>``, so
  weight transfer fills each column from the source); after each stage of
  ``stitch_after`` the columns' outputs are mixed by a learned ``T × T`` matrix
  (``stitches.<stage>``) initialised to 0.9 on the diagonal and 0.1 / (T − 1)
  elsewhere. Shared: every column's stages up to the last stitch, and the stitches.
- ``mtan`` (Liu et al., "End-to-End Multi-Task Learning with Attention", CVPR 2019):
  one shared column (``shared.<stage>``) and, per task, a soft attention mask at every
  stage whose output is an image (``attention.<task>.<stage>``: two 1×1 convolutions
  with batch norm, then a sigmoid) on the shared stage's output, fed by the task's
  previous attended features; the stages after the last image stage (the FC stage)
  run with the shared weights on each task's attended features. Shared: the column.
- ``mmoe`` (Ma et al., "Modeling Task Relationships in Multi-task Learning with
  Multi-gate Mixture-of-Experts", KDD 2018): the first ``shared_bottom`` stages
  shared (``shared.<stage>``), then ``experts`` copies of the remaining stages
  (``experts.<i>.<stage>``, each drawn afresh: identical experts would leave the
  gates nothing to choose), mixed per task by a softmax gate (``gates.<task>``: a
  linear layer on the bottom's output average-pooled to 4×4). Shared: the bottom and
  the experts.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import Backbone

__all__ = ["CrossStitchModel", "MMoEModel", "MTANModel", "stage_shapes"]


@torch.no_grad()
def stage_shapes(backbone: Backbone, image_shape: tuple[int, ...]) -> dict[str, tuple]:
    """``{stage: output shape of one image}`` from a dry run (eval mode)."""
    was_training = backbone.training
    backbone.eval()
    x = torch.zeros((2, *image_shape))
    shapes = {}
    for name, stage in backbone.stages.items():
        x = stage(x)
        shapes[name] = tuple(x.shape[1:])
    backbone.train(was_training)
    return shapes


def _reinitialised(module: nn.Module) -> nn.Module:
    """``module`` with every layer's parameters drawn afresh (its own
    ``reset_parameters``, from the current random state): copies that start apart."""
    for layer in module.modules():
        if layer is not module and hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
    return module


def _last_layers(columns: Sequence[nn.Module]) -> list[nn.Parameter]:
    """The last convolution or linear layer's parameters of each of ``columns``."""
    found = []
    for column in columns:
        layers = [m for m in column.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
        if layers:
            found += list(layers[-1].parameters())
    return found


class _SoftModel(nn.Module):
    """What the training loop and the reports need of any multi-task network."""

    architecture = ""
    # no single tensor separates the shared parameters from the tasks' own:
    # gradient-level strategies take each task's gradient through the whole network
    features_cut = False
    shared_stages = 0  # hard sharing's setting; soft models share by their own rules

    def __init__(self, heads: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.heads = nn.ModuleDict(dict(heads))
        self.shared = nn.ModuleDict()
        self.task_stages = nn.ModuleDict({task: nn.ModuleDict() for task in heads})

    @property
    def tasks(self) -> list[str]:
        return list(self.heads.keys())

    def shared_features(self, x: torch.Tensor) -> torch.Tensor:
        """The input itself: a soft model's tasks part ways from the first stage."""
        return x

    def forward(
        self, x: torch.Tensor, rows: Mapping[str, slice] | None = None
    ) -> dict[str, torch.Tensor]:
        return self.task_outputs(x, rows)

    def task_outputs(
        self, x: torch.Tensor, rows: Mapping[str, slice] | None = None
    ) -> dict[str, torch.Tensor]:
        """Each task's output; with ``rows`` (a fused batch) only the tasks it names,
        each on its own rows (the columns run on the whole batch)."""
        features = self.task_features(x, list(self.heads if rows is None else rows))
        outputs = {}
        for task, value in features.items():
            block = None if rows is None else rows[task]
            if block is not None and block != slice(None):
                value = value[block]
            out = self.heads[task](value)
            outputs[task] = out.squeeze(1) if out.shape[1] == 1 else out
        return outputs

    def task_features(
        self, x: torch.Tensor, tasks: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def shared_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        raise NotImplementedError

    def last_shared_layer(self) -> list[nn.Parameter]:
        """The parameters of the last convolution or linear layer among the shared
        ones (GradNorm measures the task gradients there)."""
        shared = {id(p) for p in self.shared_parameters()}
        for module in reversed(list(self.modules())):
            if isinstance(module, nn.Conv2d | nn.Linear) and all(
                id(p) in shared for p in module.parameters()
            ):
                return list(module.parameters())
        return []


class CrossStitchModel(_SoftModel):
    """One column per task, mixed after the stages of ``stitch_after`` (default: every
    stage but the last)."""

    architecture = "cross_stitch"

    def __init__(
        self,
        backbone: Backbone,
        heads: Mapping[str, nn.Module],
        stitch_after: Sequence[str] | None = None,
    ) -> None:
        super().__init__(heads)
        names = backbone.stage_names
        if isinstance(stitch_after, str):  # one stage, as YAML or --params give it
            stitch_after = [stitch_after]
        stitched = list(names[:-1] if stitch_after is None else stitch_after)
        unknown = [s for s in stitched if s not in names]
        if unknown or not stitched:
            raise ValueError(
                f"model.architecture_args.stitch_after={list(stitched)}: name one or more "
                f"stages of the backbone {names}"
            )
        self.stage_order = names
        self.task_stages = nn.ModuleDict({
            task: nn.ModuleDict({n: copy.deepcopy(backbone.stages[n]) for n in names})
            for task in heads
        })  # fmt: skip
        n = len(heads)
        start = torch.full((n, n), 0.1 / max(n - 1, 1)).fill_diagonal_(0.9)
        self.stitches = nn.ParameterDict(
            {stage: nn.Parameter(start.clone()) for stage in names if stage in stitched}
        )
        self.last_stitch = max(names.index(s) for s in stitched)

    def task_features(
        self, x: torch.Tensor, tasks: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        columns = {task: x for task in self.heads}
        for index, stage in enumerate(self.stage_order):
            # past the last stitch a column serves its task only
            needed = self.heads if index <= self.last_stitch else tasks
            columns = {t: self.task_stages[t][stage](columns[t]) for t in needed}
            if stage in self.stitches:
                stacked = torch.stack([columns[t] for t in self.heads])  # (T, B, ...)
                # in the columns' dtype: autocast (bf16, fp16) does not cast tensordot
                stitch = self.stitches[stage].to(stacked.dtype)
                mixed = torch.tensordot(stitch, stacked, dims=1)
                columns = dict(zip(self.heads, mixed.unbind(0), strict=True))
        return {task: columns[task] for task in tasks}

    def shared_parameters(self) -> list[nn.Parameter]:
        up_to = self.stage_order[: self.last_stitch + 1]
        stages = [p for t in self.heads for s in up_to
                  for p in self.task_stages[t][s].parameters()]  # fmt: skip
        return stages + list(self.stitches.parameters())

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        after = self.stage_order[self.last_stitch + 1 :]
        own = [p for s in after for p in self.task_stages[task][s].parameters()]
        return own + list(self.heads[task].parameters())

    def last_shared_layer(self) -> list[nn.Parameter]:
        """The last layer up to the last stitch in every column (each task reaches
        its own column most: one column alone would favour its task)."""
        up_to = self.stage_order[: self.last_stitch + 1]
        return _last_layers(
            [nn.ModuleList(self.task_stages[t][s] for s in up_to) for t in self.heads]
        )


class _Attention(nn.Module):
    """MTAN's attention module: ``[shared, previous task features] → mask in (0, 1)``."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.mask = nn.Sequential(
            nn.Conv2d(in_channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask(x)


class MTANModel(_SoftModel):
    """A shared column and a task attention mask at each of its image stages."""

    architecture = "mtan"

    def __init__(
        self,
        backbone: Backbone,
        heads: Mapping[str, nn.Module],
        image_shape: tuple[int, ...],
    ) -> None:
        super().__init__(heads)
        shapes = stage_shapes(backbone, image_shape)
        self.shared = nn.ModuleDict(dict(backbone.stages.items()))
        self.spatial = [s for s, shape in shapes.items() if len(shape) == 3]
        if not self.spatial or self.spatial != list(shapes)[: len(self.spatial)]:
            raise ValueError(
                "model.architecture=mtan needs backbone stages whose outputs are images "
                f"first, then flat ones; got {shapes}"
            )
        attention = {}
        previous = 0
        for stage in self.spatial:
            channels = shapes[stage][0]
            attention[stage] = channels + previous
            previous = channels
        self.attention = nn.ModuleDict({
            task: nn.ModuleDict({s: _Attention(c_in, shapes[s][0])
                                 for s, c_in in attention.items()})
            for task in heads
        })  # fmt: skip

    def task_features(
        self, x: torch.Tensor, tasks: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        column = {}
        for stage in self.spatial:  # the shared column, once
            x = self.shared[stage](x)
            column[stage] = x
        rest = list(self.shared)[len(self.spatial) :]
        features = {}
        for task in tasks:
            attended = None
            for stage in self.spatial:
                inputs = column[stage]
                if attended is not None:
                    size = inputs.shape[-2:]
                    inputs = torch.cat(
                        [inputs, F.adaptive_avg_pool2d(attended, size)], 1
                    )
                attended = self.attention[task][stage](inputs) * column[stage]
            for stage in rest:  # the shared weights, on the task's attended features
                attended = self.shared[stage](attended)
            features[task] = attended
        return features

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.shared.parameters())

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        return [*self.attention[task].parameters(), *self.heads[task].parameters()]


GATE_GRID = 4  # the gates read the bottom's output average-pooled to 4 × 4


class MMoEModel(_SoftModel):
    """A shared bottom, ``experts`` copies of the remaining stages and a softmax gate
    per task."""

    architecture = "mmoe"

    def __init__(
        self,
        backbone: Backbone,
        heads: Mapping[str, nn.Module],
        image_shape: tuple[int, ...],
        experts: int = 3,
        shared_bottom: int = 0,
    ) -> None:
        super().__init__(heads)
        names = backbone.stage_names
        if isinstance(experts, bool) or not isinstance(experts, int) or experts < 2:
            raise ValueError(
                f"model.architecture_args.experts={experts!r}: a whole number, at least 2"
            )
        if not 0 <= shared_bottom < len(names):
            raise ValueError(
                f"model.architecture_args.shared_bottom={shared_bottom}: 0 to "
                f"{len(names) - 1} (the experts need at least one of {names})"
            )
        shapes = stage_shapes(backbone, image_shape)
        bottom = image_shape if shared_bottom == 0 else shapes[names[shared_bottom - 1]]
        if len(bottom) != 3:
            raise ValueError(
                f"model.architecture_args.shared_bottom={shared_bottom}: the gates read "
                f"an image, but {names[shared_bottom - 1]!r} outputs {bottom}"
            )
        self.shared = nn.ModuleDict(
            {n: backbone.stages[n] for n in names[:shared_bottom]}
        )
        self.experts = nn.ModuleList(
            _reinitialised(
                nn.ModuleDict(
                    {
                        n: copy.deepcopy(backbone.stages[n])
                        for n in names[shared_bottom:]
                    }
                )
            )
            for _ in range(experts)
        )
        self.gates = nn.ModuleDict(
            {
                task: nn.Linear(bottom[0] * GATE_GRID * GATE_GRID, experts)
                for task in heads
            }
        )

    def gate_weights(self, bottom: torch.Tensor, task: str) -> torch.Tensor:
        """``(B, experts)``: ``task``'s gate, a softmax over the experts per image."""
        pooled = F.adaptive_avg_pool2d(bottom, GATE_GRID).flatten(1)
        return torch.softmax(self.gates[task](pooled), dim=1)

    def task_features(
        self, x: torch.Tensor, tasks: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        for stage in self.shared.values():
            x = stage(x)
        outputs = []
        for expert in self.experts:
            y = x
            for stage in expert.values():
                y = stage(y)
            outputs.append(y)
        stacked = torch.stack(outputs, 1)  # (B, experts, features)
        return {task: (self.gate_weights(x, task).unsqueeze(2) * stacked).sum(1)
                for task in tasks}  # fmt: skip

    def shared_parameters(self) -> list[nn.Parameter]:
        return [*self.shared.parameters(), *self.experts.parameters()]

    def last_shared_layer(self) -> list[nn.Parameter]:
        """The last layer of every expert."""
        return _last_layers(list(self.experts))

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        return [*self.gates[task].parameters(), *self.heads[task].parameters()]
