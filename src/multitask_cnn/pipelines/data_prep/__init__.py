"""``data_prep``: Fashion-MNIST → MultiFashion model-input tensors and a data report."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
