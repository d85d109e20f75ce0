"""Backbones: networks made of an ordered sequence of named stages.

A stage is any ``nn.Module``; stages run in order and the last one returns a flat
feature vector of ``out_features``. :class:`~multitask_cnn.models.MultiTaskModel`
shares the first ``k`` stages between tasks and copies the rest per task, and weight
transfer maps parameters by stage name, so stage names are part of the contract.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from multitask_cnn.registry import Registry

__all__ = [
    "BACKBONES",
    "Backbone",
    "backbone_defaults",
    "get_backbone",
    "register_backbone",
]


class Backbone(nn.Module):
    """An ordered set of named stages with a known output width."""

    def __init__(self, stages: OrderedDict[str, nn.Module], out_features: int) -> None:
        super().__init__()
        self.stages = nn.ModuleDict(stages)
        self.out_features = out_features

    @property
    def stage_names(self) -> list[str]:
        return list(self.stages.keys())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages.values():
            x = stage(x)
        return x


BackboneFactory = Callable[..., Backbone]
BACKBONES: Registry[BackboneFactory] = Registry("backbone")


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Register a backbone factory (keyword-only arguments) under ``name``."""
    return BACKBONES.register(name)


def get_backbone(name: str, **kwargs: Any) -> Backbone:
    """Build the backbone registered as ``name`` with keyword arguments ``kwargs``."""
    factory = BACKBONES.get(name)
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as error:
        raise TypeError(f"model.backbone_args for {name!r}: {error}") from None
    return factory(**kwargs)


def backbone_defaults(name: str) -> dict[str, Any]:
    """The factory's default arguments that a YAML file can set (plain values only)."""
    plain = (bool, int, float, str, tuple, list, type(None))
    return {
        arg: list(p.default) if isinstance(p.default, tuple) else p.default
        for arg, p in inspect.signature(BACKBONES.get(name)).parameters.items()
        if p.default is not inspect.Parameter.empty and isinstance(p.default, plain)
    }


def _conv_stage(conv: nn.Conv2d, norm: nn.Module | None, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [conv]
    if norm is not None:
        layers.append(norm)
    layers.append(nn.ReLU(inplace=True))
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


@register_backbone("lenet")
def lenet(*, in_channels: int = 1, input_size: int = 36, hidden: int = 50) -> Backbone:
    """The Pareto-MTL LeNet (Lin et al. 2019): two conv stages and one FC stage.

    conv 1→10 k9, ReLU, maxpool 2 → conv 10→20 k5, ReLU, maxpool 2 → FC 500→50, ReLU
    (500 = 20·5·5 for the 36×36 MultiFashion input).
    """
    side = ((input_size - 8) // 2 - 4) // 2
    if side < 1:
        raise ValueError(f"lenet needs input_size >= 18, got {input_size}")
    flat = 20 * side * side
    stages = OrderedDict(
        conv1=_conv_stage(nn.Conv2d(in_channels, 10, kernel_size=9), None, pool=True),
        conv2=_conv_stage(nn.Conv2d(10, 20, kernel_size=5), None, pool=True),
        fc=nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(inplace=True)),
    )
    return Backbone(stages, out_features=hidden)


@register_backbone("convnet")
def convnet(
    *,
    in_channels: int = 1,
    input_size: int = 36,
    widths: tuple[int, int, int] = (16, 32, 64),
    hidden: int = 128,
    dropout: float = 0.3,
    norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
) -> Backbone:
    """A deeper conv net: three conv-BN-ReLU-maxpool stages, then FC with dropout."""
    c1, c2, c3 = widths
    side = input_size // 8
    if side < 1:
        raise ValueError(f"convnet needs input_size >= 8, got {input_size}")

    def conv(cin: int, cout: int) -> nn.Conv2d:
        return nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False)

    stages = OrderedDict(
        block1=_conv_stage(conv(in_channels, c1), norm_layer(c1), pool=True),
        block2=_conv_stage(conv(c1, c2), norm_layer(c2), pool=True),
        block3=_conv_stage(conv(c2, c3), norm_layer(c3), pool=True),
        fc=nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(c3 * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        ),
    )
    return Backbone(stages, out_features=hidden)


@register_backbone("resnet18")
def resnet18(
    *, in_channels: int = 1, input_size: int = 36, small_input: bool = True
) -> Backbone:
    """torchvision's ResNet-18 (He et al. 2016; ``torchvision.models.resnet18``, no
    weights downloaded) as named stages: ``stem``, ``layer1`` … ``layer4``, ``pool``.

    The stem keeps torchvision's module names (``stem.conv1``, ``stem.bn1``, ...) and
    the layers theirs, so a torchvision state_dict maps over with renames such as
    ``conv1.* -> backbone.stem.conv1.*`` and ``layer* -> backbone.layer*``. The first
    convolution takes ``in_channels``. ``small_input`` (for 36×36 canvases) makes it a
    3×3 stride-1 convolution with no max-pool, as for CIFAR; otherwise it is
    torchvision's 7×7 stride-2 convolution followed by a 3×3 stride-2 max-pool.
    """
    from torchvision.models import resnet18 as torchvision_resnet18

    if input_size < (8 if small_input else 32):
        raise ValueError(
            f"resnet18 (small_input={small_input}) needs input_size >= "
            f"{8 if small_input else 32}, got {input_size}"
        )
    net = torchvision_resnet18(weights=None)
    if small_input:
        conv1 = nn.Conv2d(
            in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False
        )
        maxpool: nn.Module = nn.Identity()
    else:
        conv1 = nn.Conv2d(
            in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False
        )
        maxpool = net.maxpool
    nn.init.kaiming_normal_(
        conv1.weight, mode="fan_out", nonlinearity="relu"
    )  # as torchvision
    stages = OrderedDict(
        stem=nn.Sequential(
            OrderedDict(conv1=conv1, bn1=net.bn1, relu=net.relu, maxpool=maxpool)
        ),
        layer1=net.layer1,
        layer2=net.layer2,
        layer3=net.layer3,
        layer4=net.layer4,
        pool=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
    )
    return Backbone(stages, out_features=net.fc.in_features)
