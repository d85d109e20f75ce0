"""Project pipelines.

The ``baselines`` pipeline has one namespaced branch per task (``stl.<task>``), so the
registry needs the run's task names before any node runs. A session learns them from
its own configuration (its env and ``--params``, :func:`use_session_config`, called
by ``ValidateParametersHook`` when the context is created) and keeps them until
another session's context replaces them; without one (``kedro registry``, kedro-viz
without ``--include-hooks``) they come from the default env's files (``$KEDRO_ENV`` if
set).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

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

logger = logging.getLogger(__name__)

_session_tasks: tuple[str, ...] | None = None  # the current session's task names
_registered_tasks: tuple[str, ...] | None = None  # those the registered pipelines have


def register_pipelines() -> dict[str, Pipeline]:
    """``__default__`` chains data_prep → pretraining → weight_transfer →
    multitask_training (and the baselines) → evaluation → insight (whose parts run
    when their ``insight.<part>`` is true)."""
    global _registered_tasks
    tasks = task_names()
    _registered_tasks = tasks
    pipelines = {
        "data_prep": data_prep.create_pipeline(),
        "pretraining": pretraining.create_pipeline(),
        "weight_transfer": weight_transfer.create_pipeline(),
        "baselines": baselines.create_pipeline(tasks),
        "multitask_training": multitask_training.create_pipeline(),
        "evaluation": evaluation.create_pipeline(),
        "insight": insight.create_pipeline(),
    }
    pipelines["__default__"] = sum(pipelines.values(), start=Pipeline([]))
    return pipelines


def task_names() -> tuple[str, ...]:
    """The task names of the current session's configuration, else of the default
    env's."""
    if _session_tasks is not None:
        return _session_tasks
    from kedro.framework.project import settings

    from multitask_cnn.provenance import project_root

    try:
        loader = settings.CONFIG_LOADER_CLASS(
            conf_source=str(project_root() / settings.CONF_SOURCE),
            env=os.environ.get("KEDRO_ENV"),
            **settings.CONFIG_LOADER_ARGS,
        )
        return names_of(loader["parameters"])
    except Exception as error:  # noqa: BLE001 - the parameter check reports bad config
        logger.debug("No task names for the baselines' branches: %s", error)
        return ()


def names_of(parameters: Any) -> tuple[str, ...]:
    """The tasks listed under ``tasks`` (a task set to null is removed). Lenient: the
    parameter check, not the registry, reports a malformed spec."""
    tasks = parameters.get("tasks") if isinstance(parameters, Mapping) else None
    if not isinstance(tasks, Mapping):
        return ()
    return tuple(
        name
        for name, spec in tasks.items()
        if isinstance(name, str) and name.isidentifier() and spec is not None
    )


def use_session_config(config_loader: Any | None) -> None:
    """Register the pipelines with the tasks of this session's configuration (its env
    and ``--params``; None: of the default env again); pipelines registered earlier
    with other tasks are dropped."""
    global _session_tasks
    from kedro.framework.project import pipelines

    if config_loader is None and _session_tasks is None:
        return  # nothing to forget
    _session_tasks = None
    if config_loader is not None:
        _session_tasks = names_of(config_loader["parameters"])
    if _registered_tasks is not None and _registered_tasks != task_names():
        pipelines.configure(__name__)  # registered again on next use
