"""Project hooks: validate parameters and hand nodes the effective values; tag each
MLflow run with what a teammate needs to repeat it; keep a run complete when
``--only-missing-outputs`` reuses earlier outputs; record which checkpoint a run used.

kedro-mlflow's hooks run before these (plugins are registered after project hooks and
pluggy calls the latest first), so its run is active in ``before_pipeline_run``.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import mlflow
import torch
import yaml
from kedro.framework.hooks import hook_impl
from kedro.io import MemoryDataset
from kedro.pipeline import Pipeline
from mlflow.tracking import MlflowClient

from multitask_cnn.config import (
    ConfigError,
    Origin,
    flatten,
    parameter_origin,
    validate_parameters,
)
from multitask_cnn.errors import DataFileError, install_excepthook
from multitask_cnn.io.run_lock import RunLock
from multitask_cnn.pipeline_registry import use_session_config
from multitask_cnn.provenance import git_state, kedro_command
from multitask_cnn.tracking import check_tracking_server
from multitask_cnn.training import (
    DevicesError,
    TrainingStopped,
    check_devices,
    refuse_torchrun,
    resolve_device,
)
from multitask_cnn.training.allocator import keep_freed_memory
from multitask_cnn.training.determinism import set_deterministic

logger = logging.getLogger(__name__)

PARAMS_PREFIX = "params:"


def _lookup(tree: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


class UserErrorsHook:
    """A mistake in the input (a :class:`~multitask_cnn.errors.UserError`: a bad
    parameter, a missing dataset, a checkpoint for other tasks ...) ends the run with
    one message instead of a traceback; ``MULTITASK_CNN_DEBUG=1`` shows the traceback.
    Installed first thing, after Kedro's logging set Rich's traceback hook up."""

    @hook_impl(wrapper=True, tryfirst=True)  # around everything, the other hooks too
    def after_context_created(self):
        install_excepthook()
        return (yield)


class TrackingStoreHook:
    """A SQLite MLflow store is set up (tables, experiment) by kedro-mlflow while the
    context is created; runs started at once would all run MLflow's table migrations
    on a new file, or create the same experiment, and all but one fail. This wraps
    that step in a lock next to the store (``<store>.lock``), so they take turns for
    that second. A tracking server keeps its own store; one that does not answer stops
    the run at once (MLflow itself retries for minutes)."""

    @hook_impl(wrapper=True)
    def after_context_created(self, context):
        # what kedro-mlflow will use ($MLFLOW_TRACKING_URI through settings.py's resolver)
        uri = (
            context.config_loader["mlflow"].get("server", {}).get("mlflow_tracking_uri")
        )
        if str(uri).startswith(("http://", "https://")):
            check_tracking_server(str(uri))  # seconds, not MLflow's minutes of retries
        if not uri or not str(uri).startswith("sqlite:///"):
            return (yield)
        store = Path(str(uri).removeprefix("sqlite:///"))
        lock = RunLock(store.with_name(store.name + ".lock"),
                       doing=f"is setting the MLflow store {store} up")  # fmt: skip
        lock.acquire()
        try:
            return (yield)
        finally:
            lock.release()


def _checkpoint_owner(dataset_name: str) -> str | None:
    """Whose checkpoint a dataset holds, when a run that ran its node wrote it:
    ``multi-task`` (``multitask_checkpoint``), a task (``stl.<task>.baseline_checkpoint``),
    or None."""
    if dataset_name == "multitask_checkpoint":
        return "multi-task"
    parts = dataset_name.split(".")
    if len(parts) == 3 and parts[0] == "stl" and parts[2] == "baseline_checkpoint":
        return parts[1]
    return None


class RunLockHook:
    """Runs of one Kedro env share its data folder: a run holds the folder's lock
    (``io/run_lock.py``; ``data/.smoke.run.lock`` for ``data/smoke``) from before its
    first node (and before its MLflow run starts) to its end, and a second run started
    meanwhile waits, instead of training into and evaluating the first one's files.
    Runs of different envs do not wait for each other."""

    def __init__(self) -> None:
        self._lock: RunLock | None = None
        self._trained: set[str] = set()  # the models this run trained

    @hook_impl
    def after_context_created(self, context) -> None:
        data_root = Path(context.project_path) / context.config_loader["globals"].get(
            "data_root", "data"
        )
        # beside the folder, not in it: a run that fails early leaves no data folder
        path = data_root.with_name(f".{data_root.name}.run.lock")
        if self._lock is not None and self._lock.path != path:
            self._lock.release()  # a context of another project or env in this process
        if self._lock is None or self._lock.path != path:
            self._lock = RunLock(path)

    @hook_impl(wrapper=True, tryfirst=True)
    def before_pipeline_run(self):
        """Before the other hooks (kedro-mlflow's run starts after the wait); if one of
        them fails, Kedro calls no ``on_pipeline_error``: released here then."""
        self._trained = set()
        if self._lock is not None:
            self._lock.acquire()
        try:
            return (yield)
        except BaseException:
            self._release()
            raise

    @hook_impl
    def after_node_run(self, node) -> None:
        self._trained |= {n for n in node.outputs if _checkpoint_owner(n) is not None}

    @hook_impl
    def after_dataset_loaded(self, dataset_name: str, data: Any) -> None:
        """The checkpoints this run trained must be the ones it evaluates: a file
        written by another run meanwhile (outside the lock) is refused."""
        run = mlflow.active_run()
        if (
            dataset_name not in self._trained
            or run is None
            or not isinstance(data, dict)
        ):
            return
        if data.get("reused") or data.get("resumed"):  # a baseline of an earlier run
            return
        written_by = data.get("provenance", {}).get("mlflow.run_id")
        if written_by != run.info.run_id:
            raise RuntimeError(
                f"{dataset_name} ({_checkpoint_owner(dataset_name)}) was written by "
                f"MLflow run {written_by}, not by this run ({run.info.run_id}) that "
                "trained it: another run wrote the same file meanwhile; run again"
            )

    @hook_impl(wrapper=True)
    def after_pipeline_run(self):
        try:
            return (yield)
        finally:  # even when another hook fails here
            self._release()

    @hook_impl(wrapper=True)
    def on_pipeline_error(self):
        try:
            return (yield)
        finally:
            self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()


def _origins(context) -> Origin:
    """Where each parameter of this run came from: ``--params``, then the env's
    parameter files, then base's (the order the config loader merges them in), found
    with the loader's own patterns."""
    loader = context.config_loader
    root = Path(loader.conf_source)
    patterns = loader.config_patterns["parameters"]
    files = []
    envs = (context.env or loader.default_run_env, loader.base_env)
    for env in [e for e in dict.fromkeys(envs) if e]:
        found = {Path(name) for pattern in patterns  # as Kedro globs them
                 for name in glob.glob(str(root / env / pattern), recursive=True)
                 if Path(name).is_file() and Path(name).suffix in (".yml", ".yaml", ".json")}  # fmt: skip
        for path in sorted(found):
            tree = yaml.safe_load(path.read_text())  # JSON is YAML too
            if isinstance(tree, dict):
                files.append((str(path.relative_to(root.parent)), tree))
    return parameter_origin(loader.runtime_params or {}, files)


class ValidateParametersHook:
    """Check the whole parameter tree once, before any node (or MLflow run) starts,
    then give every ``params:`` input its effective value (defaults filled in), so
    that the nodes run with, and kedro-mlflow logs, the same values.

    A bad task kind, an unknown key or a value of the wrong type stops the run here
    with a message naming the key and its file, instead of minutes later.
    """

    def __init__(self) -> None:
        self._effective: dict[str, Any] = {}

    @hook_impl
    def after_context_created(self, context) -> None:
        refuse_torchrun()  # one kedro run: one session; the workers are launched inside
        # before context.params, which registers the pipelines: the baselines' branches
        # (one per task) are this run's tasks
        use_session_config(context.config_loader)
        try:
            params = validate_parameters(context.params)
        except ConfigError as error:
            try:  # again, naming where each bad value came from
                origin = _origins(context)
            except Exception:  # noqa: BLE001 - never hide the error itself
                raise error from None
            params = validate_parameters(context.params, origin)
        self._effective = params.effective()
        for key, device in (("training.device", params.training.device),
                            ("evaluation.device", params.evaluation.device)):  # fmt: skip
            try:
                resolve_device(device)
            except RuntimeError as error:
                raise ConfigError(
                    f"Invalid parameters:\n  - parameter '{key}': {error}"
                ) from None
        try:
            check_devices(
                resolve_device(params.training.device), params.training.devices
            )
        except DevicesError as error:
            raise ConfigError(
                f"Invalid parameters:\n  - parameter 'training.devices': {error}"
            ) from None
        logger.info("Parameters validated (env %r)", context.env)

    @hook_impl
    def after_catalog_created(self, catalog) -> None:
        effective = self._effective  # validated once, in after_context_created
        for name in [n for n in catalog.keys() if n.startswith(PARAMS_PREFIX)]:  # noqa: SIM118
            found, value = _lookup(effective, name.removeprefix(PARAMS_PREFIX))
            if found:
                catalog[name] = MemoryDataset(value, copy_mode="deepcopy")
        if "parameters" in catalog:
            catalog["parameters"] = MemoryDataset(effective, copy_mode="deepcopy")


class DataBuildHook:
    """The model input and normalisation statistics one run reads come from one
    data_prep build (their ``build``). Each file is written atomically, but a data_prep
    stopped part-way (killed, a full disk) can leave new train next to old val files;
    reading such a mix stops the run with a message instead of training on it."""

    CHECKED = ("model_input_train", "model_input_val", "model_input_test",
               "normalisation_stats")  # fmt: skip

    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, Any]] = {}

    @hook_impl
    def before_pipeline_run(self) -> None:
        self._seen = {}

    @hook_impl
    def after_dataset_loaded(self, dataset_name: str, data: Any) -> None:
        if dataset_name not in self.CHECKED or not isinstance(data, dict):
            return
        for source, entry in data.items():
            build = entry.get("build") if isinstance(entry, dict) else None
            if source not in self._seen and build and mlflow.active_run() is not None:
                mlflow.set_tag(f"data.build.{source}", build)  # the data it read
            first, first_build = self._seen.setdefault(source, (dataset_name, build))
            if build != first_build:
                raise DataFileError(
                    f"{dataset_name} and {first} (source {source!r}) come from different "
                    "data_prep runs; a data_prep that stopped part-way (interrupted, a "
                    "full disk) leaves such a mix, and so do files an older version of "
                    "this project wrote. Rebuild them: kedro run --pipelines data_prep "
                    "(with this run's --env)"
                )


