"""The corruptions of the robustness insight, on real MultiFashion canvases."""

import pytest
import torch

from multitask_cnn.evaluation.corruptions import CORRUPTIONS, SEVERITIES, corrupt


@pytest.fixture(scope="module")
def canvases(model_inputs):
    return model_inputs[2]["multifashion"]["images"][:200]  # uint8 (200, 1, 36, 36)


def _change(images, corrupted):
    return (corrupted.float() - images.float()).abs().mean().item() / 255.0


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_each_corruption_keeps_the_shape_and_grows_with_severity(canvases, name):
    changes = []
    for severity in SEVERITIES:
        corrupted = corrupt(canvases, name, severity)
        assert corrupted.dtype == torch.uint8 and corrupted.shape == canvases.shape
        changes.append(_change(canvases, corrupted))
    assert changes[0] > 0
    assert changes == sorted(changes), changes  # stronger severity, larger change
    assert torch.equal(
        corrupt(canvases, name, 3, seed=1), corrupt(canvases, name, 3, seed=1)
    )


def test_the_corruptions_follow_their_definitions(canvases):
    x = canvases.float() / 255.0
    noisy = corrupt(canvases, "gaussian_noise", 5).float() / 255.0
    inside = (x > 0.2) & (x < 0.8)  # no clipping there
    assert (noisy - x)[inside].std().item() == pytest.approx(0.10, abs=0.01)
    brighter = corrupt(canvases, "brightness", 2).float() / 255.0
    assert (brighter - x)[x < 0.8].mean().item() == pytest.approx(0.10, abs=0.005)
    flat = corrupt(canvases, "contrast", 5).float() / 255.0
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(flat, (x - mean) * 0.15 + mean, atol=1 / 255)
    occluded = corrupt(canvases, "occlusion", 5)
    zeroed = (occluded == 0) & (canvases > 0)
    assert zeroed.flatten(1).sum(1).max().item() <= 18 * 18  # half the 36 px side
    blurred = corrupt(canvases, "gaussian_blur", 5).float()
    assert blurred.sum().item() == pytest.approx(
        canvases.float().sum().item(), rel=0.02
    )


def test_unknown_names_and_severities_are_refused(canvases):
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        corrupt(canvases, "fog", 1)
    with pytest.raises(ValueError, match="severity must be one of"):
        corrupt(canvases, "contrast", 6)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(canvases.float(), "contrast", 1)
