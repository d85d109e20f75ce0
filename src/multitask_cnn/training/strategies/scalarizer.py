"""A loss-level strategy that wraps one of TorchJD's scalarizers (``torchjd.scalarization``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .base import LossStrategy


class ScalarizerStrategy(LossStrategy):
    """``objective`` is the TorchJD scalarizer ``self.scalarizer`` (an ``nn.Module``);
    its parameters are learnable when ``learnable`` (they join the optimizer), and its
    module state goes into the train state."""

    learnable = False
    scalarizer: nn.Module

    def objective(self, values: torch.Tensor) -> torch.Tensor:
        return self.scalarizer(values)

    def parameters(self) -> list[nn.Parameter]:
        return list(self.scalarizer.parameters()) if self.learnable else []

    def to(self, device: torch.device) -> ScalarizerStrategy:
        super().to(device)
        self.scalarizer.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"scalarizer": self.scalarizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.scalarizer.load_state_dict(state["scalarizer"])