class StoppedRunHook:
    """A run stopped on purpose (SIGTERM, Ctrl-C: ``TrainingStopped``) ends KILLED in
    MLflow, not FAILED (kedro-mlflow's own ``on_pipeline_error``, which runs before this
    one, closes every run as FAILED; the run id is kept from the start)."""

    def __init__(self) -> None:
        self._run_id: str | None = None

    @hook_impl
    def before_pipeline_run(self) -> None:
        run = mlflow.active_run()
        self._run_id = run.info.run_id if run else None

    @hook_impl
    def on_pipeline_error(self, error: Exception) -> None:
        # a second Ctrl-C raises TrainingStopped too (GracefulStop); Kedro passes
        # only Exceptions here, never KeyboardInterrupt
        if self._run_id is not None and isinstance(error, TrainingStopped):
            MlflowClient().set_terminated(self._run_id, "KILLED")
            logger.warning("MLflow run %s ended KILLED: %s", self._run_id, error)


class DeterminismHook:
    """``training.deterministic`` for the whole run (every training, the evaluation),
    recorded on the MLflow run as the tag ``torch.deterministic``; set back afterwards."""

    @hook_impl
    def before_pipeline_run(self, catalog) -> None:
        enabled = bool(catalog.load("parameters")["training"]["deterministic"])
        set_deterministic(enabled)
        if mlflow.active_run() is not None:
            mlflow.set_tag(
                "torch.deterministic",
                str(torch.are_deterministic_algorithms_enabled()).lower(),
            )

    @hook_impl
    def after_pipeline_run(self) -> None:
        set_deterministic(False)

    @hook_impl
    def on_pipeline_error(self) -> None:
        set_deterministic(False)


