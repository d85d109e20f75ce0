"""Peak memory of a block of work, as the efficiency report records it."""

from __future__ import annotations

import platform

import pytest
import torch
from torch import nn

from multitask_cnn.evaluation import inference_peak_memory
from multitask_cnn.training.memory import PeakMemory

linux = pytest.mark.skipif(platform.system() != "Linux", reason="/proc/self is Linux's")


@linux
def test_the_peak_counts_what_the_block_allocated_not_what_was_there():
    held = torch.ones(2**24)  # 64 MiB resident before the block: not counted
    with PeakMemory("cpu") as peak:
        block = torch.ones(2**25)  # 128 MiB, touched
        del block
    assert peak.method == PeakMemory.CPU
    assert 120 <= peak.megabytes < 200
    with PeakMemory("cpu") as idle:
        held += 1  # in place: no new memory
    assert idle.megabytes < 20
    del held


@linux
def test_the_peak_of_a_block_that_raises_is_still_measured():
    with pytest.raises(RuntimeError), PeakMemory("cpu") as peak:
        torch.ones(2**24).add_(1)
        raise RuntimeError("stop")
    assert peak.megabytes >= 60


@linux
def test_inference_peak_grows_with_the_batch():
    model = nn.Sequential(nn.Conv2d(1, 64, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.LazyLinear(10))  # fmt: skip
    images = torch.randn(512, 1, 36, 36)
    small, method = inference_peak_memory([model], images[:8], torch.device("cpu"))
    large, _ = inference_peak_memory([model], images, torch.device("cpu"))
    assert method == PeakMemory.CPU
    # conv output 512 x 64 x 36 x 36 float32 = 162 MiB, and its ReLU
    assert large >= 150 and large > 10 * max(small, 1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_peak_is_the_tensor_memory_allocated():
    with PeakMemory("cuda") as peak:
        block = torch.ones(2**25, device="cuda")
        del block
    assert peak.method == PeakMemory.CUDA
    assert peak.megabytes == pytest.approx(128, abs=1)
