"""What each task looks at: Grad-CAM heat maps (Selvaraju et al. 2017) per task at one
backbone stage, through captum's ``LayerGradCam``."""

from __future__ import annotations

import torch
from captum.attr import LayerAttribution, LayerGradCam

from multitask_cnn.models import MultiTaskModel

from .sharing import task_stages

__all__ = ["grad_cam", "spatial_stages", "top_left_mass"]


@torch.no_grad()
def spatial_stages(
    model: MultiTaskModel, task: str, image_shape: tuple[int, ...]
) -> list[str]:
    """The stages on ``task``'s path whose output is still an image ``(C, h, w)``:
    those Grad-CAM can look at."""
    model.eval()
    device = next(model.parameters()).device
    x = torch.zeros((2, *image_shape), device=device)
    names = []
    for name, stage in task_stages(model, task).items():
        x = stage(x)
        if x.dim() == 4:
            names.append(name)
    return names


def grad_cam(
    model: MultiTaskModel,
    images: torch.Tensor,
    task: str,
    stage: str,
    batch_size: int = 256,
    *,
    binary: bool = False,
) -> torch.Tensor:
    """``(n, H, W)`` Grad-CAM heat maps of ``task`` at ``stage`` for normalised
    ``images`` ``(n, C, H, W)``, upsampled bilinearly to the image and scaled to [0, 1]
    per image (all zero where nothing pushes the output up). A classifier's map is for
    its predicted class (``binary``: a one-logit classifier, whose "no" is the negated
    logit); a regression task's shows what raises its value."""
    model.eval()
    device = next(model.parameters()).device
    layer = task_stages(model, task)[stage]
    sign = torch.ones(())

    def output(x: torch.Tensor) -> torch.Tensor:
        return model(x, {task: slice(None)})[task] * sign.to(x.device)

    cam = LayerGradCam(output, layer)
    maps = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device)
        sign = torch.ones(())
        with torch.no_grad():
            logits = output(x)
        if binary:  # the evidence for the predicted answer, yes or no
            sign = torch.where(logits > 0, 1.0, -1.0)
        target = logits.argmax(1) if logits.dim() == 2 else None
        heat = cam.attribute(x, target=target, relu_attributions=True)
        heat = LayerAttribution.interpolate(heat, tuple(x.shape[-2:]), "bilinear")
        heat = heat[:, 0].detach().float().cpu()
        peak = heat.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]
        maps.append((heat / peak).clamp(min=0.0))
    return torch.cat(maps)


def top_left_mass(heat: torch.Tensor) -> torch.Tensor:
    """``(n,)``: the share of each ``(H, W)`` map's mass above the anti-diagonal (the
    top-left half; half the diagonal's own pixels count on each side); 0.5 for a
    uniform or empty map."""
    h, w = heat.shape[-2:]
    rows = torch.arange(h, dtype=torch.int64)[:, None] * max(w - 1, 1)
    cols = torch.arange(w, dtype=torch.int64)[None, :] * max(h - 1, 1)
    # +1 top-left, -1 bottom-right, 0 on the anti-diagonal (exact integer arithmetic)
    side = torch.sign(max(h - 1, 1) * max(w - 1, 1) - rows - cols).to(torch.float64)
    weight = (side + 1) / 2
    mass = heat.to(torch.float64).flatten(1)
    total = mass.sum(1)
    top_left = (mass * weight.flatten()).sum(1)
    return torch.where(total > 0, top_left / total.clamp(min=1e-300), 0.5).float()
