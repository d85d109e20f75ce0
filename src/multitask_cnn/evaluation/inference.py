"""A trained checkpoint as a predictor: raw images in, every task's answer out.

The same path as the evaluation pipeline (the checkpoint's model and heads, the
normalisation of its training data, regression values back in original units), for
callers that hold images rather than model input: the MLflow model this project logs
serves it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from multitask_cnn.data.sources import source_class_names
from multitask_cnn.models import build_model
from multitask_cnn.tasks import TaskSpec
from multitask_cnn.training import Split, in_turn, predict

__all__ = ["Predictor"]


class Predictor:
    """Predictions of a checkpoint (the ``multitask_checkpoint`` format) on images.

    Images are pixels 0..255, ``(N, H, W)`` or ``(N, C, H, W)`` of the size the model
    was trained on; each is normalised with the train statistics of the source it
    comes from. :meth:`predict` gives, per task of that source, class ids (classifiers)
    or values in the label's own units (regression); :meth:`class_names` names the
    class ids.
    """

    def __init__(self, checkpoint: Mapping[str, Any], device: str = "cpu") -> None:
        config = checkpoint["config"]
        self.specs = {t: TaskSpec(**s) for t, s in config["tasks"].items()}
        model = config["model"]
        self.model = build_model(self.specs, model["backbone"],
                                 backbone_args=model.get("backbone_args"),
                                 shared_stages=model.get("shared_stages"),
                                 architecture=model.get("architecture", "hard"),
                                 architecture_args=model.get("architecture_args"))  # fmt: skip
        self.model.load_state_dict(checkpoint["model"], strict=True)
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.normalisation = dict(checkpoint["normalisation"])
        args = model.get("backbone_args") or {}
        size = args.get("input_size")  # the canvas it was trained on
        self.image_shape = (
            None if size is None else (int(args.get("in_channels", 1)), size, size)
        )

    @property
    def sources(self) -> list[str]:
        """The data sources the tasks read, in the order of the tasks."""
        return list(dict.fromkeys(spec.source for spec in self.specs.values()))

    def tasks_of(self, source: str) -> list[str]:
        return [task for task, spec in self.specs.items() if spec.source == source]

    def class_names(self, task: str) -> list[str] | None:
        """A classifier's class names by id (None for regression)."""
        spec = self.specs[task]
        if not spec.task_kind.is_classifier:
            return None
        return source_class_names(spec, task)

    def predict(
        self, images: Any, source: str | None = None, batch_size: int = 256
    ) -> dict[str, np.ndarray]:
        """Per task of ``source`` (default: the first task's), one answer per image."""
        return self.predict_with_probabilities(images, source, batch_size)[0]

    def predict_with_probabilities(
        self, images: Any, source: str | None = None, batch_size: int = 256
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """:meth:`predict`'s answers and, per classifier, the ``(N, n_classes)`` class
        probabilities (columns in class-id order), from one forward pass."""
        source = self._source(source)
        pixels = _pixels(images)
        stats = self.normalisation[source]
        tasks = self.tasks_of(source)
        placeholder = {t: torch.zeros(len(pixels), dtype=torch.int64
                                      if self.specs[t].task_kind.is_classifier
                                      else torch.float32) for t in tasks}  # fmt: skip
        scaling = {}
        for task in tasks:
            target = stats.get("targets", {}).get(self.specs[task].label_name(task))
            if target is not None and not self.specs[task].task_kind.is_classifier:
                scaling[task] = (float(target["mean"]), float(target["std"]))
        split = Split(pixels, placeholder, float(stats["mean"]), float(stats["std"]),
                      scaling)  # fmt: skip
        if self.image_shape is not None and split.image_shape != self.image_shape:
            raise ValueError(
                f"images of shape {split.image_shape} (C, H, W); the model takes "
                f"{self.image_shape}"
            )
        outputs = predict(self.model, in_turn({source: split}, batch_size), self.device)
        kinds = {task: self.specs[task].task_kind for task in tasks}
        answers = {task: split.unscale(task, kinds[task].predict(outputs[task])).numpy()
                   for task in tasks}  # fmt: skip
        probabilities = {
            task: p.numpy()
            for task in tasks
            if (p := kinds[task].probabilities(outputs[task])) is not None
        }
        return answers, probabilities

    def _source(self, source: str | None) -> str:
        if source is None:
            return self.sources[0]
        if source not in self.sources:
            raise ValueError(
                f"unknown source {source!r}; the model reads {self.sources}"
            )
        return source


def _pixels(images: Any) -> torch.Tensor:
    """``images`` as uint8 ``(N, C, H, W)``; values must be whole numbers 0..255."""
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4 or not len(array):
        raise ValueError(
            f"images must be (N, H, W) or (N, C, H, W), N >= 1; got shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.number) or (
        array.dtype != np.uint8
        and not (np.isfinite(array).all() and (array >= 0).all() and (array <= 255).all()
                 and (array == np.round(array)).all())
    ):  # fmt: skip
        raise ValueError("images must hold whole pixel values 0..255")
    return torch.from_numpy(np.ascontiguousarray(array.astype(np.uint8)))
