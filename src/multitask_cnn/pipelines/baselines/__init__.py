"""The ``baselines`` pipeline: one single-task model per task, for Δm."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
