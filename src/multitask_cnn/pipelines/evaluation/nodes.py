"""Nodes of the ``evaluation`` pipeline: per-task metrics on the test split."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

from multitask_cnn.config import (
    EvaluationConfig,
    ModelConfig,
    parse,
    parse_tasks,
    source_class_names,
)
from multitask_cnn.evaluation import (
    cost_ratios,
    delta_m,
    inference_peak_memory,
    inference_speeds,
    macs_per_image,
    parameter_counts,
)
from multitask_cnn.models import MultiTaskModel, build_model
from multitask_cnn.models.checkpoint import (
    CheckpointMismatchError,
    check_checkpoint,
    describe_checkpoint,
)
from multitask_cnn.tasks import TaskSpec
from multitask_cnn.tracking import final_metrics, task_metric_names
from multitask_cnn.training import (
    in_turn,
    predict,
    resolve_device,
    task_splits,
)

logger = logging.getLogger(__name__)

# task -> {"y_true", "y_pred"}, labelled rows only
Predictions = dict[str, dict[str, np.ndarray]]


def _model_of(checkpoint: dict[str, Any], tasks: dict[str, TaskSpec]) -> MultiTaskModel:
    """The checkpoint's model with the heads of ``tasks`` (those it was trained with)."""
    trained = parse(ModelConfig, checkpoint["config"]["model"], "model")
    model = build_model(tasks, trained.backbone, backbone_args=trained.backbone_args,
                        shared_stages=trained.shared_stages,
                        architecture=trained.architecture,
                        architecture_args=trained.architecture_args)  # fmt: skip
    model.load_state_dict(checkpoint["model"], strict=True)
    return model


def checked_model(
    checkpoint: dict[str, Any],
    specs: dict[str, TaskSpec],
    normalisation_stats: dict[str, Any],
) -> MultiTaskModel:
    """A checkpoint's model with the heads of ``specs``; refused (a
    :class:`CheckpointMismatchError` that says what differs) when it was trained for
    other tasks or on differently normalised data."""
    return _model_of(
        checkpoint, check_checkpoint(checkpoint, specs, normalisation_stats)
    )


def predict_checkpoint(
    checkpoint: dict[str, Any],
    model_input: dict[str, Any],
    normalisation_stats: dict[str, Any],
    specs: dict[str, TaskSpec],
    config: EvaluationConfig,
    where: str = "test",
) -> Predictions:
    """Rebuild a checkpoint's model (refused when it was trained for other tasks or on
    differently normalised data) and predict ``specs``' labels on the labelled rows
    of each task's own source in ``model_input`` (one split, named ``where`` in
    errors); regression values in original units."""
    model = checked_model(checkpoint, specs, normalisation_stats)
    device = resolve_device(config.device)
    model.to(device)
    test = task_splits(model_input, normalisation_stats, specs, where)
    outputs = predict(model, in_turn(test, config.batch_size), device)
    predictions: Predictions = {}
    for split in test.values():
        for task, target in split.labels.items():
            kind = specs[task].task_kind
            mask = kind.mask(target)
            predictions[task] = {
                "y_true": split.unscale(task, target[mask]).numpy(),
                "y_pred": split.unscale(
                    task, kind.predict(outputs[task])[mask]
                ).numpy(),
            }
    return predictions


def predict_test(
    multitask_checkpoint: dict[str, Any],
    model_input_test: dict[str, Any],
    normalisation_stats: dict[str, Any],
    tasks: dict[str, Any],
    evaluation: dict[str, Any],
) -> Predictions:
    """The multi-task model's predictions of every task on the test split."""
    config = parse(EvaluationConfig, evaluation, "evaluation")
    return predict_checkpoint(multitask_checkpoint, model_input_test, normalisation_stats,
                    parse_tasks(tasks), config)  # fmt: skip


def check_baselines(
    baseline_checkpoints: dict[str, Any], specs: dict[str, TaskSpec]
) -> None:
    """Refuse baselines that lack a task of ``specs``, naming the tasks."""
    missing = sorted(set(specs) - set(baseline_checkpoints))
    if missing:
        raise CheckpointMismatchError(
            f"no single-task baseline for tasks {missing}; run the baselines pipeline "
            "(`kedro run` includes it)"
        )


def predict_baselines(
    baseline_checkpoints: dict[str, Any],
    model_input_test: dict[str, Any],
    normalisation_stats: dict[str, Any],
    tasks: dict[str, Any],
    evaluation: dict[str, Any],
) -> Predictions:
    """Each task's single-task model's predictions on the test split."""
    config = parse(EvaluationConfig, evaluation, "evaluation")
    specs = parse_tasks(tasks)
    check_baselines(baseline_checkpoints, specs)
    predictions: Predictions = {}
    for task, spec in specs.items():
        predictions |= predict_checkpoint(baseline_checkpoints[task], model_input_test,
                                normalisation_stats, {task: spec}, config)  # fmt: skip
    return predictions