class RunNameHook:
    """Name the MLflow run after what it ran: ``<pipelines> · <backbone> · <strategy>``
    (e.g. ``default · lenet · equal``; the backbone when the pipeline builds a model,
    the loss-balancing strategy when it trains the multi-task model), where
    kedro-mlflow would name it after the pipeline alone. A scheduled run
    (``scripts/scheduled_run.sh``) is named after the schedule and the time
    (``$MULTITASK_CNN_RUN_NAME``) and tagged ``schedule``; a name given with
    ``--params mlflow_run_name=...`` or an existing run (``mlflow_run_id``) is kept."""

    @hook_impl
    def before_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Pipeline, catalog
    ) -> None:
        if mlflow.active_run() is None:
            return
        scheduled = os.environ.get("MULTITASK_CNN_RUN_NAME")
        if scheduled:
            mlflow.set_tag("mlflow.runName", scheduled)
            mlflow.set_tag("schedule", os.environ.get("MULTITASK_CNN_SCHEDULE", ""))
            return
        runtime = run_params.get("runtime_params") or {}
        if runtime.get("mlflow_run_name") or runtime.get("mlflow_run_id"):
            return
        mlflow.set_tag("mlflow.runName", run_name(run_params, pipeline, catalog))


def run_name(run_params: dict[str, Any], pipeline: Pipeline, catalog) -> str:
    names = run_params.get("pipeline_names") or ["__default__"]
    parts = ["+".join("default" if n == "__default__" else n for n in names)]
    if f"{PARAMS_PREFIX}model" in pipeline.inputs():
        model = catalog.load(f"{PARAMS_PREFIX}model")
        architecture = model.get("architecture", "hard")  # soft sharing: named too
        parts.append(str(model["backbone"])
                     + ("" if architecture == "hard" else f" {architecture}"))  # fmt: skip
    if any(node.name == "train_multitask_model" for node in pipeline.nodes):
        parts.append(str(catalog.load(f"{PARAMS_PREFIX}training")["weighting"]))
    return " · ".join(parts)


