"""``pretraining``: the backbone trained on a source task, reused while its inputs are
unchanged."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
