"""``weight_transfer``: the multi-task model filled from a pretrained backbone (or any
state_dict file) through an explicit, reported mapping."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