def compute_baseline_metrics(
    baseline_predictions: Predictions,
    tasks: dict[str, Any],
    baseline_checkpoints: dict[str, Any],
) -> dict[str, Any]:
    """The single-task models' test metrics (as :func:`compute_task_metrics`), and
    which baseline each is: the run that trained it, whether this run reused it."""
    metrics = _metrics(baseline_predictions, parse_tasks(tasks), "stl")
    described = {
        task: describe_checkpoint(checkpoint)
        | {"reused": bool(checkpoint.get("reused"))}
        for task, checkpoint in baseline_checkpoints.items()
        if task in metrics
    }
    return {"test": metrics, "baselines": described}


def compare_to_baselines(
    task_metrics: dict[str, Any],
    baseline_metrics: dict[str, Any],
    tasks: dict[str, Any],
) -> dict[str, Any]:
    """Δm of the multi-task model against the single-task models (percent, + = better)
    and each task's term."""
    specs = parse_tasks(tasks)
    value, terms = delta_m(
        task_metrics["test"], baseline_metrics["test"],
        {task: spec.task_kind.lower_is_better for task, spec in specs.items()},
    )  # fmt: skip
    logger.info("Δm against single-task models: %+.2f %% (%s)", value,
                ", ".join(f"{t} {v:+.2f} %" for t, v in terms.items()))  # fmt: skip
    return {"delta_m": value, "per_task": terms}


def _metrics(
    predictions: Predictions, specs: dict[str, TaskSpec], name: str
) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    for task, spec in specs.items():
        y_true, y_pred = predictions[task]["y_true"], predictions[task]["y_pred"]
        metrics[task] = spec.task_kind.metrics(y_true, y_pred, spec) | {
            "n": int(len(y_true))
        }
        logger.info("%s.%s: %s", name, task, metrics[task])
    return metrics


def compute_task_metrics(
    predictions: Predictions,
    tasks: dict[str, Any],
    multitask_checkpoint: dict[str, Any],
) -> dict[str, Any]:
    """Per task, on labelled test rows: the kind's metrics (accuracy and macro-F1, or
    MAE and RMSE in the label's units) and ``n``; each task's labelled rows per split;
    and which checkpoint they describe."""
    metrics = _metrics(predictions, parse_tasks(tasks), "test")
    return {
        "test": metrics,
        "labelled": _labelled(multitask_checkpoint, metrics),
        "checkpoint": describe_checkpoint(multitask_checkpoint),
    }


