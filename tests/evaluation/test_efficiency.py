"""The efficiency report's numbers: parameter counts against the model, MACs against a
hand count, ratios from the reported values."""

import pytest
import torch
from torch import nn

from multitask_cnn.config import parse_tasks
from multitask_cnn.evaluation import (
    cost_ratios,
    inference_speed,
    inference_speeds,
    macs_per_image,
    parameter_counts,
)
from multitask_cnn.models import build_model, count_parameters

TASKS = parse_tasks({"left": {"kind": "multiclass", "num_classes": 10},
                     "right": {"kind": "multiclass", "num_classes": 10, "head_hidden": [8]}})  # fmt: skip


def test_macs_match_a_hand_count():
    # conv 1 -> 2 channels, 3x3, on 4x4: 2 x 2 x 2 outputs of 9 MACs; linear 8 -> 5: 40
    small = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 5))
    assert macs_per_image(small, (1, 4, 4)) == 2 * 2 * 2 * 9 + 8 * 5
    # the Pareto-MTL LeNet on 36x36 with two 10-class heads, layer by layer
    lenet = build_model(parse_tasks({"left": {"kind": "multiclass", "num_classes": 10},
                                     "right": {"kind": "multiclass", "num_classes": 10}}))  # fmt: skip
    conv1 = 10 * 28 * 28 * (1 * 9 * 9)  # 36 - 9 + 1 = 28
    conv2 = 20 * 10 * 10 * (10 * 5 * 5)  # pooled to 14, 14 - 5 + 1 = 10
    fc = 20 * 5 * 5 * 50  # pooled to 5
    heads = 2 * 50 * 10
    assert macs_per_image(lenet, (1, 36, 36)) == conv1 + conv2 + fc + heads == 1_161_040
    # one task alone: the shared trunk and its own head
    assert macs_per_image(lenet, (1, 36, 36), "left") == conv1 + conv2 + fc + 50 * 10


@pytest.mark.parametrize("architecture", ["hard", "cross_stitch", "mtan", "mmoe"])
def test_one_task_alone_costs_its_path(architecture):
    tasks = parse_tasks({"left": {"kind": "multiclass", "num_classes": 10},
                         "right": {"kind": "multiclass", "num_classes": 10}})  # fmt: skip
    single = macs_per_image(build_model({"left": tasks["left"]}), (1, 36, 36))
    sharing = {"shared_stages": 0} if architecture == "hard" else {}
    model = build_model(tasks, architecture=architecture, **sharing)
    alone = macs_per_image(model, (1, 36, 36), "left")
    both = macs_per_image(model, (1, 36, 36))
    assert alone < both
    if architecture == "hard":  # nothing shared: one task alone is a single-task model
        assert alone == single
    if architecture == "cross_stitch":  # both columns up to the last stitch
        assert single < alone < 2 * single


@pytest.mark.parametrize("shared_stages", [None, 2, 0])
def test_parameter_counts_add_up_to_the_model(shared_stages):
    model = build_model(TASKS, "lenet", shared_stages=shared_stages)
    counts = parameter_counts(model)
    assert counts["total"] == count_parameters(model)
    assert counts["shared"] + sum(counts["per_task"].values()) == counts["total"]
    assert counts["per_task"]["right"] - counts["per_task"]["left"] == (
        50 * 8 + 8 + 8 * 10 + 10
    ) - (50 * 10 + 10)
    if shared_stages == 0:
        assert counts["shared"] == 0


def test_inference_speed_and_ratios():
    model = build_model(TASKS, "lenet")
    speed = inference_speed(
        model, torch.zeros(64, 1, 36, 36), torch.device("cpu"), batch_size=32, repeats=3
    )
    assert (
        speed["latency_ms"] > 0
        and speed["throughput"] > 0
        and speed["throughput_batch"] == 32
    )
    ratios = cost_ratios({"parameters": 50, "train_seconds": None, "throughput": 30.0},
                         {"parameters": 100, "train_seconds": 4.0, "throughput": 0})  # fmt: skip
    assert ratios == {"parameters": 0.5, "train_seconds": None, "throughput": None}


def test_models_are_timed_in_turn_pass_by_pass():
    calls: list[str] = []

    class Recorder(nn.Module):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name, self.layer = name, nn.Linear(4, 2)

        def forward(self, x):
            calls.append(self.name)
            return self.layer(x.flatten(1))

    speeds = inference_speeds({"a": Recorder("a"), "b": Recorder("b")},
                              torch.zeros(8, 1, 2, 2), torch.device("cpu"),
                              batch_size=8, repeats=3)  # fmt: skip
    assert set(speeds) == {"a", "b"}
    assert all(
        s["throughput_batch"] == 8 and s["latency_ms"] > 0 for s in speeds.values()
    )
    # per kind (batch 1, then the batch): one warm-up each, then a, b, a, b, a, b
    assert calls == (["a", "b"] + ["a", "b"] * 3) * 2
