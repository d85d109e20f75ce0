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

from . import reports
from .reports import LABEL, MODELS, MULTITASK, SINGLE_TASK

logger = logging.getLogger(__name__)


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
        metrics |= reports.sharing_metrics(sharing)
        tables.append(reports.sharing_table(sharing))
        figures["sharing.png"] = reports.sharing_figure(sharing)
    if saliency:
        report["saliency"] = {k: v for k, v in saliency.items() if k != "examples"}
        metrics |= reports.metric_names(
            "saliency", "top_left_mass", saliency["top_left_mass"]
        )
        tables.append(reports.saliency_table(saliency))
        figures["saliency.png"] = reports.saliency_figure(saliency)
    if robustness:
        report["robustness"] = robustness | {
            "relative": reports.relative_to_clean(robustness)
        }
        metrics |= reports.robustness_metrics(report["robustness"])
        tables.append(reports.robustness_table(robustness))
        figures["robustness.png"] = reports.robustness_figure(robustness, specs)
    if generalisation:
        report["generalisation"] = generalisation | {
            "gap": reports.train_test_gaps(generalisation)
        }
        metrics |= reports.generalisation_metrics(report["generalisation"])
        tables.append(reports.generalisation_table(report["generalisation"]))
        figures["generalisation.png"] = reports.generalisation_figure(
            generalisation, specs
        )
    if not report:
        logger.info(
            "No insight asked for (insight.sharing, insight.saliency, "
            "insight.robustness, insight.generalisation)"
        )
    return report, "\n\n".join(tables) + "\n", final_metrics(metrics), figures
