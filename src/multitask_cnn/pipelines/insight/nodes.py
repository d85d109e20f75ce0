"""Nodes of the ``insight`` pipeline: which stages the tasks should share (sharing),
what each task looks at (saliency), the multi-task model against the single-task
models on corrupted test images (robustness) and across splits and a distribution
shift (generalisation). Each part runs only when its ``insight.<part>`` is true."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from itertools import combinations
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
from multitask_cnn.evaluation.saliency import grad_cam, spatial_stages, top_left_mass
from multitask_cnn.evaluation.sharing import (
    centred_gram,
    cka_of_grams,
    gradient_cosines,
    group_tasks,
    recommend_depth,
    stage_outputs,
    task_stages,
)
from multitask_cnn.pipelines.evaluation.nodes import (
    check_baselines,
    checked_model,
    predict_checkpoint,
)
from multitask_cnn.seeds import numpy_generator
from multitask_cnn.tasks import TaskSpec
from multitask_cnn.tracking import final_metrics
from multitask_cnn.training import Split, resolve_device, task_splits

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


def _probes(
    model_input: Mapping[str, Any],
    stats: Mapping[str, Any],
    specs: dict[str, TaskSpec],
    n: int,
) -> dict[str, Split]:
    """``{source: Split}``: the first ``n`` test rows of each source the tasks read."""
    return {source: split.subset(slice(0, min(n, len(split))))
            for source, split in task_splits(model_input, stats, specs, "test").items()}  # fmt: skip


def _pairs(specs: Mapping[str, TaskSpec]) -> list[tuple[str, str]]:
    return list(combinations(specs, 2))


def assess_sharing(
    multitask_checkpoint: dict[str, Any],
    baseline_checkpoints: dict[str, Any],
    model_input_test: dict[str, Any],
    normalisation_stats: dict[str, Any],
    tasks: dict[str, Any],
    evaluation: dict[str, Any],
    insight: dict[str, Any],
) -> dict[str, Any]:
    """Which stages to share. For every pair of tasks and every backbone stage: the
    linear CKA of the two single-task models' outputs of that stage on one probe set
    (the first ``insight.probe_images`` test rows of every source), and, at each stage
    the multi-task model shares, the mean cosine between the two tasks' loss gradients
    there (batches of its training batch size). Recommends the deepest stage worth
    sharing (:func:`recommend_depth`) and, for three tasks or more, groups of tasks
    alike at the first stage not all of them should share. ``{}`` when
    ``insight.sharing`` is false."""
    config = parse(InsightConfig, insight, "insight")
    if not config.sharing:
        return {}
    specs = parse_tasks(tasks)
    if len(specs) < 2:
        logger.warning("Sharing: one task (%s), nothing to compare", next(iter(specs)))
        return {}
    checkpoints = _checkpoints(multitask_checkpoint, baseline_checkpoints, specs)
    device = resolve_device(parse(EvaluationConfig, evaluation, "evaluation").device)
    probes = _probes(model_input_test, normalisation_stats, specs, config.probe_images)
    images = torch.cat([split.images_at(slice(None)) for split in probes.values()])
    grams: dict[str, dict[str, torch.Tensor]] = {}
    for task, spec in specs.items():
        model = checked_model(checkpoints[task], {task: spec}, normalisation_stats)
        outputs = stage_outputs(model.to(device), images, task)
        grams[task] = {stage: centred_gram(value) for stage, value in outputs.items()}
    stages = list(next(iter(grams.values())))
    pairs = _pairs(specs)
    cka = {stage: {pair: cka_of_grams(grams[pair[0]][stage], grams[pair[1]][stage])
                   for pair in pairs} for stage in stages}  # fmt: skip
    model = checked_model(multitask_checkpoint, specs, normalisation_stats).to(device)
    trained = multitask_checkpoint["config"]["training"]
    sizes = {source: int(trained.get("fusion", {}).get("batch_size", {}).get(
        source, trained["batch_size"])) for source in probes}  # fmt: skip
    batches = {
        task: [(probes[spec.source].images_at(slice(i, i + sizes[spec.source])),
                probes[spec.source].labels[task][i : i + sizes[spec.source]])
               for i in range(0, len(probes[spec.source]), sizes[spec.source])]
        for task, spec in specs.items()
    }  # fmt: skip
    cosines = gradient_cosines(model, batches, specs)
    depth = recommend_depth(stages, cka, cosines, config.cka_threshold)
    group_stage = stages[min(depth, len(stages) - 1)]
    groups = (group_tasks(list(specs), cka[group_stage], config.cka_threshold)
              if len(specs) >= 3 else None)  # fmt: skip
    for stage in stages:
        logger.info("Sharing at %s: CKA %s; gradient cosine %s", stage,
                    _pair_values(cka[stage]), _pair_values(cosines.get(stage)))  # fmt: skip
    logger.info("Sharing: share %d of %d stages%s", depth, len(stages),
                f"; groups at {group_stage}: {groups}" if groups else "")  # fmt: skip
    return {
        "images": {source: len(split) for source, split in probes.items()},
        "stages": stages,
        "trained_shared_stages": model.shared_stages,
        "trained_architecture": model.architecture,
        "pairs": [list(pair) for pair in pairs],
        "cka": {stage: [cka[stage][pair] for pair in pairs] for stage in stages},
        "gradient_cosine": {stage: [per[pair] for pair in pairs]
                            for stage, per in cosines.items()},
        "threshold": config.cka_threshold,
        "recommendation": {
            "shared_stages": depth,
            "deepest_shared_stage": stages[depth - 1] if depth else None,
            "group_stage": group_stage if groups else None,
            "groups": groups,
        },
    }  # fmt: skip


def _pair_values(values: Mapping[tuple[str, str], float] | None) -> str:
    if values is None:
        return "not shared in the multi-task model"
    return ", ".join(f"{a}–{b} {v:.3f}" for (a, b), v in values.items())


def assess_saliency(
    multitask_checkpoint: dict[str, Any],
    baseline_checkpoints: dict[str, Any],
    model_input_test: dict[str, Any],
    normalisation_stats: dict[str, Any],
    tasks: dict[str, Any],
    evaluation: dict[str, Any],
    insight: dict[str, Any],
) -> dict[str, Any]:
    """What each task looks at: Grad-CAM maps (captum) of every task at
    ``insight.saliency_stage``, in the multi-task model and in the task's single-task
    model, on the first ``insight.probe_images`` test rows of the task's source; the
    mean share of each map's mass in the image's top-left half, and the first
    ``insight.saliency_images`` images with their maps for the figure. ``{}`` when
    ``insight.saliency`` is false."""
    config = parse(InsightConfig, insight, "insight")
    if not config.saliency:
        return {}
    specs = parse_tasks(tasks)
    checkpoints = _checkpoints(multitask_checkpoint, baseline_checkpoints, specs)
    device = resolve_device(parse(EvaluationConfig, evaluation, "evaluation").device)
    probes = _probes(model_input_test, normalisation_stats, specs, config.probe_images)
    shared = checked_model(multitask_checkpoint, specs, normalisation_stats).to(device)
    models = {MULTITASK: dict.fromkeys(specs, shared)}
    models[SINGLE_TASK] = {
        task: checked_model(checkpoints[task], {task: spec}, normalisation_stats).to(device)
        for task, spec in specs.items()
    }  # fmt: skip
    first = next(iter(probes.values()))
    first_task = next(iter(specs))  # the stages of its single-task model (any sharing)
    spatial = spatial_stages(models[SINGLE_TASK][first_task], first_task,
                             first.image_shape)  # fmt: skip
    if not spatial:
        raise ValueError(f"insight.saliency: no stage of {first_task!r}'s path outputs "
                         "an image; Grad-CAM needs a convolutional stage")  # fmt: skip
    stage = config.saliency_stage or spatial[-1]
    if stage not in spatial:
        raise ValueError(
            f"insight.saliency_stage={stage!r}: the models of this run have no such stage "
            f"whose output is an image; theirs are {spatial}"
        )
    shown = config.saliency_images
    mass: dict[str, dict[str, float]] = {MULTITASK: {}, SINGLE_TASK: {}}
    examples: dict[str, Any] = {}
    for source, split in probes.items():
        images = split.images_at(slice(None))
        pixels = split.images[:shown]
        example = {
            "pixels": np.asarray(pixels)[:, 0],
            "heat": {MULTITASK: {}, SINGLE_TASK: {}},
        }
        for task, spec in specs.items():
            if spec.source != source:
                continue
            for model in MODELS:
                if stage not in task_stages(models[model][task], task):
                    logger.warning("Saliency: %s has no stage %r on %r's path (%s): "
                                   "no map", LABEL[model], stage, task,
                                   models[model][task].architecture)  # fmt: skip
                    continue
                heat = grad_cam(models[model][task], images, task, stage,
                                binary=spec.task_kind.name == "binary")  # fmt: skip
                mass[model][task] = float(top_left_mass(heat).mean())
                example["heat"][model][task] = heat[:shown].numpy()
        examples[source] = example
    logger.info(
        "Saliency at %s, top-left share of the heat: %s", stage, _describe(mass)
    )
    return {"stage": stage,
            "images": {source: len(split) for source, split in probes.items()},
            "top_left_mass": mass, "examples": examples}  # fmt: skip


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
    sharing: dict[str, Any],
    saliency: dict[str, Any],
    robustness: dict[str, Any],
    generalisation: dict[str, Any],
    tasks: dict[str, Any],
) -> tuple[dict[str, Any], str, dict[str, dict[str, float]], dict[str, Figure]]:
    """The parts that ran as one report, a Markdown table, MLflow metrics and figures
    (``sharing.png``, ``saliency.png``, ``robustness.png``, ``generalisation.png``)."""
    specs = parse_tasks(tasks)
    report: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    tables: list[str] = []
    figures: dict[str, Figure] = {}
    if sharing:
        report["sharing"] = sharing
        metrics |= _sharing_metrics(sharing)
        tables.append(_sharing_table(sharing))
        figures["sharing.png"] = _sharing_figure(sharing)
    if saliency:
        report["saliency"] = {k: v for k, v in saliency.items() if k != "examples"}
        metrics |= _named("saliency", "top_left_mass", saliency["top_left_mass"])
        tables.append(_saliency_table(saliency))
        figures["saliency.png"] = _saliency_figure(saliency)
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
        logger.info(
            "No insight asked for (insight.sharing, insight.saliency, "
            "insight.robustness, insight.generalisation)"
        )
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


def _pair_name(pair: list[str]) -> str:
    return f"{pair[0]}–{pair[1]}"


def _sharing_metrics(sharing: dict[str, Any]) -> dict[str, float]:
    """``sharing.cka.<stage>.<a>.<b>``, ``sharing.gradient_cosine.<stage>.<a>.<b>`` and
    ``sharing.recommended_shared_stages``."""
    metrics = {}
    for part in ("cka", "gradient_cosine"):
        for stage, values in sharing[part].items():
            for (a, b), value in zip(sharing["pairs"], values, strict=True):
                metrics[f"sharing.{part}.{stage}.{a}.{b}"] = value
    recommendation = sharing["recommendation"]
    return metrics | {
        "sharing.recommended_shared_stages": recommendation["shared_stages"]
    }


def _sharing_table(sharing: dict[str, Any]) -> str:
    pairs = [_pair_name(pair) for pair in sharing["pairs"]]
    head = [
        "stage",
        *(f"CKA {p}" for p in pairs),
        *(f"gradient cosine {p}" for p in pairs),
    ]
    lines = [f"### Sharing: {_counts(sharing['images'])} test images probed", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    for stage in sharing["stages"]:
        cosines = sharing["gradient_cosine"].get(stage)
        cells = [stage, *(f"{v:.3f}" for v in sharing["cka"][stage])]
        cells += (
            [f"{v:+.3f}" for v in cosines] if cosines else ["not shared"] * len(pairs)
        )
        lines.append("| " + " | ".join(cells) + " |")
    recommendation = sharing["recommendation"]
    depth = recommendation["shared_stages"]
    lines += ["", f"Recommendation (CKA at least {sharing['threshold']} for every pair, "
              "gradients not opposed): " + (
                  f"share the first {depth} of {len(sharing['stages'])} stages, up to "
                  f"`{recommendation['deepest_shared_stage']}` "
                  f"(`model.shared_stages: {depth}`; this model "
                  + (f"shares {sharing['trained_shared_stages']})"
                     if sharing.get("trained_architecture", "hard") == "hard"
                     else f"is `{sharing['trained_architecture']}`)")
                  if depth else
                  "share no stage (`model.shared_stages: 0`)")]  # fmt: skip
    if recommendation["groups"]:
        groups = "; ".join(", ".join(group) for group in recommendation["groups"])
        lines.append(
            f"Task groups alike at `{recommendation['group_stage']}`: {groups}"
        )
    return "\n".join(lines)


def _sharing_figure(sharing: dict[str, Any]) -> Figure:
    stages = sharing["stages"]
    positions = np.arange(len(stages))
    figure = Figure(figsize=(max(8.0, 1.6 * len(stages) * 2), 4.2))
    cka_axes, cosine_axes = figure.subplots(1, 2)
    for index, pair in enumerate(sharing["pairs"]):
        label = _pair_name(pair)
        cka_axes.plot(positions, [sharing["cka"][s][index] for s in stages], marker="o",
                      label=label)  # fmt: skip
        shared = [i for i, s in enumerate(stages) if s in sharing["gradient_cosine"]]
        cosine_axes.plot(shared, [sharing["gradient_cosine"][stages[i]][index]
                                  for i in shared], marker="o", label=label)  # fmt: skip
    cka_axes.axhline(sharing["threshold"], color="grey", linestyle="--",
                     label=f"threshold {sharing['threshold']}")  # fmt: skip
    cka_axes.set(title="Linear CKA of the single-task models", ylim=(0.0, 1.05),
                 ylabel="CKA")  # fmt: skip
    cosine_axes.axhline(0.0, color="grey", linestyle="--")
    cosine_axes.set(title="Gradient cosine in the multi-task model", ylim=(-1.05, 1.05),
                    ylabel="cosine")  # fmt: skip
    depth = sharing["recommendation"]["shared_stages"]
    for axes in (cka_axes, cosine_axes):
        axes.set_xticks(positions, stages)
        axes.set_xlim(-0.5, len(stages) - 0.5)
        axes.axvspan(-0.5, depth - 0.5, color="tab:green", alpha=0.08)
        axes.legend(fontsize=7)
    figure.suptitle(f"Which stages to share: recommended {depth} of {len(stages)} "
                    "(shaded)")  # fmt: skip
    figure.tight_layout()
    return figure


def _saliency_table(saliency: dict[str, Any]) -> str:
    lines = [f"### Saliency: Grad-CAM at `{saliency['stage']}`, "
             f"{_counts(saliency['images'])} test images", "",
             "Share of each heat map's mass in the image's top-left half (MultiFashion: "
             "the `left` item's corner), averaged over the images.", "",
             "| task | multi-task | single-task |", "|---|---|---|"]  # fmt: skip
    mass = saliency["top_left_mass"]
    for task in mass[SINGLE_TASK]:
        cells = [f"{mass[m][task]:.3f}" if task in mass[m] else "–" for m in MODELS]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _saliency_figure(saliency: dict[str, Any]) -> Figure:
    """Per source, its first images: the image, then each of its tasks' Grad-CAM
    overlay in the multi-task model, then in the single-task models."""
    blocks = []  # (image's index, its source's example, its columns [(model, task)])
    for example in saliency["examples"].values():
        columns = [(model, task) for model in MODELS for task in example["heat"][model]]
        blocks += [(index, example, columns) for index in range(len(example["pixels"]))]
    width = 1 + max(len(columns) for _, _, columns in blocks)
    figure = Figure(figsize=(1.6 * width, 1.7 * len(blocks) + 0.6))
    grid = figure.subplots(len(blocks), width, squeeze=False)
    for row, (index, example, columns) in enumerate(blocks):
        image = example["pixels"][index]
        grid[row][0].imshow(image, cmap="gray")
        for column, (model, task) in enumerate(columns, start=1):
            axes = grid[row][column]
            axes.imshow(image, cmap="gray")
            axes.imshow(example["heat"][model][task][index], cmap="jet", alpha=0.45,
                        vmin=0.0, vmax=1.0)  # fmt: skip
            if row == 0 or columns != blocks[row - 1][2]:
                axes.set_title(f"{LABEL[model]}\n{task}", fontsize=8)
        if row == 0:
            grid[row][0].set_title("image", fontsize=8)
        for axes in grid[row]:
            axes.axis("off")
    figure.suptitle(f"Grad-CAM at {saliency['stage']}: what each task looks at")
    figure.tight_layout()
    return figure
