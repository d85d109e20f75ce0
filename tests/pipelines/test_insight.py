"""The insight pipeline: robustness and generalisation of the multi-task model against
the single-task models."""

import pytest

from multitask_cnn.config import DataPrepConfig
from multitask_cnn.pipelines.insight.nodes import (
    assess_generalisation,
    assess_robustness,
    assess_saliency,
    assess_sharing,
    report_insight,
    shifted_multifashion,
)

TASKS = {
    "left": {"kind": "multiclass", "num_classes": 10},
    "ink": {"kind": "regression", "label": "ink"},
}


def _scores(left_mt, left_st, ink_mt, ink_st):
    return {"multitask": {"left": left_mt, "ink": ink_mt},
            "single_task": {"left": left_st, "ink": ink_st}}  # fmt: skip


ROBUSTNESS = {
    "images": {"multifashion": 100},
    "metric": {"left": "accuracy", "ink": "mae"},
    "rows": [
        {"corruption": "none", "severity": 0, "scores": _scores(0.8, 0.9, 0.02, 0.01)},
        {
            "corruption": "contrast",
            "severity": 1,
            "scores": _scores(0.6, 0.45, 0.03, 0.02),
        },
        {
            "corruption": "contrast",
            "severity": 5,
            "scores": _scores(0.4, 0.45, 0.05, 0.04),
        },
    ],
}
GENERALISATION = {
    "images": {
        split: {"multifashion": 100} for split in ("train", "val", "test", "shifted")
    },
    "metric": {"left": "accuracy", "ink": "mae"},
    "shift": {"min_shift": 5, "max_shift": 8, "trained_max_shift": 4},
    "note": None,
    "scores": {
        "train": _scores(0.95, 0.99, 0.010, 0.008),
        "val": _scores(0.85, 0.86, 0.020, 0.018),
        "test": _scores(0.84, 0.85, 0.021, 0.019),
        "shifted": _scores(0.30, 0.20, 0.05, 0.06),
    },
}


def test_the_report_holds_the_ratios_gaps_and_metric_names():
    report, table, metrics, figures = report_insight(
        {}, {}, ROBUSTNESS, GENERALISATION, TASKS
    )
    relative = report["robustness"]["relative"]
    assert relative["multitask"]["left"] == pytest.approx(
        0.5 / 0.8
    )  # mean(.6, .4) / .8
    assert relative["single_task"]["left"] == pytest.approx(0.45 / 0.9)
    assert relative["multitask"]["ink"] == pytest.approx(0.04 / 0.02)
    gap = report["generalisation"]["gap"]
    assert gap["multitask"]["left"] == pytest.approx(0.11)
    assert gap["single_task"]["ink"] == pytest.approx(-0.011)
    values = {name: m["value"] for name, m in metrics.items()}
    assert values["robust.contrast.5.left.accuracy"] == 0.4
    assert values["stl.robust.contrast.1.left.accuracy"] == 0.45
    assert values["robust.clean.ink.mae"] == 0.02
    assert values["stl.robust.relative.left"] == pytest.approx(0.5)
    assert values["generalisation.shifted.left.accuracy"] == 0.30
    assert values["stl.generalisation.gap.left"] == pytest.approx(0.14)
    assert len(values) == 3 * 4 + 2 * 2 + 4 * 4 + 2 * 2
    assert set(figures) == {"robustness.png", "generalisation.png"}
    assert "| contrast | 5 | 0.4000 | 0.4500 | 0.0500 | 0.0400 |" in table
    assert (
        "| left (accuracy) | multi-task | 0.9500 | 0.8500 | 0.8400 | 0.3000 | +0.1100 |"
        in table
    )
    assert "items moved 5–8 px per axis (training: 0–4)" in table


def test_parts_that_are_off_leave_nothing():
    report, table, metrics, figures = report_insight({}, {}, {}, {}, TASKS)
    assert report == {} and metrics == {} and figures == {} and table.strip() == ""


def test_the_nodes_do_nothing_when_their_part_is_off():
    off = dict.fromkeys(("sharing", "saliency", "robustness", "generalisation"), False)
    assert assess_sharing(None, None, None, None, TASKS, {}, off) == {}
    assert assess_saliency(None, None, None, None, TASKS, {}, off) == {}
    assert assess_robustness(None, None, None, None, TASKS, {}, off) == {}
    assert assess_generalisation(None, None, None, None, None, None, None, {}, TASKS, {},
                                 off) == {}  # fmt: skip


def test_the_shifted_set_moves_items_past_the_trained_range(fashion_mnist_small):
    shifted = shifted_multifashion(fashion_mnist_small, DataPrepConfig(), 300, seed=0)
    data = shifted["multifashion"]
    assert tuple(data["images"].shape) == (300, 1, 36, 36)
    assert set(data["labels"]) == {"left", "right", "footwear", "ink"}
    assert (data["labels"]["left"] != data["labels"]["right"]).all()
    # the whole slack is in use already: no larger shift exists
    assert (
        shifted_multifashion(fashion_mnist_small, DataPrepConfig(max_shift=8), 10, 0)
        is None
    )
    again = shifted_multifashion(fashion_mnist_small, DataPrepConfig(), 300, seed=0)
    assert (again["multifashion"]["images"] == data["images"]).all()  # seeded
