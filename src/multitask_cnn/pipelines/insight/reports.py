"""The insight's report: metrics, Markdown tables and figures of each part's results
(the ``assess_*`` nodes' outputs)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from multitask_cnn.tasks import TaskSpec

MULTITASK = "multitask"
SINGLE_TASK = "single_task"
MODELS = (MULTITASK, SINGLE_TASK)
# model -> metric name prefix in MLflow (the single-task models' as in `stl.<task>.*`)
PREFIX = {MULTITASK: "", SINGLE_TASK: "stl."}
LABEL = {MULTITASK: "multi-task", SINGLE_TASK: "single-task"}


def count_text(rows: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {source}" for source, n in rows.items())


def relative_to_clean(robustness: dict[str, Any]) -> dict[str, dict[str, float]]:
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


def metric_names(
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


def robustness_metrics(robustness: dict[str, Any]) -> dict[str, float]:
    metrics = {}
    for row in robustness["rows"]:
        where = (
            "clean"
            if row["severity"] == 0
            else f"{row['corruption']}.{row['severity']}"
        )
        metrics |= metric_names("robust", where, row["scores"], robustness["metric"])
    return metrics | metric_names("robust", "relative", robustness["relative"])


def robustness_table(robustness: dict[str, Any]) -> str:
    tasks = list(robustness["metric"])
    head = ["corruption", "severity"] + [
        f"{task} {robustness['metric'][task]} ({label})"
        for task in tasks for label in ("multi-task", "single-task")
    ]  # fmt: skip
    lines = [f"### Robustness: {count_text(robustness['images'])} test images per set", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    for row in robustness["rows"]:
        cells = [row["corruption"], str(row["severity"])] + [
            f"{row['scores'][model][task]:.4f}" for task in tasks for model in MODELS
        ]
        lines.append("| " + " | ".join(cells) + " |")
    relative = robustness.get("relative") or relative_to_clean(robustness)
    cells = ["mean corrupted / clean", ""] + [
        f"{relative[model][task]:.3f}" for task in tasks for model in MODELS
    ]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def robustness_figure(robustness: dict[str, Any], specs: dict[str, TaskSpec]) -> Figure:
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


def train_test_gaps(generalisation: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{model: {task: train metric - test metric}}``."""
    scores = generalisation["scores"]
    return {model: {task: scores["train"][model][task] - scores["test"][model][task]
                    for task in scores["train"][model]}
            for model in MODELS}  # fmt: skip


def generalisation_metrics(generalisation: dict[str, Any]) -> dict[str, float]:
    metrics = {}
    for split, per_model in generalisation["scores"].items():
        metrics |= metric_names(
            "generalisation", split, per_model, generalisation["metric"]
        )
    return metrics | metric_names("generalisation", "gap", generalisation["gap"])


def generalisation_table(generalisation: dict[str, Any]) -> str:
    scores = generalisation["scores"]
    splits = list(scores)
    counts = "; ".join(f"{split} {count_text(rows)}"
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


def generalisation_figure(
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


def pair_name(pair: list[str]) -> str:
    return f"{pair[0]}–{pair[1]}"


def sharing_metrics(sharing: dict[str, Any]) -> dict[str, float]:
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


def sharing_table(sharing: dict[str, Any]) -> str:
    pairs = [pair_name(pair) for pair in sharing["pairs"]]
    head = [
        "stage",
        *(f"CKA {p}" for p in pairs),
        *(f"gradient cosine {p}" for p in pairs),
    ]
    lines = [f"### Sharing: {count_text(sharing['images'])} test images probed", "",
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


def sharing_figure(sharing: dict[str, Any]) -> Figure:
    stages = sharing["stages"]
    positions = np.arange(len(stages))
    figure = Figure(figsize=(max(8.0, 1.6 * len(stages) * 2), 4.2))
    cka_axes, cosine_axes = figure.subplots(1, 2)
    for index, pair in enumerate(sharing["pairs"]):
        label = pair_name(pair)
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


def saliency_table(saliency: dict[str, Any]) -> str:
    lines = [f"### Saliency: Grad-CAM at `{saliency['stage']}`, "
             f"{count_text(saliency['images'])} test images", "",
             "Share of each heat map's mass in the image's top-left half (MultiFashion: "
             "the `left` item's corner), averaged over the images.", "",
             "| task | multi-task | single-task |", "|---|---|---|"]  # fmt: skip
    mass = saliency["top_left_mass"]
    for task in mass[SINGLE_TASK]:
        cells = [f"{mass[m][task]:.3f}" if task in mass[m] else "–" for m in MODELS]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def saliency_figure(saliency: dict[str, Any]) -> Figure:
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
