"""Nodes of the ``insight`` pipeline: the multi-task model against the single-task
models on corrupted test images (robustness) and across splits and a distribution
shift (generalisation). Each part runs only when its ``insight.<part>`` is true."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from multitask_cnn.config import (
    DataPrepConfig,
    EvaluationConfig,
    InsightConfig,
    parse,
    parse_tasks,
)
from multitask_cnn.data.fashion_mnist import FashionMNIST
from multitask_cnn.data.multifashion import compose_multifashion, derived_labels
from multitask_cnn.data.tensors import to_model_input
from multitask_cnn.evaluation.corruptions import corrupt
from multitask_cnn.pipelines.evaluation.nodes import check_baselines, predict_checkpoint
from multitask_cnn.seeds import numpy_generator
from multitask_cnn.tasks import TaskSpec
from multitask_cnn.tracking import final_metrics

logger = logging.getLogger(__name__)

MULTITASK = "multitask"
SINGLE_TASK = "single_task"
MODELS = (MULTITASK, SINGLE_TASK)
# model -> metric name prefix in MLflow (the single-task models' as in `stl.<task>.*`)
PREFIX = {MULTITASK: "", SINGLE_TASK: "stl."}
LABEL = {MULTITASK: "multi-task", SINGLE_TASK: "single-task"}


def _headline(spec: TaskSpec) -> str:
    """The metric a task is read by: accuracy (classifiers), MAE (regression)."""
    return "accuracy" if spec.task_kind.is_classifier else "mae"


def _first(model_input: Mapping[str, Any], n: int) -> dict[str, Any]:
    """The first ``n`` rows of every source of one split's model input."""
    return {
        source: {
            "images": data["images"][:n],
            "labels": {name: y[:n] for name, y in data["labels"].items()},
        }
        for source, data in model_input.items()
    }


def _scores(
    checkpoints: Mapping[str, Any],
    model_input: Mapping[str, Any],
    stats: Mapping[str, Any],
    specs: dict[str, TaskSpec],
    config: EvaluationConfig,
    where: str,
) -> dict[str, dict[str, float]]:
    """``{model: {task: headline metric}}`` of the multi-task model and of each task's
    single-task model on ``model_input`` (``where``: its name in errors)."""
    scores: dict[str, dict[str, float]] = {MULTITASK: {}, SINGLE_TASK: {}}
    runs = [(MULTITASK, checkpoints[MULTITASK], specs)]
    runs += [(SINGLE_TASK, checkpoints[task], {task: spec})
             for task, spec in specs.items()]  # fmt: skip
    for model, checkpoint, tasks in runs:
        predictions = predict_checkpoint(checkpoint, model_input, stats, tasks, config,
                                         where)  # fmt: skip
        for task, spec in tasks.items():
            metrics = spec.task_kind.metrics(
                predictions[task]["y_true"], predictions[task]["y_pred"], spec
            )
            scores[model][task] = metrics[_headline(spec)]
    return scores


def _checkpoints(multitask: dict[str, Any], baselines: dict[str, Any],
                 specs: dict[str, TaskSpec]) -> dict[str, Any]:  # fmt: skip
    check_baselines(baselines, specs)
    return {MULTITASK: multitask} | {task: baselines[task] for task in specs}


def assess_robustness(
    multitask_checkpoint: dict[str, Any],
    baseline_checkpoints: dict[str, Any],
    model_input_test: dict[str, Any],
    normalisation_stats: dict[str, Any],
    tasks: dict[str, Any],
    evaluation: dict[str, Any],
    insight: dict[str, Any],
) -> dict[str, Any]:
    """Each model's headline metric per task on the first ``insight.max_images`` test
    images, clean and under every corruption and severity asked for (the same
    corrupted images for every model); ``{}`` when ``insight.robustness`` is false."""
    config = parse(InsightConfig, insight, "insight")
    if not config.robustness:
        return {}
    specs = parse_tasks(tasks)
    evaluation_config = parse(EvaluationConfig, evaluation, "evaluation")
    checkpoints = _checkpoints(multitask_checkpoint, baseline_checkpoints, specs)
    clean = _first(model_input_test, config.max_images)
    rows = [{"corruption": "none", "severity": 0} | {
        "scores": _scores(checkpoints, clean, normalisation_stats, specs, evaluation_config,
                          "test")
    }]  # fmt: skip
    sets = [(c, s) for c in config.corruptions for s in config.severities]
    for number, (name, severity) in enumerate(sets, start=1):
        corrupted = {
            source: data | {"images": corrupt(torch.as_tensor(data["images"]), name,
                                              severity, config.seed)}
            for source, data in clean.items()
        }  # fmt: skip
        scores = _scores(checkpoints, corrupted, normalisation_stats, specs,
                         evaluation_config, f"test ({name}, severity {severity})")  # fmt: skip
        rows.append({"corruption": name, "severity": severity, "scores": scores})
        logger.info("Robustness %d/%d: %s at severity %d: %s", number, len(sets), name,
                    severity, _describe(scores))  # fmt: skip
    return {
        "images": _rows(clean),
        "metric": {task: _headline(spec) for task, spec in specs.items()},
        "rows": rows,
    }