EXPERIMENT_DESCRIPTION = """\
**multitask-cnn**: one convolutional network trained for several image tasks at once \
(shared conv/FC layers, a small head per task), measured against one network per task \
on parameters, MACs, time and per-task accuracy.

Each run is named `<pipelines> · <backbone> · <loss-balancing strategy>` (the \
backbone followed by its soft-sharing architecture, if any). Per-task \
metrics are `test.<task>.accuracy` and `test.<task>.f1_macro` (classification) and \
`test.<task>.mae` (regression); plots (confusion matrices, learning curves) are under \
Artifacts › `plots`; the trained model is the run's logged model `multitask_model` \
(a version of it in the model registry). The tags `kedro_command`, `git.commit` and \
`requirements.lock.sha256` say how to repeat a run."""


class ExperimentViewHook:
    """The project's MLflow experiment opens in the UI as a model-training experiment
    (``mlflow.experimentKind``; MLflow 3 otherwise offers its GenAI view) with a
    description (``mlflow.note.content``), unless someone wrote one already."""

    @hook_impl
    def before_pipeline_run(self) -> None:
        run = mlflow.active_run()
        if run is None:
            return
        client = MlflowClient()
        experiment_id = run.info.experiment_id
        tags = client.get_experiment(experiment_id).tags
        if tags.get("mlflow.experimentKind") != "custom_model_development":
            client.set_experiment_tag(
                experiment_id, "mlflow.experimentKind", "custom_model_development"
            )
        if not tags.get("mlflow.note.content"):
            client.set_experiment_tag(
                experiment_id, "mlflow.note.content", EXPERIMENT_DESCRIPTION
            )


class HostAllocatorHook:
    """Keep freed host memory with the process for the whole run (glibc ``mallopt``;
    ``training/allocator.py``): training, prediction and timing alike stop
    page-faulting each batch's buffers in again. ``train_model`` sets it too, for
    library users."""

    @hook_impl
    def before_pipeline_run(self) -> None:
        keep_freed_memory()


