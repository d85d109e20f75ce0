"""Training: devices, optimizers, loss-balancing strategies, batch sources, the loop
and its state."""

from .device import resolve_device
from .distributed import (
    DevicesError,
    LaunchedUnderTorchrunError,
    check_devices,
    refuse_torchrun,
)
from .driver import BatchSizeError, Budget, WarmStart, train_model
from .loop import (
    Freeze,
    GracefulStop,
    NonFiniteLossError,
    TrainingStopped,
    evaluate,
    fit,
    predict,
    train_one_epoch,
)
from .optimizers import OPTIMIZERS, build_optimizer
from .sources import (
    Batch,
    BatchSource,
    ChainedSource,
    FusedSource,
    InMemorySource,
    Split,
    fuse,
    in_turn,
    labelled_counts,
    task_splits,
    used_stats,
)
from .state import TrainState
from .strategies import WEIGHTINGS, Strategy, get_weighting

__all__ = [
    "BatchSizeError",
    "DevicesError",
    "LaunchedUnderTorchrunError",
    "check_devices",
    "refuse_torchrun",
    "Budget",
    "Freeze",
    "GracefulStop",
    "TrainingStopped",
    "WarmStart",
    "train_model",
    "OPTIMIZERS",
    "WEIGHTINGS",
    "Batch",
    "BatchSource",
    "ChainedSource",
    "FusedSource",
    "fuse",
    "in_turn",
    "labelled_counts",
    "task_splits",
    "used_stats",
    "InMemorySource",
    "NonFiniteLossError",
    "Split",
    "TrainState",
    "Strategy",
    "build_optimizer",
    "evaluate",
    "fit",
    "get_weighting",
    "predict",
    "resolve_device",
    "train_one_epoch",
]
