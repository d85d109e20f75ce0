"""Data sources the task spec can name (``tasks.<task>.source``), and the labels each
provides, so that a task spec is checked against its data before any work starts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from multitask_cnn.registry import Registry
from multitask_cnn.tasks import TaskSpec

from .digits import CLASSES as DIGIT_CLASSES
from .fashion_mnist import CLASSES as FASHION_MNIST_CLASSES

__all__ = ["SOURCES", "LabelInfo", "SourceInfo", "source_class_names"]


@dataclass(frozen=True)
class LabelInfo:
    """One label column of a source: class count (None: a real value) and class names."""

    n_classes: int | None
    class_names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class SourceInfo:
    description: str
    labels: Mapping[str, LabelInfo] = field(default_factory=dict)
    # True: the labels are the user's columns, described by the task spec alone
    labels_from_spec: bool = False


SOURCES: Registry[SourceInfo] = Registry("data source")

SOURCES.register("multifashion")(
    SourceInfo(
        description="MultiFashion (Pareto-MTL): two Fashion-MNIST items per 36x36 image",
        labels={
            "left": LabelInfo(10, FASHION_MNIST_CLASSES),
            "right": LabelInfo(10, FASHION_MNIST_CLASSES),
            "footwear": LabelInfo(2, ("no footwear", "footwear")),  # binary
            "ink": LabelInfo(None),  # regression: mean pixel intensity in [0, 1]
        },
    )
)

SOURCES.register("digits")(
    SourceInfo(
        description="scikit-learn's bundled handwritten digits (8x8), centred on the canvas",
        labels={"digit": LabelInfo(10, DIGIT_CLASSES)},
    )
)

SOURCES.register("manifest")(
    SourceInfo(
        description="your images: a CSV manifest (the image_manifest catalog entry)",
        labels_from_spec=True,
    )
)


def source_class_names(spec: TaskSpec, task: str) -> list[str]:
    """The class names to show for ``task`` (a classifier) in reports and answers."""
    info = SOURCES.get(spec.source).labels.get(spec.label_name(task))
    return spec.display_classes(info.class_names if info else None)
