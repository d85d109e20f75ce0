"""Host-memory allocator settings for training.

PyTorch's CPU tensors come from glibc ``malloc``. Its defaults hand blocks above a
*dynamic* threshold (128 KiB at start) to ``mmap`` and give the top of the heap back to
the system whenever 128 KiB of it is free, so a training step that frees and allocates
its activations (megabytes each) page-faults them in again, step after step, until the
thresholds have crept up. Measured on the default run (LeNet, batch 256): the first
epoch took 1.96 million page faults and 5 s of system time more than the second, 15.5 s
against 13.7 s (``bench/training_node.py`` prints it). Fixing both thresholds keeps
such blocks on the heap from the first step; the cost is that up to
``trim_threshold_mb`` of freed memory stays with the process.

Only glibc has ``mallopt``; elsewhere (macOS, musl) nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

__all__ = ["keep_freed_memory"]

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX_MB = 32  # glibc's ceiling on 64-bit systems (larger: refused)
_done: tuple[int, int] | None = None


def keep_freed_memory(
    mmap_threshold_mb: int = 32, trim_threshold_mb: int = 256
) -> bool:
    """Serve blocks below ``mmap_threshold_mb`` from the heap and keep up to
    ``trim_threshold_mb`` of freed heap (glibc ``mallopt``), for this process. Returns
    whether the settings are in force; applying the same settings again does nothing."""
    global _done
    settings = (min(mmap_threshold_mb, _MMAP_THRESHOLD_MAX_MB), trim_threshold_mb)
    if _done == settings:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mmap_mb, trim_mb = settings
    ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_mb << 20)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, trim_mb << 20)
    )
    if ok:
        _done = settings
        logger.info(
            "Host allocator: blocks under %d MiB from the heap, up to %d MiB of freed "
            "heap kept (glibc mallopt; saves re-faulting each step's activations)",
            mmap_mb, trim_mb,
        )  # fmt: skip
    else:
        logger.warning("glibc mallopt refused the allocator settings %s", settings)
    return ok
