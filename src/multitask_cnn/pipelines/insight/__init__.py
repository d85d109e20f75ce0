"""``insight``: robustness to corrupted images and generalisation, multi-task against
single-task models (each part off unless its ``insight.<part>`` is true)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
