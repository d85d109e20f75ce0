"""Where the training data lives during training (``training.data_on_device``).

On a CUDA device the training split is moved there once, before the first epoch, when
it fits in ``training.device_memory_share`` of the device's free memory: each step then
indexes and normalises its batch on the device, with no copy from the host. A split
that does not fit stays on the host in pinned (page-locked) memory, from which each
batch is copied without blocking (:meth:`~multitask_cnn.training.sources.Batch.to`).
Elsewhere (CPU; MPS, whose memory is the host's) the data stays where it is, as does
a split streamed from a memory-mapped cache (README "Your own images").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch

from .sources import Split

__all__ = ["Placement", "data_placement", "place_split", "split_nbytes"]

logger = logging.getLogger(__name__)

Placement = Literal["device", "pinned", "host"]


def split_nbytes(split: Split) -> int:
    """Bytes of a split's images and labels."""
    images = split.images
    size = (
        images.nbytes
        if isinstance(images, np.ndarray)
        else images.numel() * images.element_size()
    )
    return size + sum(y.numel() * y.element_size() for y in split.labels.values())


def _free_bytes(device: torch.device) -> int:
    free, _ = torch.cuda.mem_get_info(device)
    return free


def data_placement(
    nbytes: int,
    device: torch.device,
    setting: bool | str = "auto",
    share: float = 0.5,
    *,
    streamed: bool = False,
    free_bytes: Callable[[torch.device], int] = _free_bytes,
) -> Placement:
    """``device`` when the data goes to ``device`` once, ``pinned`` when it stays in
    pinned host memory, ``host`` when it stays as it is (not CUDA, or ``streamed``
    from a memory-mapped file). ``setting``: ``auto`` (on the device when ``nbytes``
    fits in ``share`` of its free memory), ``True`` (on the device), ``False``."""
    if device.type != "cuda" or streamed:
        return "host"
    if setting == "auto":
        return "device" if nbytes <= share * free_bytes(device) else "pinned"
    return "device" if setting else "pinned"


def place_split(
    split: Split, device: torch.device, setting: bool | str = "auto", share: float = 0.5
) -> Split:
    """``split`` where :func:`data_placement` says, logged."""
    nbytes = split_nbytes(split)
    where = data_placement(nbytes, device, setting, share,
                           streamed=isinstance(split.images, np.ndarray))  # fmt: skip
    if where == "host":
        return split
    if where == "device":
        moved = split.images.to(device)
        labels = {t: y.to(device) for t, y in split.labels.items()}
    else:
        moved = split.images.pin_memory()
        labels = {t: y.pin_memory() for t, y in split.labels.items()}
    logger.info("Training data (%.0f MB) %s", nbytes / 2**20,
                f"on {device}" if where == "device" else "in pinned host memory")  # fmt: skip
    return Split(moved, labels, split.mean, split.std, split.target_scaling)
