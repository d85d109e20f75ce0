"""Evaluation helpers of the library: Δm against single-task models, and what a model
costs (parameters, MACs, inference speed, peak memory)."""

from .delta_m import delta_m
from .efficiency import (
    cost_ratios,
    inference_peak_memory,
    inference_speed,
    inference_speeds,
    macs_per_image,
    parameter_counts,
)

__all__ = [
    "cost_ratios",
    "delta_m",
    "inference_peak_memory",
    "inference_speed",
    "inference_speeds",
    "macs_per_image",
    "parameter_counts",
]
