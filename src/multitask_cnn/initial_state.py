"""The transferred start of a training run: weight_transfer's ``initial_state``, checked
against the run's spec, as the :class:`~multitask_cnn.training.WarmStart` the training
driver takes (for the multi-task model and for each single-task baseline)."""

from __future__ import annotations

from typing import Any

from multitask_cnn.config import ModelConfig, TransferConfig, effective_tasks
from multitask_cnn.models.transfer import TransferError
from multitask_cnn.tasks import TaskSpec
from multitask_cnn.training import WarmStart

__all__ = ["transfer_record", "warm_start"]


def warm_start(
    initial_state: dict[str, Any] | None,
    specs: dict[str, TaskSpec],
    model_config: ModelConfig,
    seed: int,
    transfer: TransferConfig,
    baseline: str | None = None,
) -> WarmStart | None:
    """The start of the multi-task model (or of ``baseline``'s single-task model) when
    ``transfer.enabled``; None when it is off. Refuses a missing initial state, or one
    built with other tasks, model, seed or mapping than this run's."""
    if not transfer.enabled:
        return None
    if initial_state is None:
        raise TransferError(
            "transfer.enabled is true but there is no initial state (the initial_state "
            "catalog entry, <data_root>/06_models/initial_state.pt): run the "
            "weight_transfer pipeline first (kedro run --pipelines weight_transfer), or "
            "set transfer.enabled: false"
        )
    if "failed" in initial_state:
        raise TransferError(
            "the last weight_transfer (run with transfer.enabled: false) could not "
            f"transfer: {initial_state['failed']['error']}; fix that and rerun weight_transfer"
        )
    now = {"tasks": effective_tasks(specs), "model": model_config.effective(), "seed": seed,
           "transfer": transfer.for_backbone(model_config).mapping_settings()}  # fmt: skip
    differs = sorted(k for k in now if initial_state["config"].get(k) != now[k])
    if differs:
        raise TransferError(
            f"the initial state was built with other {', '.join(differs)} settings than "
            "this run's: rebuild it first (kedro run --pipelines "
            "pretraining,weight_transfer,baselines,multitask_training)"
        )
    start = initial_state if baseline is None else initial_state["baselines"][baseline]
    return WarmStart(
        state=start["state_dict"],
        transferred=frozenset(start["transferred"]),
        freeze_epochs=transfer.freeze_epochs,
        lr_scale=transfer.lr_scale,
    )


def transfer_record(
    transfer: TransferConfig,
    initial_state: dict[str, Any] | None,
    start: WarmStart | None,
) -> dict[str, Any]:
    """What a checkpoint records of its start: the ``transfer`` settings and where the
    transferred weights came from (None: from scratch)."""
    source = initial_state["source"] if start is not None else None
    return transfer.model_dump(mode="json") | {"source": source}
