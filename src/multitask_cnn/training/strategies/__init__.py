"""Loss-balancing strategies, chosen by name (``training.weighting``): one short file
per loss-level method, TorchJD's gradient aggregators in ``aggregators.py``."""

from . import aggregators, dwa, equal, famo, gradnorm, rlw, static, uncertainty  # noqa: F401
from .base import WEIGHTINGS, LossStrategy, Step, Strategy, get_weighting

__all__ = ["WEIGHTINGS", "LossStrategy", "Step", "Strategy", "get_weighting"]
