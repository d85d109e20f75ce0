"""Evaluation helpers of the library: Δm against single-task models."""

from .delta_m import delta_m

__all__ = ["delta_m"]
