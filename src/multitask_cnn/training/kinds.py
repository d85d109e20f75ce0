"""Task kinds: how each kind of task turns outputs into a loss and predictions.

Labels follow the data contract: ``int64`` class ids for classification (``-1`` =
missing), ``float32`` for regression (NaN = missing). Missing labels are masked out of
the loss; a batch with no label for a task contributes zero loss for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F


class TaskKind(Protocol):
    def mask(self, target: torch.Tensor) -> torch.Tensor: ...
    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...
    def predict(self, output: torch.Tensor) -> torch.Tensor: ...


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


@dataclass(frozen=True)
class Multiclass:
    def mask(self, target: torch.Tensor) -> torch.Tensor:
        return target >= 0

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mask = self.mask(target)
        per_sample = F.cross_entropy(output, target.clamp(min=0), reduction="none")
        return _masked_mean(per_sample, mask.float())

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        return output.argmax(dim=1)


@dataclass(frozen=True)
class Binary:
    def mask(self, target: torch.Tensor) -> torch.Tensor:
        return target >= 0

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mask = self.mask(target)
        per_sample = F.binary_cross_entropy_with_logits(
            output, target.clamp(min=0).float(), reduction="none"
        )
        return _masked_mean(per_sample, mask.float())

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        return (output > 0).long()


@dataclass(frozen=True)
class Regression:
    def mask(self, target: torch.Tensor) -> torch.Tensor:
        return ~torch.isnan(target)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mask = self.mask(target)
        per_sample = (output - torch.nan_to_num(target)) ** 2
        return _masked_mean(per_sample, mask.float())

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        return output


TASK_KINDS: dict[str, TaskKind] = {
    "multiclass": Multiclass(),
    "binary": Binary(),
    "regression": Regression(),
}