def _rows(model_input: Mapping[str, Any]) -> dict[str, int]:
    """Images per source of one split's model input."""
    return {source: len(data["images"]) for source, data in model_input.items()}


def _counts(rows: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {source}" for source, n in rows.items())


def _describe(scores: dict[str, dict[str, float]]) -> str:
    return "; ".join(f"{model} " + ", ".join(f"{t} {v:.4f}" for t, v in per.items())
                     for model, per in scores.items())  # fmt: skip


def shifted_multifashion(
    fashion_mnist: FashionMNIST, data_prep: DataPrepConfig, n: int, seed: int
) -> dict[str, Any] | None:
    """MultiFashion test composites whose items are moved further in than training
    ever moved them (``max_shift + 1`` up to the canvas's slack, per axis), with every
    MultiFashion label, as model input ``{"multifashion": ...}``; None when training
    already used the whole slack."""
    item = max(fashion_mnist.test_images.shape[1:])
    slack = data_prep.canvas_size - item
    if data_prep.max_shift >= slack:
        return None
    canvas, labels, _ = compose_multifashion(
        fashion_mnist.test_images, fashion_mnist.test_labels, n,
        numpy_generator(seed, "insight_shifted_composites"), data_prep.canvas_size,
        max_shift=slack, min_shift=data_prep.max_shift + 1,
    )  # fmt: skip
    return {
        "multifashion": to_model_input(canvas, labels | derived_labels(canvas, labels))
    }


def assess_generalisation(
    multitask_checkpoint: dict[str, Any],
    baseline_checkpoints: dict[str, Any],
    model_input_train: dict[str, Any],
    model_input_val: dict[str, Any],
    model_input_test: dict[str, Any],
    normalisation_stats: dict[str, Any],
    fashion_mnist: FashionMNIST,
    data_prep: dict[str, Any],
    tasks: dict[str, Any],
    evaluation: dict[str, Any],
    insight: dict[str, Any],
) -> dict[str, Any]:
    """Each model's headline metric per task on the first ``insight.max_images`` rows
    of train, val and test, and on MultiFashion composites shifted further than in
    training (MultiFashion tasks only); ``{}`` when ``insight.generalisation`` is false."""
    config = parse(InsightConfig, insight, "insight")
    if not config.generalisation:
        return {}
    specs = parse_tasks(tasks)
    evaluation_config = parse(EvaluationConfig, evaluation, "evaluation")
    checkpoints = _checkpoints(multitask_checkpoint, baseline_checkpoints, specs)
    splits = {split: _first(data, config.max_images) for split, data in
              (("train", model_input_train), ("val", model_input_val),
               ("test", model_input_test))}  # fmt: skip
    scores = {split: _scores(checkpoints, data, normalisation_stats, specs,
                             evaluation_config, split)
              for split, data in splits.items()}  # fmt: skip
    rows = {split: _rows(data) for split, data in splits.items()}
    prep = parse(DataPrepConfig, data_prep, "data_prep")
    shifted_tasks = {t: s for t, s in specs.items() if s.source == "multifashion"}
    shifted = shifted_multifashion(fashion_mnist, prep, config.max_images, config.seed)
    note = None
    if not shifted_tasks:
        note = "no task reads MultiFashion: no shifted set"
    elif shifted is None:
        note = (f"data_prep.max_shift={prep.max_shift} already uses the whole canvas: "
                "no larger shift to test")  # fmt: skip
    else:
        # the other sources' tasks (a fused model) read their clean test rows, unscored
        shifted_input = _first(model_input_test, config.max_images) | shifted
        every = _scores(checkpoints, shifted_input, normalisation_stats, specs,
                        evaluation_config, "shifted test")  # fmt: skip
        scores["shifted"] = {model: {t: v for t, v in per.items() if t in shifted_tasks}
                             for model, per in every.items()}  # fmt: skip
        rows["shifted"] = _rows(shifted)
    if note:
        logger.warning("Generalisation: %s", note)
    for split, per_model in scores.items():
        logger.info("Generalisation on %s: %s", split, _describe(per_model))
    return {
        "images": rows,
        "metric": {task: _headline(spec) for task, spec in specs.items()},
        "shift": None if shifted is None else
        {"min_shift": prep.max_shift + 1, "max_shift": prep.canvas_size
         - max(fashion_mnist.test_images.shape[1:]), "trained_max_shift": prep.max_shift},
        "note": note,
        "scores": scores,
    }  # fmt: skip


def report_insight(
    robustness: dict[str, Any], generalisation: dict[str, Any], tasks: dict[str, Any]
) -> tuple[dict[str, Any], str, dict[str, dict[str, float]], dict[str, Figure]]:
    """The parts that ran as one report, a Markdown table, MLflow metrics and figures
    (``robustness.png``, ``generalisation.png``)."""
    specs = parse_tasks(tasks)
    report: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    tables: list[str] = []
    figures: dict[str, Figure] = {}
    if robustness:
        report["robustness"] = robustness | {"relative": _relative(robustness)}
        metrics |= _robustness_metrics(report["robustness"])
        tables.append(_robustness_table(robustness))
        figures["robustness.png"] = _robustness_figure(robustness, specs)
    if generalisation:
        report["generalisation"] = generalisation | {"gap": _gaps(generalisation)}
        metrics |= _generalisation_metrics(report["generalisation"])
        tables.append(_generalisation_table(report["generalisation"]))
        figures["generalisation.png"] = _generalisation_figure(generalisation, specs)
    if not report:
        logger.info("No insight asked for (insight.robustness, insight.generalisation)")
    return report, "\n\n".join(tables) + "\n", final_metrics(metrics), figures


def _relative(robustness: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{model: {task: mean corrupted metric / clean metric}}``."""
    clean, *corrupted = robustness["rows"]
    return {
        model: {
            task: float(np.mean([row["scores"][model][task] for row in corrupted])) / value
            if value else float("nan")
            for task, value in clean["scores"][model].items()
        }
        for model in MODELS
    }  # fmt: skip


def _named(
    part: str,
    where: str,
    per_model: dict[str, dict[str, float]],
    metric: dict[str, str] | None = None,
) -> dict[str, float]:
    """``{model: {task: v}}`` as MLflow names ``[stl.]<part>.<where>.<task>[.<metric>]``."""
    return {
        f"{PREFIX[model]}{part}.{where}.{task}"
        + (f".{metric[task]}" if metric else ""): v
        for model, per_task in per_model.items()
        for task, v in per_task.items()
    }


def _robustness_metrics(robustness: dict[str, Any]) -> dict[str, float]:
    metrics = {}
    for row in robustness["rows"]:
        where = (
            "clean"
            if row["severity"] == 0
            else f"{row['corruption']}.{row['severity']}"
        )
        metrics |= _named("robust", where, row["scores"], robustness["metric"])
    return metrics | _named("robust", "relative", robustness["relative"])


def _robustness_table(robustness: dict[str, Any]) -> str:
    tasks = list(robustness["metric"])
    head = ["corruption", "severity"] + [
        f"{task} {robustness['metric'][task]} ({label})"
        for task in tasks for label in ("multi-task", "single-task")
    ]  # fmt: skip
    lines = [f"### Robustness: {_counts(robustness['images'])} test images per set", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    for row in robustness["rows"]:
        cells = [row["corruption"], str(row["severity"])] + [
            f"{row['scores'][model][task]:.4f}" for task in tasks for model in MODELS
        ]
        lines.append("| " + " | ".join(cells) + " |")
    relative = robustness.get("relative") or _relative(robustness)
    cells = ["mean corrupted / clean", ""] + [
        f"{relative[model][task]:.3f}" for task in tasks for model in MODELS
    ]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _robustness_figure(
    robustness: dict[str, Any], specs: dict[str, TaskSpec]
) -> Figure:
    tasks = list(robustness["metric"])
    figure = Figure(figsize=(5.5 * len(tasks), 4.2))
    axes_list = figure.subplots(1, len(tasks), squeeze=False)[0]
    clean, *corrupted = robustness["rows"]
    names = list(dict.fromkeys(row["corruption"] for row in corrupted))
    colours = dict(zip(names, ("tab:blue", "tab:orange", "tab:green", "tab:red",
                               "tab:purple", "tab:brown"), strict=False))  # fmt: skip
    for axes, task in zip(axes_list, tasks, strict=True):
        for name in names:
            rows = [row for row in corrupted if row["corruption"] == name]
            severities = [0] + [row["severity"] for row in rows]
            for model, style in ((MULTITASK, "-"), (SINGLE_TASK, "--")):
                values = [clean["scores"][model][task]]
                values += [row["scores"][model][task] for row in rows]
                axes.plot(severities, values, style, marker="o", color=colours.get(name),
                          label=f"{name}, {LABEL[model]}")  # fmt: skip
        axes.set(title=f"{task}", xlabel="severity (0 = clean)",
                 ylabel=f"test {robustness['metric'][task]}")  # fmt: skip
    axes_list[0].legend(fontsize=7)
    figure.suptitle(
        "Corrupted test images: multi-task (solid) and single-task (dashed)"
    )
    figure.tight_layout()
    return figure


def _gaps(generalisation: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{model: {task: train metric - test metric}}``."""
    scores = generalisation["scores"]
    return {model: {task: scores["train"][model][task] - scores["test"][model][task]
                    for task in scores["train"][model]}
            for model in MODELS}  # fmt: skip


def _generalisation_metrics(generalisation: dict[str, Any]) -> dict[str, float]:
    metrics = {}
    for split, per_model in generalisation["scores"].items():
        metrics |= _named("generalisation", split, per_model, generalisation["metric"])
    return metrics | _named("generalisation", "gap", generalisation["gap"])


def _generalisation_table(generalisation: dict[str, Any]) -> str:
    scores = generalisation["scores"]
    splits = list(scores)
    counts = "; ".join(f"{split} {_counts(rows)}"
                       for split, rows in generalisation["images"].items())  # fmt: skip
    lines = ["### Generalisation", "", f"Images read: {counts}.",
             "", "| task | model | " + " | ".join(splits) + " | train − test |",
             "|---|---|" + "---|" * (len(splits) + 1)]  # fmt: skip
    for task, metric in generalisation["metric"].items():
        for model in MODELS:
            cells = [f"{task} ({metric})", LABEL[model]]
            cells += [f"{scores[s][model][task]:.4f}" if task in scores[s][model]
                      else "–" for s in splits]  # fmt: skip
            cells.append(f"{generalisation['gap'][model][task]:+.4f}")
            lines.append("| " + " | ".join(cells) + " |")
    if generalisation.get("shift"):
        shift = generalisation["shift"]
        lines += ["", f"shifted: items moved {shift['min_shift']}–{shift['max_shift']} px "
                  f"per axis (training: 0–{shift['trained_max_shift']})"]  # fmt: skip
    if generalisation.get("note"):
        lines += ["", generalisation["note"]]
    return "\n".join(lines)


def _generalisation_figure(
    generalisation: dict[str, Any], specs: dict[str, TaskSpec]
) -> Figure:
    scores = generalisation["scores"]
    tasks = list(generalisation["metric"])
    figure = Figure(figsize=(5.5 * len(tasks), 4.2))
    axes_list = figure.subplots(1, len(tasks), squeeze=False)[0]
    for axes, task in zip(axes_list, tasks, strict=True):
        splits = [s for s in scores if task in scores[s][MULTITASK]]
        positions = np.arange(len(splits))
        for offset, model in ((-0.2, MULTITASK), (0.2, SINGLE_TASK)):
            axes.bar(positions + offset, [scores[s][model][task] for s in splits], 0.4,
                     label=LABEL[model])  # fmt: skip
        axes.set_xticks(positions, splits)
        axes.set(title=task, ylabel=generalisation["metric"][task])
        low = min(scores[s][m][task] for s in splits for m in MODELS)
        if specs[task].task_kind.is_classifier:
            axes.set_ylim(max(0.0, low - 0.1), 1.0)
        axes.legend()
    figure.suptitle("Train, val, test and shifted test: multi-task and single-task")
    figure.tight_layout()
    return figure
