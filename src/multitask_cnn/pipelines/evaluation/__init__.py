"""``evaluation``: per-task test metrics, confusion matrices and MLflow metrics."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
