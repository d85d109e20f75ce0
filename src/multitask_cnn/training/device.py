"""Device choice, driven by parameters; nothing assumes CUDA."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def _mps_available() -> bool:
    return bool(
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    )


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an explicit device must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device {name!r} but CUDA is not available here; use auto or cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(
                f"device {name!r} but only {torch.cuda.device_count()} GPU(s) exist"
            )
    if device.type == "mps" and not _mps_available():
        raise RuntimeError(f"device {name!r} but MPS is not available here")
    return device
