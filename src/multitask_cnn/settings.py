"""Project settings (see https://docs.kedro.org/en/stable/configure/)."""

from __future__ import annotations

import os

from kedro.config import OmegaConfigLoader

from multitask_cnn.hooks import (
    CheckpointTagsHook,
    DataBuildHook,
    DeterminismHook,
    ExperimentViewHook,
    HostAllocatorHook,
    ReproducibilityHook,
    ReusedOutputsHook,
    RunLockHook,
    RunNameHook,
    StoppedRunHook,
    TrackingStoreHook,
    UserErrorsHook,
    ValidateParametersHook,
)
from multitask_cnn.provenance import project_root

# No usage telemetry leaves this project: MLflow 3 sends usage events from a background
# thread unless told not to (its DO_NOT_TRACK check wants "true", not "1"); Kedro's is
# off through .telemetry and KEDRO_DISABLE_TELEMETRY.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def mlflow_tracking_uri(filename: str = "mlflow.db") -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else a SQLite file at the project root.

    Anchoring to the root keeps one store whatever the current directory is
    (``notebooks/``, cron); a relative ``sqlite:///`` URI would not.
    """
    return (
        os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{project_root() / filename}"
    )


def mlflow_artifact_location(dirname: str = "mlruns") -> str | None:
    """Artifacts of a new experiment go to ``<project root>/mlruns`` (MLflow's default,
    ``./mlruns``, follows the current directory); with ``$MLFLOW_TRACKING_URI`` set,
    the server decides (None)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    return (project_root() / dirname).as_uri()


def team_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else the team server ``make team-server`` starts
    on this machine (``http://127.0.0.1:$TEAM_SERVER_PORT``, port 5002 by default)."""
    port = os.environ.get("TEAM_SERVER_PORT", "5002")
    return os.environ.get("MLFLOW_TRACKING_URI") or f"http://127.0.0.1:{port}"


HOOKS = (
    UserErrorsHook(),
    TrackingStoreHook(),
    RunLockHook(),
    ValidateParametersHook(),
    ReproducibilityHook(),
    ReusedOutputsHook(),
    CheckpointTagsHook(),
    DataBuildHook(),
    DeterminismHook(),
    HostAllocatorHook(),
    RunNameHook(),
    ExperimentViewHook(),
    StoppedRunHook(),
)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # conf/<env>/mlflow.yml, airflow.yml and parameters override single keys, not
    # whole groups.
    "merge_strategy": {"mlflow": "soft", "parameters": "soft", "airflow": "soft"},
    # kedro-mlflow's own pattern, declared here because TrackingStoreHook reads the
    # file before kedro-mlflow would add it
    "config_patterns": {"mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"]},
    "custom_resolvers": {
        "mlflow_tracking_uri": mlflow_tracking_uri,
        "mlflow_artifact_location": mlflow_artifact_location,
        "team_tracking_uri": team_tracking_uri,
    },
}