def _labelled(checkpoint: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """``{task: {train, val, test: labelled rows}}``; train and val as trained."""
    trained = checkpoint.get("labelled", {})
    return {
        task: dict(trained.get(task, {})) | {"test": m["n"]}
        for task, m in metrics.items()
    }


def plot_confusion_matrices(
    predictions: Predictions, tasks: dict[str, Any]
) -> dict[str, Figure]:
    """One confusion-matrix figure per classification task, keyed by file name.

    Figures are built without pyplot, so nothing touches the matplotlib backend.
    """
    figures = {}
    for task, spec in parse_tasks(tasks).items():
        if not spec.task_kind.is_classifier:
            continue
        names = source_class_names(spec, task)
        matrix = confusion_matrix(predictions[task]["y_true"], predictions[task]["y_pred"],
                                  labels=list(range(len(names))))  # fmt: skip
        figure = Figure(figsize=(8, 7))
        axes = figure.add_subplot()
        ConfusionMatrixDisplay(matrix, display_labels=names).plot(
            ax=axes, cmap="Blues", colorbar=False, values_format="d", xticks_rotation=45
        )
        axes.set_title(f"{task}: test confusion matrix (n={matrix.sum()})")
        figure.tight_layout()
        figures[f"confusion_matrix_{task}.png"] = figure
    return figures


def comparison_to_mlflow_metrics(
    baseline_metrics: dict[str, Any], comparison: dict[str, Any]
) -> dict[str, dict[str, float]]:
    """``stl.<task>.<metric>`` for the single-task models, ``delta_m`` and
    ``delta_m.<task>``."""
    metrics = task_metric_names("stl", baseline_metrics["test"])
    metrics["delta_m"] = comparison["delta_m"]
    metrics |= {f"delta_m.{task}": v for task, v in comparison["per_task"].items()}
    return final_metrics(metrics)


def to_mlflow_metrics(task_metrics: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Flatten ``{"test": {task: {metric: v}}}`` to MLflow names ``test.task.metric``,
    and each task's labelled rows per split to ``labelled.<task>.<split>``."""
    metrics = task_metric_names("test", task_metrics["test"])
    metrics |= {f"labelled.{task}.{split}": n
                for task, splits in task_metrics.get("labelled", {}).items()
                for split, n in splits.items()}  # fmt: skip
    return final_metrics(metrics)


COSTS = {  # report key: (label, unit, lower is better)
    "parameters": ("parameters", "", True),
    "macs_per_image": ("MACs per image", "", True),
    "train_seconds": ("training time", "s", True),
    "latency_ms": ("latency, batch 1", "ms", True),
    "throughput": ("inference throughput", "images/s", False),
    "train_peak_memory_mb": ("peak memory, training", "MiB", True),
    "inference_peak_memory_mb": ("peak memory, inference", "MiB", True),
}


def _checkpoint_model(checkpoint: dict[str, Any]) -> MultiTaskModel:
    """The checkpoint's model, with the heads it was trained with."""
    return _model_of(
        checkpoint, {t: TaskSpec(**s) for t, s in checkpoint["config"]["tasks"].items()}
    )


def _model_costs(
    checkpoint: dict[str, Any],
    model: MultiTaskModel,
    speed: dict[str, float],
    images: torch.Tensor,
    device: torch.device,
) -> dict[str, Any]:
    """One trained model's costs; ``speed`` as :func:`inference_speeds` measured it."""
    counts = parameter_counts(model)
    memory, method = inference_peak_memory([model], images, device)
    return {
        "parameters": counts["total"],
        "parameters_shared": counts["shared"],
        "parameters_per_task": counts["per_task"],
        "macs_per_image": macs_per_image(model, tuple(images.shape[1:])),
        "macs_per_task": {
            task: macs_per_image(model, tuple(images.shape[1:]), task)
            for task in model.tasks
        },  # fmt: skip
        "train_seconds": checkpoint.get("train_seconds"),
        **speed,
        "train_peak_memory_mb": checkpoint.get("train_peak_memory_mb"),
        "train_peak_memory_method": checkpoint.get("train_peak_memory_method"),
        "inference_peak_memory_mb": memory,
        "inference_peak_memory_method": method,
    }


def report_efficiency(
    multitask_checkpoint: dict[str, Any],
    baseline_checkpoints: dict[str, Any],
    comparison: dict[str, Any],
    model_input_test: dict[str, Any],
    normalisation_stats: dict[str, Any],
    tasks: dict[str, Any],
    evaluation: dict[str, Any],
) -> tuple[dict[str, Any], str, dict[str, dict[str, float]]]:
    """What the multi-task model costs against the single-task models together:
    parameters (shared, per task), MACs per image (``FlopCounterMode``), training wall
    time, latency at batch 1 and throughput at ``evaluation.batch_size`` on the run's
    device (the models timed in turn, pass by pass), peak memory of training and of inference at that batch
    (:class:`~multitask_cnn.training.memory.PeakMemory`), each ratio multi-task ÷
    single-task, and Δm. Single-task costs add up (an image goes through every model:
    latencies add, throughput is ``1 / Σ 1/t``); their peak memory is that of the models
    run one after another (training: the largest of theirs).

    Returns the report (JSON), a Markdown table of it, and headline MLflow metrics
    ``efficiency.<cost>.ratio`` and ``efficiency.<cost>.{multitask,single_task}``.
    """
    specs = parse_tasks(tasks)
    config = parse(EvaluationConfig, evaluation, "evaluation")
    device = resolve_device(config.device)
    test = task_splits(model_input_test, normalisation_stats, specs, "test")
    first = next(iter(test.values()))
    images = first.images_at(slice(0, config.batch_size))
    checkpoints = {"": multitask_checkpoint} | {
        task: baseline_checkpoints[task] for task in specs
    }
    models = {name: _checkpoint_model(c) for name, c in checkpoints.items()}
    # all models timed in turn, pass by pass (a noisy machine slows them alike)
    speeds = inference_speeds(models, images, device, batch_size=config.batch_size,
                              repeats=config.timing_repeats)  # fmt: skip
    costs = {name: _model_costs(checkpoints[name], models[name], speeds[name], images, device)
             for name in models}  # fmt: skip
    multitask, single = costs.pop(""), costs
    together: dict[str, Any] = {
        key: (None if any(s[key] is None for s in single.values())
              else sum(s[key] for s in single.values()))
        for key in ("parameters", "macs_per_image", "train_seconds", "latency_ms")
    }  # fmt: skip
    together["throughput"] = 1 / sum(1 / s["throughput"] for s in single.values())
    # memory: the single-task models train one after another (the largest peak counts)
    # and answer a batch one after another (measured so)
    peaks = [s["train_peak_memory_mb"] for s in single.values()]
    together["train_peak_memory_mb"] = None if None in peaks else max(peaks)
    together["inference_peak_memory_mb"], _ = inference_peak_memory(
        [models[task] for task in specs], images, device
    )
    ratios = cost_ratios({k: multitask[k] for k in COSTS}, together)
    report = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "images": list(images.shape[1:]),
        "throughput_batch": multitask["throughput_batch"],
        "memory_method": {
            "training": multitask["train_peak_memory_method"],
            "inference": multitask["inference_peak_memory_method"],
        },
        "multitask": multitask,
        "single_task": {"together": together, "per_task": single},
        "ratios": ratios,
        "delta_m": comparison["delta_m"],
        "delta_m_per_task": comparison["per_task"],
    }
    metrics = {f"efficiency.{k}.ratio": v for k, v in ratios.items() if v is not None}
    metrics |= {
        f"efficiency.{k}.multitask": multitask[k]
        for k in COSTS
        if multitask[k] is not None
    }
    metrics |= {
        f"efficiency.{k}.single_task": together[k]
        for k in COSTS
        if together[k] is not None
    }
    metrics |= {f"efficiency.macs_per_image.task.{task}": n
                for task, n in multitask["macs_per_task"].items()}  # fmt: skip
    logger.info("Efficiency, multi-task ÷ single-task: %s",
                ", ".join(f"{k} {v:.2f}" for k, v in ratios.items() if v is not None))  # fmt: skip
    return report, efficiency_table(report), final_metrics(metrics)


def _shown(value: float | None, unit: str) -> str:
    if value is None:
        return "not recorded"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{text} {unit}".strip()


def efficiency_table(report: dict[str, Any]) -> str:
    """The efficiency report as Markdown: the costs with their ratios, then Δm."""
    multitask, together = report["multitask"], report["single_task"]["together"]
    n_tasks = len(report["single_task"]["per_task"])
    lines = [
        f"# Efficiency: one multi-task model against {n_tasks} single-task models",
        "",
        f"Device `{report['device']}` ({report['threads']} threads), images "
        f"{tuple(report['images'])}; throughput at batch {report['throughput_batch']}.",
        "",
        "| cost | multi-task | single-task, together | ratio |",
        "|---|---|---|---|",
    ]
    for key, (label, unit, lower) in COSTS.items():
        ratio = report["ratios"].get(key)
        better = (
            ""
            if ratio is None
            else (" (lower is better)" if lower else " (higher is better)")
        )
        lines.append(
            f"| {label}{better} | {_shown(multitask[key], unit)} | "
            f"{_shown(together[key], unit)} | {'—' if ratio is None else f'{ratio:.2f}'} |"
        )
    methods = report.get("memory_method", {})
    if any(methods.values()):
        lines += ["", "Peak memory: " + "; ".join(f"{what}, {how}" for what, how in methods.items() if how)
                  + ". The single-task models train, and answer a batch, one after another "
                  "(training: the largest of their peaks)."]  # fmt: skip
    single = report["single_task"]["per_task"]
    lines += ["", f"Shared parameters: {multitask['parameters_shared']:,}; per task: "
              + ", ".join(f"{t} {n:,}" for t, n in multitask["parameters_per_task"].items()),
              "", "MACs per image for one task alone (multi-task model, against the task's "
              "single-task model): " + ", ".join(
                  f"{t} {n:,} ({n / single[t]['macs_per_image']:.2f}×)"
                  for t, n in multitask.get("macs_per_task", {}).items()),
              "", f"Δm against the single-task models: {report['delta_m']:+.2f} % ("
              + ", ".join(f"{t} {v:+.2f} %" for t, v in report["delta_m_per_task"].items())
              + ")", ""]  # fmt: skip
    return "\n".join(lines)


def plot_report(
    training_history: pd.DataFrame,
    task_metrics: dict[str, Any],
    baseline_metrics: dict[str, Any],
    efficiency_report: dict[str, Any],
    tasks: dict[str, Any],
) -> dict[str, Figure]:
    """Figures to read at a glance, keyed by file name: each task's training and
    validation curves (``curves_<task>.png``), the multi-task against the single-task
    models per task beside the cost ratios (``multitask_vs_single_task.png``), and the
    task weights over epochs when the strategy changed them (``task_weights.png``)."""
    specs = parse_tasks(tasks)
    figures = {f"curves_{task}.png": _curves(training_history, task, spec)
               for task, spec in specs.items()}  # fmt: skip
    figures["multitask_vs_single_task.png"] = _comparison_figure(
        task_metrics["test"], baseline_metrics["test"], efficiency_report, specs
    )
    weights = [c for c in training_history.columns if c.startswith("weight.")]
    if weights and float(training_history[weights].std().max()) > 1e-9:
        figure = Figure(figsize=(7, 4))
        axes = figure.add_subplot()
        for column in weights:
            axes.plot(training_history["epoch"], training_history[column], marker="o",
                      label=column.removeprefix("weight."))  # fmt: skip
        axes.set(title="Task weights the strategy gave, per epoch (mean over steps)",
                 xlabel="epoch", ylabel="weight")  # fmt: skip
        axes.legend()
        figure.tight_layout()
        figures["task_weights.png"] = figure
    return figures


def _curves(history: pd.DataFrame, task: str, spec: TaskSpec) -> Figure:
    figure = Figure(figsize=(10, 4))
    loss, score = figure.subplots(1, 2)
    for split, style in (("train", "-"), ("val", "--")):
        column = f"{split}.{task}.loss"
        if column in history:
            loss.plot(history["epoch"], history[column], style, marker="o", label=split)
    unit = "" if spec.task_kind.is_classifier else " (standardised target)"
    loss.set(title=f"{task}: loss per epoch", xlabel="epoch", ylabel=f"loss{unit}")
    loss.legend()
    metric = "accuracy" if spec.task_kind.is_classifier else "mae"
    if f"val.{task}.{metric}" in history:
        score.plot(history["epoch"], history[f"val.{task}.{metric}"], marker="o",
                   color="tab:green", label="val")  # fmt: skip
    score.set(title=f"{task}: validation {metric} per epoch", xlabel="epoch",
              ylabel=f"{metric}{unit}")  # fmt: skip
    score.legend()
    for axes in (loss, score):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.tight_layout()
    return figure


def _comparison_figure(
    multitask: dict[str, Any], single: dict[str, Any], report: dict[str, Any],
    specs: dict[str, TaskSpec],
) -> Figure:  # fmt: skip
    figure = Figure(figsize=(12, 4.5))
    scores, costs = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    names = list(specs)
    metric = {
        t: "accuracy" if specs[t].task_kind.is_classifier else "mae" for t in names
    }
    x = np.arange(len(names))
    for offset, (label, values) in zip((-0.2, 0.2), (("multi-task", multitask),
                                                      ("single-task", single)), strict=True):  # fmt: skip
        heights = [values[t][metric[t]] for t in names]
        bars = scores.bar(x + offset, heights, width=0.4, label=label)
        scores.bar_label(bars, fmt="%.3f", fontsize=8)
    scores.set_xticks(x, [f"{t}\n({metric[t]})" for t in names])
    scores.set(
        title=f"Test score per task (Δm {report['delta_m']:+.2f} %)", ylabel="score"
    )
    scores.set_ylim(top=scores.get_ylim()[1] * 1.15)  # room for the legend
    scores.legend(loc="upper right", ncols=2)
    shown = {k: v for k, v in report["ratios"].items() if v is not None}
    labels = [f"{COSTS[k][0]} ({'↓' if COSTS[k][2] else '↑'} better)" for k in shown]
    bars = costs.barh(labels, list(shown.values()), color="tab:gray")
    costs.bar_label(bars, fmt="%.2f", fontsize=8)
    costs.axvline(1.0, color="black", linewidth=1)
    costs.set(title="Cost, multi-task ÷ single-task (1 = equal)", xlabel="ratio")
    figure.tight_layout()
    return figure


def package_model(
    multitask_checkpoint: dict[str, Any],
    model_input_test: dict[str, Any],
    tasks: dict[str, Any],
    evaluation: dict[str, Any],
) -> dict[str, Any]:
    """What the ``multitask_model`` dataset logs into MLflow: the checkpoint, an input
    example (two test images of the first task's source, uint8 ``(2, C, H, W)``) and
    where to register it; ``log: false`` when ``evaluation.log_model`` is off."""
    config = parse(EvaluationConfig, evaluation, "evaluation")
    source = next(iter(parse_tasks(tasks).values())).source
    images = np.asarray(model_input_test[source]["images"][:2])
    return {"log": config.log_model, "checkpoint": multitask_checkpoint,
            "input_example": images, "registered_model_name": config.registered_model_name,
            "alias": config.model_alias}  # fmt: skip
