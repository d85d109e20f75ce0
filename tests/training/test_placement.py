"""Where the training data lives: on the GPU once when it fits in the stated share of
its free memory, else in pinned host memory; as it is off CUDA (the free-memory figure
is mocked: no GPU here)."""

import numpy as np
import torch

from multitask_cnn.training import Split
from multitask_cnn.training.placement import data_placement, place_split, split_nbytes

CUDA, CPU = torch.device("cuda"), torch.device("cpu")
GiB = 2**30


def test_auto_puts_the_data_on_the_gpu_when_it_fits_in_the_share_of_free_memory():
    free = lambda device: 10 * GiB  # noqa: E731
    assert data_placement(4 * GiB, CUDA, "auto", 0.5, free_bytes=free) == "device"
    assert data_placement(6 * GiB, CUDA, "auto", 0.5, free_bytes=free) == "pinned"
    assert data_placement(6 * GiB, CUDA, "auto", 0.8, free_bytes=free) == "device"
    # asked for: as asked, whatever the memory
    assert data_placement(60 * GiB, CUDA, True, free_bytes=free) == "device"
    assert data_placement(1, CUDA, False, free_bytes=free) == "pinned"
    # off CUDA, or streamed from a memory-mapped cache: left as it is
    assert data_placement(1, CPU, True, free_bytes=free) == "host"
    assert data_placement(1, CUDA, "auto", streamed=True, free_bytes=free) == "host"


def test_a_split_s_size_counts_images_and_labels_and_stays_put_on_the_cpu():
    images = torch.zeros(100, 1, 36, 36, dtype=torch.uint8)
    split = Split(images, {"left": torch.zeros(100, dtype=torch.int64)}, 0.1, 0.3)
    assert split_nbytes(split) == 100 * 36 * 36 + 100 * 8
    assert place_split(split, CPU, True) is split
    memmap = Split(np.zeros((100, 1, 36, 36), np.uint8), dict(split.labels), 0.1, 0.3)
    assert split_nbytes(memmap) == split_nbytes(split)
