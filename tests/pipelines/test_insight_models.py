"""The insight's sharing and saliency parts on models trained on real MultiFashion."""

import copy

import pytest
import torch

from multitask_cnn.config import ProjectParameters
from multitask_cnn.pipelines.baselines.nodes import train_baseline
from multitask_cnn.pipelines.insight.nodes import (
    assess_saliency,
    assess_sharing,
    report_insight,
)
from multitask_cnn.pipelines.multitask_training.nodes import train_multitask_model

MODEL = {"backbone": "convnet"}  # LeNet learns too little in 5 epochs on 900 images
TRAINING = {"epochs": 5, "batch_size": 64, "seed": 1, "device": "cpu"}
CLASSES = {"kind": "multiclass", "num_classes": 10}
ON = {"sharing": True, "saliency": True, "probe_images": 300}


def _train(inputs, stats, tasks):
    multitask, _, _ = train_multitask_model(inputs[0], inputs[1], stats, tasks, MODEL,
                                            TRAINING, {}, None, {"enabled": False})  # fmt: skip
    baselines = {task: train_baseline(task, inputs[0], inputs[1], stats, tasks, MODEL,
                                      TRAINING, None, {}, None, {"enabled": False})[0]
                 for task in tasks}  # fmt: skip
    return multitask, baselines


@pytest.fixture(scope="module")
def left_and_right(model_inputs, normalisation_stats):
    tasks = {"left": CLASSES, "right": CLASSES}
    return tasks, *_train(model_inputs, normalisation_stats, tasks)


@pytest.fixture(scope="module")
def same_and_noise(model_inputs, normalisation_stats):
    """Tasks ``left``, ``same`` (left's labels again) and ``noise`` (right's labels,
    shuffled: nothing in the image predicts them)."""
    inputs = copy.deepcopy(model_inputs)
    generator = torch.Generator().manual_seed(0)
    for split in inputs:
        labels = split["multifashion"]["labels"]
        labels["right"] = labels["right"][torch.randperm(len(labels["right"]),
                                                         generator=generator)]  # fmt: skip
    tasks = {"left": CLASSES, "same": CLASSES | {"label": "left"},
             "noise": CLASSES | {"label": "right"}}  # fmt: skip
    return tasks, inputs, *_train(inputs, normalisation_stats, tasks)


def test_identical_tasks_are_alike_at_every_stage_and_random_labels_not_at_the_last(
    same_and_noise, normalisation_stats
):
    tasks, inputs, multitask, baselines = same_and_noise
    sharing = assess_sharing(multitask, baselines, inputs[2], normalisation_stats, tasks,
                             {"device": "cpu"}, ON)  # fmt: skip
    assert sharing["stages"] == ["block1", "block2", "block3", "fc"]
    assert sharing["pairs"] == [["left", "same"], ["left", "noise"], ["same", "noise"]]
    assert sharing["images"] == {"multifashion": 300}
    for stage in sharing["stages"]:
        assert sharing["cka"][stage][0] > 0.99  # left–same
    assert sharing["cka"]["fc"][1] < 0.5  # left–noise, last stage
    assert sharing["cka"]["fc"][1] < sharing["cka"]["block1"][1]
    # the multi-task model shares every stage: a gradient cosine per stage and pair
    assert set(sharing["gradient_cosine"]) == set(sharing["stages"])
    assert all(-1 <= v <= 1 for vs in sharing["gradient_cosine"].values() for v in vs)
    recommendation = sharing["recommendation"]
    assert recommendation["shared_stages"] < 4  # not the last stage, with noise
    assert recommendation["groups"] == [["left", "same"], ["noise"]]
    _, table, metrics, figures = report_insight(sharing, {}, {}, {}, tasks)
    assert metrics["sharing.cka.fc.left.same"]["value"] == sharing["cka"]["fc"][0]
    assert (metrics["sharing.recommended_shared_stages"]["value"]
            == recommendation["shared_stages"])  # fmt: skip
    assert "Task groups alike at" in table and "left, same; noise" in table
    assert set(figures) == {"sharing.png"}


def test_left_looks_top_left_and_right_bottom_right(left_and_right, model_inputs,
                                                    normalisation_stats):  # fmt: skip
    tasks, multitask, baselines = left_and_right
    saliency = assess_saliency(multitask, baselines, model_inputs[2], normalisation_stats,
                               tasks, {"device": "cpu"}, ON | {"saliency_images": 3})  # fmt: skip
    assert saliency["stage"] == "block3"  # convnet's deepest spatial stage
    mass = saliency["top_left_mass"]
    for model in ("multitask", "single_task"):
        assert mass[model]["left"] > 0.55, mass
        assert mass[model]["right"] < 0.45, mass
    example = saliency["examples"]["multifashion"]
    assert example["pixels"].shape == (3, 36, 36)
    assert example["heat"]["multitask"]["right"].shape == (3, 36, 36)
    assert 0.0 <= example["heat"]["single_task"]["left"].min()
    assert example["heat"]["single_task"]["left"].max() <= 1.0
    report, table, metrics, figures = report_insight({}, saliency, {}, {}, tasks)
    assert "examples" not in report["saliency"]  # the JSON report stays small
    assert (
        metrics["stl.saliency.top_left_mass.left"]["value"]
        == mass["single_task"]["left"]
    )
    assert "| right |" in table
    figure = figures["saliency.png"]
    assert len(figure.axes) == 3 * 5  # 3 images x (image + 2 tasks x 2 models)


def test_a_named_saliency_stage_is_used_and_a_bad_one_refused(
    left_and_right, model_inputs, normalisation_stats
):
    tasks, multitask, baselines = left_and_right
    saliency = assess_saliency(multitask, baselines, model_inputs[2], normalisation_stats,
                               tasks, {"device": "cpu"},
                               ON | {"saliency_stage": "block1"})  # fmt: skip
    assert saliency["stage"] == "block1"
    base = {"tasks": tasks, "model": MODEL}
    with pytest.raises(
        ValueError, match=r"saliency_stage='conv9' is not a stage of 'convnet'"
    ):
        ProjectParameters.model_validate(
            base | {"insight": {"saliency_stage": "conv9"}}
        )
    with pytest.raises(ValueError, match="'fc': its output is flat"):
        ProjectParameters.model_validate(base | {"insight": {"saliency_stage": "fc"}})
