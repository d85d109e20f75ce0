"""``multitask_training``: train the shared multi-task CNN, keep the best epoch."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
