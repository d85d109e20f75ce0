"""Peak memory of a block of work (training a model, a batch of inference).

On CUDA it is the most tensor memory allocated on the device
(``torch.cuda.max_memory_allocated``, reset on entry). On the CPU, where PyTorch keeps
no such count, it is how far the process's resident set rose above where it stood on
entry: Linux's high-water mark ``VmHWM``, reset on entry through
``/proc/self/clear_refs``, after ``malloc_trim`` has handed freed heap back to the
system (else memory a previous step freed and kept would hide this step's need).
That figure counts every allocation of the process, tensors and Python objects alike,
to the page. Elsewhere the peak is not measured (``None``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import re
from pathlib import Path
from types import TracebackType

import torch

__all__ = ["PeakMemory"]

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    if match is None:
        raise OSError(f"{field} not in {_STATUS}")
    return int(match.group(1))


def _trim_heap() -> None:
    if platform.libc_ver()[0] == "glibc":
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


class PeakMemory:
    """``with PeakMemory(device) as peak: ...``; then ``peak.megabytes`` (MiB, or
    None where it cannot be measured) and ``peak.method`` (how it was measured)."""

    CUDA = "cuda max_memory_allocated"
    CPU = "process resident set, high-water mark above the start"

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.megabytes: float | None = None
        self.method: str | None = None
        self._start_kib = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start_bytes = torch.cuda.memory_allocated(self.device)
            self.method = self.CUDA
        elif self._cpu_measurable():
            _trim_heap()
            _CLEAR_REFS.write_text("5")  # VmHWM := VmRSS
            self._start_kib = _status_kib("VmRSS")
            self.method = self.CPU
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.method == self.CUDA:
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) - self._start_bytes
            self.megabytes = peak / 2**20
        elif self.method == self.CPU:
            self.megabytes = (_status_kib("VmHWM") - self._start_kib) / 1024

    @staticmethod
    def _cpu_measurable() -> bool:
        if platform.system() != "Linux":
            return False
        try:
            _status_kib("VmHWM")
            with _CLEAR_REFS.open("w"):
                pass
        except OSError:
            return False
        return True
