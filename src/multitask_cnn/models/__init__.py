"""Backbones (a registry of named-stage networks) and the multi-task models: hard
sharing (multitask.py) and soft sharing (soft.py)."""

from .backbones import (
    BACKBONES,
    Backbone,
    backbone_defaults,
    get_backbone,
    register_backbone,
)
from .multitask import ARCHITECTURES, MultiTaskModel, build_model, count_parameters
from .soft import stage_shapes

__all__ = [
    "ARCHITECTURES",
    "BACKBONES",
    "Backbone",
    "backbone_defaults",
    "MultiTaskModel",
    "build_model",
    "count_parameters",
    "get_backbone",
    "register_backbone",
    "stage_shapes",
]