def _pipeline_params(pipeline: Pipeline, catalog) -> dict[str, Any]:
    """Every parameter the pipeline's nodes consume, flattened as kedro-mlflow does."""
    params: dict[str, Any] = {}
    for name in sorted(pipeline.inputs()):
        if name.startswith(PARAMS_PREFIX):
            params |= flatten({name.removeprefix(PARAMS_PREFIX): catalog.load(name)})
    return params


class ReproducibilityHook:
    """Tag the MLflow run with the git commit (and whether the tree had uncommitted or
    untracked files), the Kedro environment, the command line that repeats the run
    (``kedro_command``, with its ``--params``; ``kedro.params`` holds them as JSON),
    the torch build and device; attach the pinned ``requirements.lock`` and tag its
    hash; log every parameter the pipeline consumes, also those of nodes that
    ``--only-missing-outputs`` skips."""

    @hook_impl
    def before_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Pipeline, catalog
    ) -> None:
        if mlflow.active_run() is None:
            return
        project_path = Path(run_params.get("project_path") or ".")
        mlflow.set_tags(git_state(project_path) | {
            "kedro.env": str(run_params.get("env") or "local"),
            "torch.version": torch.__version__,
            "cuda.available": str(torch.cuda.is_available()).lower(),
            "python.version": platform.python_version(),
        })  # fmt: skip
        mlflow.log_params(_pipeline_params(pipeline, catalog))
        lock = project_path / "requirements.lock"
        if lock.is_file():
            mlflow.log_artifact(str(lock), "environment")
            digest = hashlib.sha256(lock.read_bytes()).hexdigest()
            mlflow.set_tag("requirements.lock.sha256", digest)
        # kedro-mlflow's kedro_command leaves --env and --params out
        mlflow.set_tag("kedro_command", kedro_command(run_params))
        runtime = run_params.get("runtime_params") or {}
        if runtime:
            mlflow.set_tag("kedro.params", json.dumps(runtime, sort_keys=True))


def _is_mlflow_artifact(dataset: Any) -> bool:
    return hasattr(dataset, "artifact_path") and hasattr(dataset, "_logging_activated")


class ReusedOutputsHook:
    """With ``kedro run --only-missing-outputs`` Kedro skips nodes whose outputs are
    on disk, and their MLflow artifacts would be missing from the new run. After the
    run, this logs the files of those reused outputs as the run's artifacts and tags
    the run with the nodes it reused (``kedro.reused_nodes``).

    kedro-mlflow ends its run in its own ``after_pipeline_run``, which runs before this
    one, so the run id is kept from the start and written to through the client.
    """

    def __init__(self) -> None:
        self._ran: set[str] = set()
        self._run_id: str | None = None

    @hook_impl
    def before_pipeline_run(self) -> None:
        self._ran = set()
        run = mlflow.active_run()
        self._run_id = run.info.run_id if run else None

    @hook_impl
    def after_node_run(self, node) -> None:
        self._ran.add(node.name)

    @hook_impl
    def after_pipeline_run(self, pipeline: Pipeline, catalog) -> None:
        reused = [node for node in pipeline.nodes if node.name not in self._ran]
        if not reused or self._run_id is None:
            return
        client = MlflowClient()
        client.set_tag(
            self._run_id, "kedro.reused_nodes", ",".join(sorted(n.name for n in reused))
        )
        for name in sorted(_outputs(reused)):
            dataset = catalog.get(name) if name in catalog else None
            if (
                dataset is not None
                and _is_mlflow_artifact(dataset)
                and dataset.exists()
            ):
                client.log_artifact(
                    self._run_id, str(dataset._filepath), dataset.artifact_path
                )
                logger.info("Logged reused output %r from %s", name, dataset._filepath)


def _outputs(nodes: Iterable) -> set[str]:
    return {name for node in nodes for name in node.outputs}


