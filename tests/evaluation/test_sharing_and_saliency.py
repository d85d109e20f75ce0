"""Linear CKA, the sharing recommendation and the Grad-CAM mass measure."""

import pytest
import torch

from multitask_cnn.config import parse_tasks
from multitask_cnn.evaluation.saliency import grad_cam, top_left_mass
from multitask_cnn.evaluation.sharing import (
    gradient_cosines,
    group_tasks,
    linear_cka,
    recommend_depth,
)
from multitask_cnn.models import build_model

CLASSES = {"kind": "multiclass", "num_classes": 10}


def test_cka_is_one_for_the_same_representation_up_to_rotation_and_scale():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 20, generator=generator)
    rotation, _ = torch.linalg.qr(torch.randn(20, 20, generator=generator))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3.0 * x @ rotation + 5.0) == pytest.approx(1.0)
    # images (n, C, H, W) are flattened
    assert linear_cka(x.reshape(300, 5, 2, 2), x) == pytest.approx(1.0)


def test_cka_is_low_for_unrelated_and_in_between_for_partly_shared_features():
    generator = torch.Generator().manual_seed(1)
    x, noise = (
        torch.randn(500, 8, generator=generator),
        torch.randn(500, 8, generator=generator),
    )
    unrelated = linear_cka(x, noise)
    half = linear_cka(x, torch.cat([x[:, :4], noise[:, 4:]], 1))
    assert unrelated < 0.1
    assert 0.3 < half < 0.7
    with pytest.raises(ValueError, match="same n >= 2 examples, got 500 and 499"):
        linear_cka(x, x[:-1])


def test_the_depth_stops_at_the_first_stage_unlike_or_pulled_apart():
    stages = ["conv1", "conv2", "fc"]
    pair = ("a", "b")
    cka = {"conv1": {pair: 0.9}, "conv2": {pair: 0.7}, "fc": {pair: 0.2}}
    assert recommend_depth(stages, cka, {}, 0.5) == 2
    assert recommend_depth(stages, cka, {}, 0.95) == 0
    assert recommend_depth(stages, cka, {}, 0.1) == 3
    opposed = {"conv1": {pair: 0.3}, "conv2": {pair: -0.2}, "fc": {pair: 0.1}}
    assert recommend_depth(stages, cka, opposed, 0.1) == 1


def test_tasks_group_by_how_alike_their_representations_are():
    cka = {("a", "b"): 0.9, ("a", "c"): 0.1, ("a", "d"): 0.2,
           ("b", "c"): 0.15, ("b", "d"): 0.1, ("c", "d"): 0.8}  # fmt: skip
    assert group_tasks(["a", "b", "c", "d"], cka, 0.5) == [["a", "b"], ["c", "d"]]
    assert group_tasks(["a", "b", "c", "d"], cka, 0.05) == [["a", "b", "c", "d"]]
    assert group_tasks(["a", "b", "c", "d"], cka, 0.95) == [["a"], ["b"], ["c"], ["d"]]


def test_top_left_mass_splits_the_map_at_the_anti_diagonal():
    maps = torch.zeros(4, 36, 36)
    maps[0, :10, :10] = 1.0  # top-left corner
    maps[1, -10:, -10:] = 1.0  # bottom-right corner
    maps[2] = 1.0  # uniform
    # maps[3]: empty
    assert top_left_mass(maps).tolist() == pytest.approx([1.0, 0.0, 0.5, 0.5])


def _twins(shared_stages=None):
    """A LeNet with two identical tasks: the same head weights, the same labels."""
    torch.manual_seed(0)
    specs = parse_tasks(
        {"a": CLASSES | {"label": "left"}, "b": CLASSES | {"label": "left"}}
    )
    model = build_model(specs, "lenet", shared_stages=shared_stages)
    model.heads["b"].load_state_dict(model.heads["a"].state_dict())
    for stage in model.task_stages["b"]:
        model.task_stages["b"][stage].load_state_dict(
            model.task_stages["a"][stage].state_dict()
        )
    images, labels = torch.randn(16, 1, 36, 36), torch.randint(0, 10, (16,))
    return model, specs, {task: [(images, labels)] * 2 for task in specs}


def test_identical_tasks_have_gradient_cosine_one_at_every_shared_stage():
    model, specs, batches = _twins()
    cosines = gradient_cosines(model, batches, specs)
    assert list(cosines) == ["conv1", "conv2", "fc"]
    for per_pair in cosines.values():
        assert per_pair[("a", "b")] == pytest.approx(1.0, abs=1e-6)


def test_gradient_cosines_cover_the_shared_stages_only():
    model, specs, batches = _twins(shared_stages=1)
    assert list(gradient_cosines(model, batches, specs)) == ["conv1"]
    model, specs, batches = _twins(shared_stages=0)
    assert (
        gradient_cosines(model, batches, specs) == {}
    )  # nothing shared: nothing to do


def test_a_task_without_labels_in_a_step_does_not_count_there():
    model, specs, batches = _twins()
    images, labels = batches["b"][0]
    batches["b"] = [(images, torch.full_like(labels, -1)), (images, labels)]
    cosines = gradient_cosines(model, batches, specs)
    assert cosines["fc"][("a", "b")] == pytest.approx(1.0, abs=1e-6)  # step 2 alone


@pytest.mark.parametrize("kind", ["binary", "regression"])
def test_grad_cam_maps_one_logit_and_regression_tasks(kind):
    torch.manual_seed(0)
    spec = {"kind": kind, "label": "footwear" if kind == "binary" else "ink"}
    specs = parse_tasks({"t": spec})
    model = build_model(specs, "lenet")
    heat = grad_cam(
        model, torch.randn(7, 1, 36, 36), "t", "conv2", binary=kind == "binary"
    )
    assert heat.shape == (7, 36, 36)
    assert heat.min() >= 0 and heat.max() <= 1
    if kind == "binary":  # the evidence for the answer given, "yes" or "no": a map each
        assert (heat.flatten(1).amax(1) == 1).all()
