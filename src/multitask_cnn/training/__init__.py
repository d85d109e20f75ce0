"""Training: devices, task kinds (losses), loss weighting strategies and the loop."""

from .device import resolve_device, seed_everything
from .kinds import TASK_KINDS, TaskKind
from .loop import FitResult, Split, evaluate, fit, predict, train_one_epoch
from .weighting import WEIGHTINGS, Weighting, get_weighting

__all__ = [
    "TASK_KINDS",
    "WEIGHTINGS",
    "FitResult",
    "Split",
    "TaskKind",
    "Weighting",
    "evaluate",
    "fit",
    "get_weighting",
    "predict",
    "resolve_device",
    "seed_everything",
    "train_one_epoch",
]
