"""``insight``: which stages to share, what each task looks at, robustness to
corrupted images and generalisation, multi-task against single-task models (each part
runs when its ``insight.<part>`` is true; README "Insight" says which are by default)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
