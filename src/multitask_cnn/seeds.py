"""Independent random streams, one per purpose, all derived from one seed.

Each purpose (train composites, val composites, test composites, data order, model
init, ...) gets its own child of ``np.random.SeedSequence(seed)``, found by *name*, so
drawing more or fewer numbers for one purpose (say a larger ``n_test``) never moves
another purpose's numbers. A name's stream depends only on the seed and the name.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["numpy_generator", "seed_sequence", "torch_seed"]


def seed_sequence(seed: int, purpose: str) -> np.random.SeedSequence:
    """The seed sequence of ``purpose`` under ``seed`` (independent of other purposes).

    The purpose name is hashed into the sequence's spawn key, so streams need no
    registration and adding a purpose later changes none of the existing ones.
    """
    key = int.from_bytes(
        hashlib.blake2b(purpose.encode(), digest_size=8).digest(), "big"
    )
    return np.random.SeedSequence(entropy=seed, spawn_key=(key,))


def numpy_generator(seed: int, purpose: str) -> np.random.Generator:
    """A NumPy generator for ``purpose``."""
    return np.random.default_rng(seed_sequence(seed, purpose))


def torch_seed(seed: int, purpose: str) -> int:
    """A 63-bit integer seed for ``torch.manual_seed`` / ``torch.Generator`` for ``purpose``."""
    return int(seed_sequence(seed, purpose).generate_state(1, dtype=np.uint64)[0] >> 1)
