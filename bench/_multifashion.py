"""Real MultiFashion splits for the benchmark scripts (the data_prep nodes, in memory)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from multitask_cnn.config import parse_tasks
from multitask_cnn.data.fashion_mnist import (
    DEBIAN_DIR,
    FashionMNIST,
    find_fashion_mnist,
    read_fashion_mnist,
)
from multitask_cnn.pipelines.data_prep.nodes import (
    build_model_input,
    compose_splits,
    compute_normalisation,
)
from multitask_cnn.tasks import TaskSpec
from multitask_cnn.training import Split, task_splits

# the two MultiFashion tasks every bench script trains
TASKS = parse_tasks({"left": {"kind": "multiclass", "num_classes": 10},
                     "right": {"kind": "multiclass", "num_classes": 10}})  # fmt: skip


def multifashion_inputs(
    data_prep: dict,
) -> tuple[FashionMNIST, list[dict[str, Any]], dict[str, Any]]:
    """Fashion-MNIST, MultiFashion's train / val / test model input built with
    ``data_prep`` parameters (``{"multifashion": ...}``, as data_prep writes it), and
    its normalisation statistics."""
    data = read_fashion_mnist(
        find_fashion_mnist(["data/01_raw/fashion_mnist", DEBIAN_DIR])
    )
    raw = {"multifashion": compose_splits(data, data_prep)}
    return data, list(build_model_input(raw)), compute_normalisation(raw)


def multifashion_splits(data_prep: dict, specs: Mapping[str, TaskSpec]) -> list[Split]:
    """Train, val and test :class:`Split` of MultiFashion built with ``data_prep``
    parameters, with the labels of ``specs``' tasks."""
    _, inputs, stats = multifashion_inputs(data_prep)
    return [task_splits(m, stats, specs)["multifashion"] for m in inputs]
