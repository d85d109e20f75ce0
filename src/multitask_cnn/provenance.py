"""Where a run comes from: the project root, the git commit and the MLflow run.

Used by the hooks (run tags) and by :class:`~multitask_cnn.io.ProvenanceDataset`
(what the training node writes into the checkpoint).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import shlex
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from kedro.utils import find_kedro_project

from multitask_cnn.config import flatten
from multitask_cnn.errors import UserError

__all__ = [
    "ProjectNotFoundError",
    "fingerprint",
    "git_state",
    "project_root",
    "run_provenance",
]

_PACKAGE_DIR = Path(__file__).resolve().parent


class ProjectNotFoundError(UserError, RuntimeError):
    """Neither the current directory nor the package lies inside the Kedro project."""


def project_root() -> Path:
    """The Kedro project containing the current directory (``notebooks/``, a cron
    job's ``cd``), else the checkout this package is installed from in editable mode.

    A non-editable install lives in ``site-packages``, outside any project: then only
    the current directory can tell, and outside the project this is an error rather
    than a guess.
    """
    for start in (Path.cwd(), _PACKAGE_DIR):
        found = find_kedro_project(start)
        if found:
            return Path(found)
    raise ProjectNotFoundError(
        f"no Kedro project (a pyproject.toml with [tool.kedro]) contains {Path.cwd()}; "
        "run from inside the project folder, or set MLFLOW_TRACKING_URI"
    )


def _git(root: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True,
                                text=True, timeout=10, check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip()


def git_state(root: Path) -> dict[str, str]:
    """``git.commit`` and ``git.dirty`` (``true`` when tracked files changed or untracked,
    not ignored, files exist), ``unknown`` outside a git checkout."""
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=normal")
    return {
        "git.commit": commit or "unknown",
        "git.dirty": "unknown" if status is None else str(bool(status)).lower(),
    }


def run_provenance(root: Path) -> dict[str, Any]:
    """What the checkpoint records about the run that made it."""
    import mlflow  # only here: the library layer never imports MLflow

    run = mlflow.active_run()
    return git_state(root) | {
        "mlflow.run_id": run.info.run_id if run else None,
        "torch.version": str(torch.__version__),  # a str subclass torch.load refuses
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def fingerprint(data: Mapping[str, Any]) -> str:
    """A short hash of a model input (images and labels, in a fixed order)."""
    digest = hashlib.blake2b(digest_size=16)

    def feed(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(
                # (flat first: a 0-dim tensor, e.g. batch norm's num_batches_tracked,
                # has no byte view)
                tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
                if tensor.numel()
                else b""
            )
        elif isinstance(value, np.ndarray):  # e.g. a memory-mapped image cache
            # hashed like the tensor of the same values, chunk by chunk
            digest.update(f"torch.{value.dtype}{tuple(value.shape)}".encode())
            for start in range(0, len(value) if value.ndim else 1, 4096):
                part = value[start : start + 4096] if value.ndim else value
                digest.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(value, Mapping):
            for key in sorted(value):
                digest.update(str(key).encode())
                feed(value[key])
        else:
            digest.update(repr(value).encode())

    feed(data)
    return digest.hexdigest()


# runtime parameters that only say where to log (an Airflow task's shared run): not part
# of what a teammate reruns
_LOGGING_PARAMS = ("mlflow_run_id", "mlflow_run_name")


def _cli_value(value: Any) -> str:
    """A ``--params`` value as the Kedro CLI reads it back (OmegaConf's dot list)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def kedro_command(run_params: Mapping[str, Any]) -> str:
    """The ``kedro run`` command line that repeats a run, from Kedro's ``run_params``:
    the environment, the pipelines and node selection, and every ``--params`` value
    (kedro-mlflow's own ``kedro_command`` tag leaves the environment and the
    parameters out). Quoted for a POSIX shell."""
    args = ["kedro", "run", f"--env={run_params.get('env') or 'local'}"]
    lists = {
        "pipeline_names": "--pipelines", "namespaces": "--namespaces",
        "node_names": "--nodes", "from_nodes": "--from-nodes", "to_nodes": "--to-nodes",
        "from_inputs": "--from-inputs", "to_outputs": "--to-outputs", "tags": "--tags",
    }  # fmt: skip
    for key, option in lists.items():
        values = [v for v in run_params.get(key) or [] if v != "__default__"]
        if values:
            args.append(f"{option}={','.join(values)}")
    versions = run_params.get("load_versions") or {}
    if versions:
        pairs = ",".join(f"{name}:{version}" for name, version in versions.items())
        args.append(f"--load-versions={pairs}")
    # a class name, "None" (the default) or, from the CLI, an instance's repr
    runner = re.sub(r"^<(?:\w+\.)*(\w+) object at .*>$", r"\1",
                    str(run_params.get("runner")))  # fmt: skip
    if runner not in ("None", "SequentialRunner"):
        args.append(f"--runner={runner}")
    if run_params.get("only_missing_outputs"):
        args.append("--only-missing-outputs")
    params = {
        key: value
        for key, value in flatten(dict(run_params.get("runtime_params") or {})).items()
        if key not in _LOGGING_PARAMS
    }
    if params:
        args.append(
            "--params=" + ",".join(f"{k}={_cli_value(v)}" for k, v in params.items())
        )
    return shlex.join(args)
