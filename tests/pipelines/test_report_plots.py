"""The report's plots: one curve figure per task, the comparison beside the cost
ratios, and the task weights only when the strategy changed them."""

import pandas as pd

from multitask_cnn.pipelines.evaluation.nodes import plot_report

TASKS = {
    "left": {"kind": "multiclass", "num_classes": 10},
    "ink": {"kind": "regression"},
}
REPORT = {"delta_m": -2.5, "ratios": {"parameters": 0.51, "macs_per_image": 0.5,
                                      "train_seconds": None, "latency_ms": 0.55, "throughput": 2.0}}  # fmt: skip
TEST = {
    "left": {"accuracy": 0.78, "f1_macro": 0.77},
    "ink": {"mae": 0.02, "rmse": 0.03},
}
SINGLE = {
    "left": {"accuracy": 0.80, "f1_macro": 0.79},
    "ink": {"mae": 0.018, "rmse": 0.025},
}


def _history(weights):
    return pd.DataFrame({
        "epoch": [1, 2, 3], "train.left.loss": [1.0, 0.8, 0.7], "val.left.loss": [0.9, 0.85, 0.8],
        "val.left.accuracy": [0.6, 0.7, 0.75], "train.ink.loss": [0.5, 0.4, 0.3],
        "val.ink.loss": [0.6, 0.5, 0.45], "val.ink.mae": [0.4, 0.35, 0.3],
        "weight.left": weights, "weight.ink": [1.0, 1.0, 1.0],
    })  # fmt: skip


def test_plots_are_labelled_and_the_weights_appear_only_when_they_changed():
    figures = plot_report(
        _history([1.0, 1.0, 1.0]), {"test": TEST}, {"test": SINGLE}, REPORT, TASKS
    )
    assert set(figures) == {
        "curves_left.png",
        "curves_ink.png",
        "multitask_vs_single_task.png",
    }
    loss, score = figures["curves_ink.png"].axes
    assert score.get_title() == "ink: validation mae per epoch"
    assert score.get_ylabel() == "mae (standardised target)"
    assert [line.get_label() for line in loss.get_lines()] == ["train", "val"]
    scores, costs = figures["multitask_vs_single_task.png"].axes
    assert scores.get_title() == "Test score per task (Δm -2.50 %)"
    heights = [round(b.get_height(), 3) for b in scores.patches]
    assert heights == [0.78, 0.02, 0.8, 0.018]  # multi-task bars, then single-task bars
    assert [t.get_text() for t in costs.get_yticklabels()] == [
        "parameters (↓ better)", "MACs per image (↓ better)", "latency, batch 1 (↓ better)",
        "inference throughput (↑ better)"]  # fmt: skip  # training time not recorded
    adapted = plot_report(
        _history([1.2, 0.9, 0.7]), {"test": TEST}, {"test": SINGLE}, REPORT, TASKS
    )
    assert "task_weights.png" in adapted
    lines = adapted["task_weights.png"].axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["left", "ink"]
