"""Project pipelines."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from multitask_cnn.pipelines import (
    baselines,
    data_prep,
    evaluation,
    insight,
    multitask_training,
    pretraining,
    weight_transfer,
)


def register_pipelines() -> dict[str, Pipeline]:
    """``__default__`` chains data_prep → pretraining → weight_transfer →
    multitask_training (and the baselines) → evaluation → insight (whose parts run
    when their ``insight.<part>`` is true)."""
    pipelines = {
        "data_prep": data_prep.create_pipeline(),
        "pretraining": pretraining.create_pipeline(),
        "weight_transfer": weight_transfer.create_pipeline(),
        "baselines": baselines.create_pipeline(),
        "multitask_training": multitask_training.create_pipeline(),
        "evaluation": evaluation.create_pipeline(),
        "insight": insight.create_pipeline(),
    }
    pipelines["__default__"] = sum(pipelines.values(), start=Pipeline([]))
    return pipelines
