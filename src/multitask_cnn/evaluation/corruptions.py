"""Common corruptions of uint8 images at five severities (Hendrycks & Dietterich,
"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations",
ICLR 2019), for the robustness insight.

The severities are those of their CIFAR-10-C (``make_cifar_c.py``), made for 32 px
images, the size nearest the 36 px MultiFashion canvas. Noise, blur, contrast and
brightness are theirs, on greyscale: brightness adds to the pixel value (their HSV
value channel is the grey level). ``occlusion`` is not one of theirs: a black square
at a random place, its side a share of the image side.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torchvision.transforms.v2.functional as F

__all__ = ["CORRUPTIONS", "SEVERITIES", "corrupt"]

SEVERITIES = (1, 2, 3, 4, 5)

# severity 1..5 -> the corruption's parameter
_LEVELS = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # noise std, pixels in [0, 1]
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),  # blur sigma, pixels
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # kept share of each image's contrast
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to every pixel
    "occlusion": (0.1, 0.2, 0.3, 0.4, 0.5),  # side of the black square / image side
}


def _noise(x: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    return x + std * torch.randn(x.shape, generator=generator)


def _blur(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    size = 2 * math.ceil(3 * sigma) + 1
    return F.gaussian_blur(x, [size, size], [sigma, sigma])


def _contrast(x: torch.Tensor, kept: float, generator: torch.Generator) -> torch.Tensor:
    return F.adjust_contrast(x, kept)  # (x - image mean) * kept + image mean


def _brightness(
    x: torch.Tensor, add: float, generator: torch.Generator
) -> torch.Tensor:
    return x + add


def _occlusion(
    x: torch.Tensor, share: float, generator: torch.Generator
) -> torch.Tensor:
    n, _, height, width = x.shape
    side = max(1, round(share * min(height, width)))
    top = torch.randint(0, height - side + 1, (n, 1, 1, 1), generator=generator)
    left = torch.randint(0, width - side + 1, (n, 1, 1, 1), generator=generator)
    rows = torch.arange(height).view(1, 1, height, 1)
    cols = torch.arange(width).view(1, 1, 1, width)
    inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    return x.masked_fill(inside, 0.0)


_Corruption = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]
CORRUPTIONS: dict[str, _Corruption] = {
    "gaussian_noise": _noise,
    "gaussian_blur": _blur,
    "contrast": _contrast,
    "brightness": _brightness,
    "occlusion": _occlusion,
}


def corrupt(
    images: torch.Tensor, name: str, severity: int, seed: int = 0
) -> torch.Tensor:
    """``images`` (uint8 ``(N, C, H, W)``) with corruption ``name`` at ``severity``
    (1 = mildest, 5 = strongest), clipped and rounded back to uint8. Random
    corruptions draw from a generator seeded with ``seed``: the same call gives the
    same images."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; known: {sorted(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity}")
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(
            f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    generator = torch.Generator().manual_seed(seed)
    level = _LEVELS[name][severity - 1]
    corrupted = CORRUPTIONS[name](images.float().div(255.0), level, generator)
    return corrupted.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
