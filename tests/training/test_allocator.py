"""The host allocator settings: freed activations stay with the process, so a step
does not page-fault them in again (glibc only)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from multitask_cnn.training.allocator import keep_freed_memory

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="mallopt is glibc's",
)

# what a training step does to the heap: many megabyte blocks live at once, all freed
STEPS = """
import resource, sys, torch
from multitask_cnn.training.allocator import keep_freed_memory
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
elif sys.argv[1] == "mapped":  # the control: every block mapped, unmapped when freed
    assert keep_freed_memory(mmap_threshold_mb=1)
def step():
    blocks = [torch.ones(2**21) for _ in range(12)]  # 12 x 8 MiB
    del blocks
for _ in range(10):  # the heap settles
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(int(sys.argv[2])):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str, steps: int) -> int:
    """Minor page faults of ``steps`` steps after ten, in a fresh process."""
    done = subprocess.run([sys.executable, "-c", STEPS, mode, str(steps)], capture_output=True,
                          text=True, check=True, timeout=120)  # fmt: skip
    return int(done.stdout.split()[-1])


@glibc
def test_repeated_steps_stop_page_faulting_their_blocks():
    block = 2**23 // 4096  # page faults of one 8 MiB block
    # 20 steps after the heap settled. glibc's default thresholds move with the heap's
    # history: some processes fault the blocks in again at every step, some settle
    # (measured: 0 or 240 blocks in 20 steps). The control maps every block and hands
    # it back when freed, so each step faults all 12 in again; with the setting the
    # blocks stay with the process
    mapped = _page_faults("mapped", 20)
    tuned = _page_faults("tuned", 20)
    assert mapped >= 20 * 10 * block
    assert tuned <= 4 * block  # (0 to 3 blocks in all, by heap layout)


@glibc
def test_settings_apply_once_and_report_success():
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # the same settings again: nothing to do
