"""``baselines``: one single-task model per task, reused while its inputs are unchanged."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
