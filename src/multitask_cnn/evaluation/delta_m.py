"""Δm: the task-averaged relative change of a multi-task model against single-task
models (Maninis et al. 2019; LibMTL's convention, + = better).

    Δm = 100 % · (1/T) Σ_t (1/N_t) Σ_i (-1)^{l_i} (M_t,i − B_t,i) / B_t,i

over the T tasks and each task's N_t test metrics M (multi-task) and B (single-task),
with l_i = 1 when less is better for metric i (MSE, MAE), else 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Set

__all__ = ["delta_m"]

Metrics = Mapping[str, Mapping[str, float]]  # task -> metric -> value


def delta_m(
    multi: Metrics, single: Metrics, lower_is_better: Mapping[str, Set[str]]
) -> tuple[float, dict[str, float]]:
    """Δm in percent and each task's term; metrics named ``n`` (counts) are skipped.

    A single-task metric of 0 has no relative change: the task's term is then NaN and
    so is Δm, rather than a made-up number.
    """
    if set(multi) != set(single):
        raise ValueError(
            f"Δm needs the same tasks: {sorted(multi)} vs {sorted(single)}"
        )
    terms = {}
    for task in multi:
        changes = []
        for name, value in multi[task].items():
            if name == "n":
                continue
            base = single[task][name]
            sign = -1.0 if name in lower_is_better.get(task, set()) else 1.0
            changes.append(sign * (value - base) / base if base else math.nan)
        terms[task] = 100.0 * sum(changes) / len(changes)
    return sum(terms.values()) / len(terms), terms
