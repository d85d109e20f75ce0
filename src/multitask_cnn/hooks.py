"""Project hooks: parameter validation before a run, reproducibility tags on it."""

from __future__ import annotations

import logging
import platform
import subprocess
from pathlib import Path
from typing import Any

import mlflow
import torch
from kedro.framework.hooks import hook_impl

from multitask_cnn.config import ConfigError, validate_parameters
from multitask_cnn.training.device import resolve_device

logger = logging.getLogger(__name__)


class ValidateParametersHook:
    """Check the whole parameter tree once, before any node (or MLflow run) starts.

    A bad task kind, an unknown key or a value of the wrong type stops the run here
    with a message naming the key and its file, instead of minutes later.
    """

    @hook_impl
    def after_context_created(self, context) -> None:
        params = validate_parameters(context.params)
        for key, device in (("training.device", params.training.device),
                            ("evaluation.device", params.evaluation.device)):  # fmt: skip
            try:
                resolve_device(device)
            except RuntimeError as error:
                raise ConfigError(f"Invalid parameters:\n  - parameter '{key}': {error}") from None
        logger.info("Parameters validated (env %r)", context.env)


def _git(project_path: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=project_path, capture_output=True,
                                text=True, timeout=10, check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip()


class ReproducibilityHook:
    """Tag the MLflow run with what a teammate needs to repeat it: the git commit
    (and whether the tree had uncommitted changes), the Kedro environment, the torch
    build and device; attach the pinned ``requirements.lock``.

    kedro-mlflow's hooks run first (plugins are registered after project hooks and
    pluggy calls the latest first), so its run is active here.
    """

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        if mlflow.active_run() is None:
            return
        project_path = Path(run_params.get("project_path") or ".")
        commit = _git(project_path, "rev-parse", "HEAD")
        status = _git(project_path, "status", "--porcelain", "--untracked-files=no")
        mlflow.set_tags({
            "git.commit": commit or "unknown",
            "git.dirty": "unknown" if status is None else str(bool(status)).lower(),
            "kedro.env": str(run_params.get("env") or "local"),
            "torch.version": torch.__version__,
            "cuda.available": str(torch.cuda.is_available()).lower(),
            "python.version": platform.python_version(),
        })  # fmt: skip
        lock = project_path / "requirements.lock"
        if lock.is_file():
            mlflow.log_artifact(str(lock), "environment")
