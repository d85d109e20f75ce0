"""``TrainState``: everything a resume needs, as one object with a plain state dict.

The state dict holds only tensors, numbers, strings, lists and dicts, so it is saved
with ``torch.save`` and loaded with ``weights_only=True`` through the catalog's atomic
:class:`~multitask_cnn.io.TorchDataset`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .sources import BatchSource
from .strategies import Strategy

__all__ = ["TrainState"]

FORMAT_VERSION = 3  # 1: the strategy's state was under 'weighting'; 2: without the
# loss strategies' last labelled losses and TorchJD's Nash-MTL / GradVac / ExcessMTL state


def _cpu_copy(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


@dataclass
class TrainState:
    """Model, optimizer and loss-balancing strategy, plus the loop's bookkeeping.

    ``epoch`` counts completed epochs; ``best_*`` describe the epoch with the lowest
    ``val.loss`` so far; ``bad_epochs`` counts epochs since it (early stopping);
    ``rng`` holds the torch RNG states and the training data order after ``epoch``.

    After :func:`~multitask_cnn.training.fit` the model holds the best weights
    (:meth:`hold_best`); the last epoch's weights, which a resume continues from, are
    kept aside and are what :meth:`state_dict` saves.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    strategy: Strategy
    epoch: int = 0
    best_epoch: int = 0
    best_loss: float = math.inf
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)
    rng: dict[str, Any] = field(default_factory=dict)
    last_state: dict[str, torch.Tensor] | None = (
        None  # set while the model holds the best
    )
    # peak memory of the training (MiB) and how it was measured (training/memory.py);
    # set by train_model, not part of the state dict
    peak_memory_mb: float | None = None
    peak_memory_method: str | None = None
    scaler: torch.amp.GradScaler | None = None  # fp16's gradient scaler (precision.py)

    def hold_best(self) -> None:
        """Load the best epoch's weights into the model, keeping the last ones aside."""
        if self.best_state is not None and self.last_state is None:
            self.last_state = _cpu_copy(self.model.state_dict())
            self.model.load_state_dict(
                self.best_state
            )  # copies into the live parameters

    def hold_last(self) -> None:
        """Undo :meth:`hold_best`: the model continues from the last epoch's weights."""
        if self.last_state is not None:
            self.model.load_state_dict(self.last_state)
            self.last_state = None

    def end_epoch(
        self,
        record: dict[str, float],
        val_loss: float,
        min_delta: float,
        patience: int,
        train: BatchSource,
    ) -> None:
        """Book one finished epoch: history, best weights, patience, RNG state."""
        self.epoch += 1
        self.history.append(record)
        if val_loss < self.best_loss - min_delta:
            self.best_loss, self.best_epoch, self.bad_epochs = val_loss, self.epoch, 0
            self.best_state = _cpu_copy(self.model.state_dict())
        else:
            self.bad_epochs += 1
            self.stopped_early = self.bad_epochs >= patience
        self.rng = capture_rng(train)

    def state_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "model": self.last_state
            or _cpu_copy(self.model.state_dict()),  # the last epoch's
            "optimizer": self.optimizer.state_dict(),
            "strategy": self.strategy.state_dict(),
            "epoch": self.epoch,
            "best_epoch": self.best_epoch,
            "best_loss": self.best_loss,
            "best_state": self.best_state,
            "bad_epochs": self.bad_epochs,
            "stopped_early": self.stopped_early,
            "history": [dict(r) for r in self.history],
            "rng": self.rng,
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict` (model, optimizer and strategy in place)."""
        if state.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"train state format {state.get('format_version')!r} is not "
                f"{FORMAT_VERSION}; it was written by another version of this project"
            )
        self.model.load_state_dict(state["model"])
        self.last_state = None
        self.optimizer.load_state_dict(state["optimizer"])
        self.strategy.load_state_dict(state["strategy"])
        self.epoch, self.best_epoch = state["epoch"], state["best_epoch"]
        self.best_loss, self.best_state = state["best_loss"], state["best_state"]
        self.bad_epochs, self.stopped_early = (
            state["bad_epochs"],
            state["stopped_early"],
        )
        self.history = [dict(r) for r in state["history"]]
        self.rng = dict(state["rng"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def restore_rng(self, train: BatchSource) -> None:
        """Put the RNGs and ``train``'s data order back where :attr:`rng` says."""
        if "torch" in self.rng:
            torch.set_rng_state(self.rng["torch"])
        if "python" in self.rng:
            version, state, gauss = self.rng["python"]
            random.setstate((version, tuple(state), gauss))
        if "numpy" in self.rng:
            kind, keys, position, has_gauss, gauss = self.rng["numpy"]
            np.random.set_state(
                (kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss)
            )
        if self.rng.get("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.rng["cuda"])
        if "data_order" in self.rng:
            train.load_state_dict(self.rng["data_order"])


def capture_rng(train: BatchSource) -> dict[str, Any]:
    """Python's, NumPy's and torch's CPU (and CUDA) RNG states and ``train``'s data
    order, now (plain types and tensors: loadable with ``weights_only=True``)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    version, state, python_gauss = random.getstate()
    rng: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "data_order": train.state_dict(),
        "python": [version, list(state), python_gauss],
        "numpy": [
            kind,
            torch.from_numpy(keys.astype(np.int64)),
            position,
            has_gauss,
            gauss,
        ],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng
