"""Gradient-conflict diagnostics: do the tasks pull the shared layers apart?"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import torch

from multitask_cnn.models import MultiTaskModel
from multitask_cnn.tasks import TaskKind

from .sources import Batch

__all__ = ["gradient_cosines"]


def gradient_cosines(
    model: MultiTaskModel,
    probe: Batch,
    kinds: Mapping[str, TaskKind],
    device: torch.device,
) -> dict[str, float]:
    """``grad_cos.<a>.<b>``: the cosine between tasks a's and b's loss gradients on the
    shared parameters, on the fixed ``probe`` batch (eval mode: no dropout noise).

    Near 1: the tasks agree; near 0: they are unrelated; below 0: they conflict.
    Empty when nothing is shared.
    """
    shared = [p for p in model.shared_parameters() if p.requires_grad]
    if not shared or len(kinds) < 2:
        return {}
    was_training = model.training
    model.eval()
    batch = probe.to(device)
    outputs = model(batch.images, batch.rows)
    grads = {}
    for task, kind in kinds.items():
        loss = kind.loss(outputs[task], batch.labels[task])
        parts = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
        grads[task] = torch.cat([
            (g if g is not None else torch.zeros_like(p)).flatten()
            for g, p in zip(parts, shared, strict=True)
        ])  # fmt: skip
    model.train(was_training)
    pairs = list(itertools.combinations(kinds, 2))
    values = torch.stack([torch.nn.functional.cosine_similarity(grads[a], grads[b], dim=0)
                          for a, b in pairs]).tolist()  # fmt: skip
    return {f"grad_cos.{a}.{b}": v for (a, b), v in zip(pairs, values, strict=True)}
