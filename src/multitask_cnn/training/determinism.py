"""Deterministic algorithms for the whole process (``training.deterministic``).

With the same seed, data, code, environment and thread count, training on the CPU gives
the same weights bit for bit either way here; this setting makes torch *refuse* an
operation that has no deterministic implementation instead of running it, and on CUDA
picks deterministic cuDNN convolutions and a fixed cuBLAS workspace
(``CUBLAS_WORKSPACE_CONFIG=:4096:8``, which must be set before cuBLAS starts).
"""

from __future__ import annotations

import logging
import os

import torch

__all__ = ["set_deterministic"]

logger = logging.getLogger(__name__)

CUBLAS_WORKSPACE = ":4096:8"


def set_deterministic(enabled: bool) -> None:
    """Turn deterministic algorithms on or off for this process."""
    if enabled and "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = False
    if enabled:
        logger.info("Deterministic algorithms on (torch, cuDNN, cuBLAS workspace %s)",
                    os.environ["CUBLAS_WORKSPACE_CONFIG"])  # fmt: skip
