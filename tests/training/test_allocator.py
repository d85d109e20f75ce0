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
def step():
    blocks = [torch.ones(2**21) for _ in range(12)]  # 12 x 8 MiB
    del blocks
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(int(sys.argv[2])):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str, steps: int) -> int:
    done = subprocess.run([sys.executable, "-c", STEPS, mode, str(steps)], capture_output=True,
                          text=True, check=True, timeout=120)  # fmt: skip
    return int(done.stdout.split()[-1])


@glibc
def test_repeated_steps_stop_page_faulting_their_blocks():
    block = 2**23 // 4096  # page faults of one 8 MiB block
    # what 20 more steps add: by default the heap top goes back to the system after a
    # step and the next one faults it in again (1 to 35 blocks a step, by heap state);
    # with the setting the blocks stay (0 to 4 blocks in all, by heap layout)
    default = _page_faults("default", 30) - _page_faults("default", 10)
    tuned = _page_faults("tuned", 30) - _page_faults("tuned", 10)
    assert default >= 10 * block
    assert tuned * 20 <= default


@glibc
def test_settings_apply_once_and_report_success():
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # the same settings again: nothing to do
