"""Backbones (a registry of named-stage networks) and the multi-task model."""

from .backbones import (
    BACKBONES,
    Backbone,
    backbone_defaults,
    get_backbone,
    register_backbone,
)
from .multitask import MultiTaskModel, build_model, count_parameters

__all__ = [
    "BACKBONES",
    "Backbone",
    "backbone_defaults",
    "MultiTaskModel",
    "build_model",
    "count_parameters",
    "get_backbone",
    "register_backbone",
]