class CheckpointTagsHook:
    """Whenever a run loads a checkpoint, tag the run with where it came from: the
    MLflow run and git commit that trained it and the fingerprint of its data (for the
    baselines: ``stl.<task>.run_id``, ``.reused``, ``.baseline_key``); and
    when the checkpoint was trained with other parameters than this run's (a rerun
    with ``--only-missing-outputs`` after a change), say which in
    ``checkpoint.config_differs`` and in the log."""

    def __init__(self) -> None:
        self._effective: dict[str, Any] = {}

    @hook_impl
    def before_pipeline_run(self, catalog) -> None:
        # the effective parameters ValidateParametersHook put into the catalog
        self._effective = catalog.load("parameters")

    @hook_impl
    def after_dataset_loaded(self, dataset_name: str, data: Any) -> None:
        if mlflow.active_run() is None or not isinstance(data, dict):
            return
        if (
            dataset_name == "baseline_checkpoints"
        ):  # which baselines Δm compares against
            for task, checkpoint in data.items():
                config = checkpoint.get("config", {})
                differs = _baseline_differences(task, config, self._effective)
                if differs:  # reused by --only-missing-outputs after a change
                    mlflow.set_tag(f"stl.{task}.config_differs", ",".join(differs))
                    logger.warning("The %r baseline was trained with other parameters: %s",
                                   task, ", ".join(differs))  # fmt: skip
            mlflow.set_tags({
                f"stl.{task}.{key}": str(value)
                for task, checkpoint in data.items()
                for key, value in (("run_id", checkpoint["provenance"].get("mlflow.run_id")),
                                   ("reused", bool(checkpoint.get("reused"))),
                                   ("baseline_key", checkpoint.get("baseline_key")))
            })  # fmt: skip
            return
        if dataset_name != "multitask_checkpoint":
            return
        provenance = data.get("provenance", {})
        mlflow.set_tags({
            "checkpoint.run_id": str(provenance.get("mlflow.run_id")),
            "checkpoint.git_commit": str(provenance.get("git.commit")),
            "checkpoint.git_dirty": str(provenance.get("git.dirty")),
            "checkpoint.epoch": str(data.get("epoch")),
            "checkpoint.train_fingerprint": str(data.get("input_fingerprint", {}).get("train")),
        })  # fmt: skip
        differs = _config_differences(data.get("config", {}), self._effective)
        if differs:
            mlflow.set_tag("checkpoint.config_differs", ",".join(differs))
            logger.warning(
                "The checkpoint was trained with other parameters than this run's: %s "
                "(its own values are in the run %s)",
                ", ".join(differs), provenance.get("mlflow.run_id"),
            )  # fmt: skip


# what a baseline depends on (not the multi-task model's share depth or strategy)
_BASELINE_TRAINING = ("epochs", "batch_size", "optimizer", "lr", "weight_decay", "momentum",
                      "seed", "early_stopping")  # fmt: skip


def _baseline_differences(
    task: str, trained: dict[str, Any], effective: dict[str, Any]
) -> list[str]:
    """Keys a single-task baseline depends on whose value differs now."""

    def relevant(config: dict[str, Any]) -> dict[str, Any]:
        model = {  # a baseline is the backbone alone: how tasks share is not its input
            k: v
            for k, v in config.get("model", {}).items()
            if k not in ("shared_stages", "architecture", "architecture_args")
        }
        training = {
            k: v
            for k, v in config.get("training", {}).items()
            if k in _BASELINE_TRAINING
        }
        transfer = dict(config.get("transfer", {}))
        if transfer.get("enabled") is False:  # from scratch: nothing else counts
            transfer = {"enabled": False}
        return {"tasks": {task: config.get("tasks", {}).get(task)}, "model": model,
                "training": training, "transfer": transfer}  # fmt: skip

    return _config_differences(relevant(trained), relevant(effective))


def _config_differences(
    trained: dict[str, Any], effective: dict[str, Any]
) -> list[str]:
    """Flattened keys of ``trained`` (tasks, model, training, transfer) whose value
    differs now (the transfer's recorded ``source`` is not a parameter)."""
    groups = ("tasks", "model", "training", "transfer")
    then = {k: v for k, v in trained.items() if k in groups}
    if "transfer" in then:
        then["transfer"] = {k: v for k, v in then["transfer"].items() if k != "source"}
    then = flatten(then)
    now = flatten({k: effective.get(k, {}) for k in groups if k in trained})
    return sorted(
        key for key in then.keys() | now.keys() if then.get(key) != now.get(key)
    )
