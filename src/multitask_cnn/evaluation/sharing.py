"""Which layers to share: how alike the single-task models' representations are at
each backbone stage (linear CKA) and how much the tasks' gradients agree at each
shared stage of the multi-task model (cosine), and the sharing they recommend.

Linear CKA (Kornblith et al. 2019, "Similarity of Neural Network Representations
Revisited", eq. 1 with linear kernels) is a few lines of matrix algebra and no
maintained PyTorch package provides it, so it is written here, on centred Gram
matrices in float64 (exact for any feature width).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np
import torch
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from multitask_cnn.models import MultiTaskModel
from multitask_cnn.tasks import TaskSpec

__all__ = [
    "centred_gram",
    "cka_of_grams",
    "gradient_cosines",
    "group_tasks",
    "linear_cka",
    "recommend_depth",
    "stage_outputs",
    "task_stages",
]


def centred_gram(features: torch.Tensor) -> torch.Tensor:
    """``(n, n)`` float64 Gram matrix of ``n`` examples' features (flattened), centred
    in feature space: what linear CKA compares."""
    f = features.detach().reshape(len(features), -1).to(torch.float64).cpu()
    f = f - f.mean(0, keepdim=True)
    return f @ f.T


def cka_of_grams(k: torch.Tensor, l: torch.Tensor) -> float:  # noqa: E741 - the paper's names
    """Linear CKA from two :func:`centred_gram` matrices of the same examples."""
    if k.shape != l.shape or len(k) < 2:
        raise ValueError(
            f"linear CKA needs the same n >= 2 examples, got {len(k)} and {len(l)}"
        )
    norm = torch.sqrt((k * k).sum() * (l * l).sum())
    return float((k * l).sum() / norm) if norm > 0 else 0.0


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two representations of the same ``n`` examples, ``(n, p)`` and
    ``(n, q)``: 1 for representations equal up to rotation and isotropic scaling, near
    0 for unrelated ones. Higher dimensions are flattened."""
    return cka_of_grams(centred_gram(x), centred_gram(y))


def task_stages(model: MultiTaskModel, task: str) -> dict[str, torch.nn.Module]:
    """The backbone stages ``task``'s outputs pass through, in order: the shared ones,
    then the task's own."""
    return dict(model.shared.items()) | dict(model.task_stages[task].items())


@torch.no_grad()
def stage_outputs(
    model: MultiTaskModel, images: torch.Tensor, task: str, batch_size: int = 256
) -> dict[str, torch.Tensor]:
    """``{stage: (n, features)}``: every backbone stage's output on ``task``'s path
    for normalised ``images`` ``(n, C, H, W)``, flattened, on the CPU (eval mode)."""
    model.eval()
    device = next(model.parameters()).device
    stages = task_stages(model, task)
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in stages}
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device)
        for name, stage in stages.items():
            x = stage(x)
            chunks[name].append(x.flatten(1).float().cpu())
    return {name: torch.cat(parts) for name, parts in chunks.items()}


def gradient_cosines(
    model: MultiTaskModel,
    batches: Mapping[str, Sequence[tuple[torch.Tensor, torch.Tensor]]],
    specs: Mapping[str, TaskSpec],
) -> dict[str, dict[tuple[str, str], float]]:
    """``{stage: {(a, b): cosine}}`` for every shared stage with parameters: the
    cosine between tasks ``a``'s and ``b``'s loss gradients with respect to that
    stage's parameters, averaged over the batches. ``batches[task]`` holds
    ``(normalised images, targets)`` pairs of that task's own rows; pair ``i`` of
    every task is one step (eval mode: no dropout, batch-norm running statistics). A
    step where a task has no labelled row does not count for that task's pairs."""
    model.eval()
    device = next(model.parameters()).device
    stages = {name: [p for p in stage.parameters() if p.requires_grad]
              for name, stage in model.shared.items()}  # fmt: skip
    stages = {name: params for name, params in stages.items() if params}
    if not stages:  # nothing shared (model.shared_stages: 0, cross-stitch)
        return {}
    params = [p for ps in stages.values() for p in ps]  # in stage order
    steps = min(len(b) for b in batches.values())
    sums: dict[str, dict[tuple[str, str], list[float]]] = {name: {} for name in stages}
    for step in range(steps):
        grads: dict[str, dict[str, torch.Tensor]] = {}
        for task, spec in specs.items():
            images, target = batches[task][step]
            if not spec.task_kind.mask(target).any():
                continue
            output = model(images.to(device), {task: slice(None)})[task]
            loss = spec.task_kind.loss(output, target.to(device))
            flat = torch.autograd.grad(loss, params, allow_unused=True)
            grads[task], at = {}, 0
            for name, ps in stages.items():
                parts = [torch.zeros_like(p) if g is None else g
                         for p, g in zip(ps, flat[at : at + len(ps)], strict=True)]  # fmt: skip
                grads[task][name] = torch.cat([g.flatten() for g in parts]).double()
                at += len(ps)
        for name in stages:
            for a, b in combinations(specs, 2):
                if a in grads and b in grads:
                    cosine = torch.nn.functional.cosine_similarity(
                        grads[a][name], grads[b][name], dim=0
                    )
                    sums[name].setdefault((a, b), []).append(float(cosine))
    return {name: {pair: float(np.mean(sums[name].get(pair, [np.nan])))
                   for pair in combinations(specs, 2)}
            for name in stages}  # fmt: skip


def recommend_depth(
    stages: Sequence[str],
    cka: Mapping[str, Mapping[tuple[str, str], float]],
    cosines: Mapping[str, Mapping[tuple[str, str], float]],
    threshold: float,
) -> int:
    """How many leading stages to share: the longest prefix of ``stages`` where every
    task pair's CKA is at least ``threshold`` and, where the multi-task model shares
    the stage, the mean gradient cosine is not negative (the tasks do not pull the
    stage apart)."""
    depth = 0
    for stage in stages:
        alike = min(cka[stage].values()) >= threshold
        agree = (
            stage not in cosines or float(np.mean(list(cosines[stage].values()))) >= 0
        )
        if not (alike and agree):
            break
        depth += 1
    return depth


def group_tasks(
    tasks: Sequence[str], cka: Mapping[tuple[str, str], float], threshold: float
) -> list[list[str]]:
    """Tasks grouped by their single-task models' CKA at one stage: average-linkage
    clustering on ``1 - CKA`` (scipy), cut where the tasks of a group are on average
    at least ``threshold`` alike. Groups in the order of their first task."""
    if len(tasks) < 2:
        return [list(tasks)]
    distance = np.zeros((len(tasks), len(tasks)))
    for (i, a), (j, b) in combinations(enumerate(tasks), 2):
        value = cka[a, b] if (a, b) in cka else cka[b, a]
        distance[i, j] = distance[j, i] = 1.0 - value
    labels = fcluster(linkage(squareform(distance, checks=False), "average"),
                      t=1.0 - threshold, criterion="distance")  # fmt: skip
    groups: dict[int, list[str]] = {}
    for task, label in zip(tasks, labels, strict=True):
        groups.setdefault(int(label), []).append(task)
    return list(groups.values())
