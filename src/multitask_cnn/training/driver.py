"""Train one model from start to best epoch: the shared driver of the multi-task
model and the single-task baselines, so that every model in a comparison gets the
same budget (epochs, optimizer, batch, early stopping, seeds)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.reduction import ForkingPickler
from typing import Any

import torch

from multitask_cnn.errors import UserError
from multitask_cnn.models import MultiTaskModel, count_parameters
from multitask_cnn.models.transfer import TransferError
from multitask_cnn.seeds import torch_seed
from multitask_cnn.tasks import TaskSpec, kinds_of

from .allocator import keep_freed_memory
from .compiling import CompileError, compile_model, compile_refusal
from .distributed import (
    Group,
    Launch,
    ShardedSource,
    check_devices,
    from_bytes,
    join_group,
    launch,
    leave_group,
    to_bytes,
)
from .loop import EpochCallback, Freeze, GracefulStop, TrainingStopped, fit
from .memory import PeakMemory
from .optimizers import build_optimizer
from .placement import place_split
from .precision import Precision, resolve_channels_last, resolve_precision
from .sources import (
    Batch,
    BatchSource,
    FusedSource,
    InMemorySource,
    Split,
    fuse,
    in_turn,
)
from .state import TrainState
from .strategies import get_weighting

__all__ = ["BatchSizeError", "Budget", "WarmStart", "train_model"]

logger = logging.getLogger(__name__)


class BatchSizeError(UserError, ValueError):
    """A batch larger than the rows it is drawn from."""


# how a model is trained, not what: not part of its reuse key
SPEED_ONLY = (
    "cudnn_benchmark",
    "data_on_device",
    "device_memory_share",
    "rendezvous",
    "compile",
)


@dataclass(frozen=True)
class Budget:
    """What every model of a comparison shares (``training.*`` parameters)."""

    epochs: int
    batch_size: int
    eval_batch_size: int
    optimizer: str
    lr: float
    weight_decay: float
    momentum: float
    patience: int
    min_delta: float
    seed: int
    # task fusion: a data source's own batch size (default: batch_size), and the steps
    # of an epoch when several sources train together (FusedSource: largest | smallest | N)
    source_batch_size: Mapping[str, int] = field(default_factory=dict)
    fusion_steps: str | int = "largest"
    # training.precision and training.channels_last, as set (resolved for the device
    # by train_model: precision.py)
    precision: str = "auto"
    channels_last: bool | str = "auto"
    # speed only, not part of a model's reuse key (SPEED_ONLY)
    cudnn_benchmark: bool = True
    data_on_device: bool | str = "auto"  # placement.py
    device_memory_share: float = 0.5
    # data-parallel workers (distributed.py): devices per machine x machines; the
    # global batch stays batch_size, shared between them
    compile: bool | str = False  # torch.compile: true (inductor) or a backend's name
    devices: int = 1
    nodes: int = 1
    rendezvous: str = ""  # host:port where the machines meet (nodes > 1)

    def batch_size_of(self, source: str) -> int:
        return self.source_batch_size.get(source, self.batch_size)

    def single_source(self, source: str = "") -> dict[str, Any]:
        """The budget as a model of one source sees it (what its reuse key holds): that
        source's batch size; the fusion settings do not concern it."""
        settings = {k: v for k, v in vars(self).items()
                    if k not in ("source_batch_size", "fusion_steps", *SPEED_ONLY)}  # fmt: skip
        if (
            self.devices * self.nodes == 1
        ):  # one process: keys as before workers existed
            settings = {
                k: v for k, v in settings.items() if k not in ("devices", "nodes")
            }
        return settings | {"batch_size": self.batch_size_of(source)}


@dataclass(frozen=True)
class WarmStart:
    """Start from transferred weights instead of from scratch.

    ``state`` is the whole model's state_dict (weight transfer's output); the
    parameters named in ``transferred`` stay frozen for the first ``freeze_epochs``
    epochs and then train at ``lr_scale`` times the learning rate (a parameter group
    of their own).
    """

    state: Mapping[str, torch.Tensor]
    transferred: frozenset[str]
    freeze_epochs: int = 0
    lr_scale: float = 1.0


def train_model(
    build: Callable[[], MultiTaskModel],
    specs: Mapping[str, TaskSpec],
    train: Split | Mapping[str, Split],
    val: Split | Mapping[str, Split],
    device: torch.device,
    budget: Budget,
    *,
    weighting: str = "equal",
    weighting_args: Mapping[str, Any] | None = None,
    prefix: str = "",
    on_epoch_end: EpochCallback | None = None,
    probe_rows: int = 0,
    warm_start: WarmStart | None = None,
    resume: Mapping[str, Any] | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    stop: GracefulStop | None = None,
) -> TrainState:
    """Build the model (``build``, under the seed's ``model_init`` stream) on ``device``,
    then its strategy and optimizer, and train it; the returned state's model holds the
    best epoch's weights. ``probe_rows`` > 0 records, each epoch, the cosines between
    the tasks' gradients on the first ``probe_rows`` validation rows. ``warm_start``
    loads transferred weights into the built model (:class:`WarmStart`). ``resume`` (a
    :meth:`TrainState.state_dict` that ``on_checkpoint`` received after an epoch)
    continues that training where it stopped: weights, optimizer, strategy, early
    stopping, RNGs and data order, so that it ends as an uninterrupted one would.
    ``stop``: see :func:`fit`.

    ``train`` and ``val`` are one :class:`Split`, or one per data source (task fusion:
    each training step concatenates one batch of every source, :class:`FusedSource`;
    validation goes through each source in turn).

    With ``budget.devices`` (x ``budget.nodes``) > 1, workers train it data-parallel
    (distributed.py; ``build`` must then be picklable, e.g. a ``functools.partial``);
    this process receives their epochs and checkpoints and returns the same state."""
    train, val = _by_source(train), _by_source(val)
    how = Launch(budget.devices, budget.nodes, budget.rendezvous)
    check_devices(device, how.devices)
    for name, split in train.items():
        _check_batch(name, split, budget, how.world)
    job = _Job(build, dict(specs), train, val, budget, weighting,
               dict(weighting_args or {}), prefix, probe_rows, warm_start, resume)  # fmt: skip
    if how.world == 1:
        return job.run(device, on_epoch_end=on_epoch_end, on_checkpoint=on_checkpoint,
                       stop=stop)  # fmt: skip
    return _data_parallel(job, how, device, on_epoch_end, on_checkpoint, stop)


@dataclass(frozen=True)
class _Job:
    """One training, as the node's process and every data-parallel worker run it."""

    build: Callable[[], MultiTaskModel]
    specs: dict[str, TaskSpec]
    train: dict[str, Split]
    val: dict[str, Split]
    budget: Budget
    weighting: str
    weighting_args: dict[str, Any]
    prefix: str
    probe_rows: int
    warm_start: WarmStart | None
    resume: Mapping[str, Any] | None

    def prepare(
        self, device: torch.device, group: Group | None = None
    ) -> tuple[TrainState, Freeze | None, Precision, bool]:
        """The model (built, warm-started, on ``device``), its strategy, optimizer and
        gradient scaler, as a train state; the freeze, the precision, channels-last."""
        budget, warm_start = self.budget, self.warm_start
        torch.manual_seed(torch_seed(budget.seed, "model_init"))
        network = self.build()
        named = dict(network.named_parameters())
        if warm_start is not None:
            _load_warm_start(network, warm_start, set(named))
        network = network.to(
            device
        )  # moves the parameters in place: `named` stays valid
        if group is not None:
            group.broadcast_parameters(network)
        strategy = get_weighting(self.weighting, self.specs, **self.weighting_args).to(
            device
        )
        precision = resolve_precision(
            budget.precision, device, self.weighting, strategy.level
        )
        channels_last = resolve_channels_last(budget.channels_last, device)
        if channels_last:  # (in place too: `named` stays valid)
            network = network.to(memory_format=torch.channels_last)
        if budget.compile:
            why = compile_refusal(self.weighting, strategy.level, self.probe_rows)
            if why:
                raise CompileError(why)
            backend = "inductor" if budget.compile is True else budget.compile
            compile_model(network, backend)
        moved = warm_start.transferred if warm_start is not None else frozenset()
        if moved and warm_start.freeze_epochs and moved >= set(named):
            raise TransferError(
                f"transfer.freeze_epochs={warm_start.freeze_epochs} would freeze every parameter: "
                "the transfer filled the heads too; leave them out (transfer.exclude: "
                "['backbone.fc.*', 'heads.*']) or do not freeze"
            )
        groups = [{"params": [p for n, p in named.items() if n not in moved]}]
        if moved:
            groups.append({"params": [p for n, p in named.items() if n in moved],
                           "lr": budget.lr * warm_start.lr_scale})  # fmt: skip
        if strategy.parameters():  # a strategy's own parameters take no weight decay
            groups.append({"params": strategy.parameters(), "weight_decay": 0.0})
        optimizer = build_optimizer(budget.optimizer, groups, lr=budget.lr,
                                    weight_decay=budget.weight_decay, momentum=budget.momentum)  # fmt: skip
        freeze = (Freeze(groups[1]["params"], warm_start.freeze_epochs)
                  if moved and warm_start.freeze_epochs else None)  # fmt: skip
        state = TrainState(network, optimizer, strategy, scaler=precision.scaler())
        return state, freeze, precision, channels_last

    def run(
        self,
        device: torch.device,
        *,
        on_epoch_end: EpochCallback | None = None,
        on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
        stop: GracefulStop | None = None,
        group: Group | None = None,
    ) -> TrainState:
        budget = self.budget
        keep_freed_memory()  # no page faults for each step's activations (allocator.py)
        state, freeze, precision, channels_last = self.prepare(device, group)
        if (
            device.type == "cuda"
        ):  # cuDNN times its algorithms, unless results must repeat
            torch.backends.cudnn.benchmark = (
                budget.cudnn_benchmark
                and not torch.are_deterministic_algorithms_enabled()
            )
        train = {name: place_split(split, device, budget.data_on_device,
                                   budget.device_memory_share)
                 for name, split in self.train.items()}  # fmt: skip
        # dropout, random weights; a worker other than the first draws its own
        dropout = (
            "dropout" if group is None or group.rank == 0 else f"dropout:{group.rank}"
        )
        torch.manual_seed(torch_seed(budget.seed, dropout))
        prefix = self.prefix
        logger.info(
            "Training %s%d parameters (%d shared stages) on %s (%s%s%s): %d train / %d val samples",
            f"{prefix.rstrip('.')}: " if prefix else "", count_parameters(state.model),
            state.model.shared_stages, device, precision.name,
            ", channels-last" if channels_last else "",
            "" if group is None else f", worker {group.rank + 1} of {group.world}",
            sum(map(len, train.values())), sum(map(len, self.val.values())),
        )  # fmt: skip
        source = _train_source(train, budget)
        if self.resume is not None:
            state.load_state_dict(self.resume)
            state.restore_rng(source)
            logger.info("%sResuming after epoch %d of %d (best so far: epoch %d)",
                        prefix, state.epoch, budget.epochs, state.best_epoch)  # fmt: skip
        val = in_turn(self.val, budget.eval_batch_size)
        if group is not None:
            source, val = ShardedSource(source, group), ShardedSource(val, group)
        with PeakMemory(device) as peak:
            state = fit(
                state, source, val, kinds_of(self.specs), device,
                epochs=budget.epochs, patience=budget.patience, min_delta=budget.min_delta,
                prefix=prefix, on_epoch_end=on_epoch_end,
                probe=_probe(self.val, self.probe_rows) if self.probe_rows else None,
                freeze=freeze, on_checkpoint=on_checkpoint, stop=stop,
                precision=precision, channels_last=channels_last, group=group,
            )  # fmt: skip
        # a resumed training measured only its last epochs: not its peak
        state.peak_memory_mb, state.peak_memory_method = (
            (None, None) if self.resume is not None else (peak.megabytes, peak.method)
        )
        return state


def _data_parallel(
    job: _Job,
    how: Launch,
    device: torch.device,
    on_epoch_end: EpochCallback | None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None,
    stop: GracefulStop | None,
) -> TrainState:
    """Train ``job`` on ``how.world`` workers; here: log and save what rank 0 sends,
    then rebuild the trained state on ``device`` from what it returns."""
    try:  # what spawning the workers does with it (serialising only, never loading)
        ForkingPickler.dumps(job.build)
    except Exception as error:
        raise TypeError(
            "training on several devices spawns workers, which need a picklable build "
            f"function (a module-level function or a functools.partial): {error}"
        ) from error
    errors: list[BaseException] = []

    def on_message(message: tuple[Any, ...]) -> None:
        kind, *rest = message
        if kind == "epoch" and on_epoch_end is not None:
            on_epoch_end(*rest)
        elif kind == "checkpoint" and on_checkpoint is not None:
            on_checkpoint(from_bytes(rest[0]))
        elif kind == "error":
            errors.append(rest[0])

    logger.info("%sTraining on %d workers (%d device(s) x %d node(s), %s)", job.prefix,
                how.world, how.devices, how.nodes, "NCCL" if device.type == "cuda" else "gloo")  # fmt: skip
    try:
        result = launch(how, _worker, (job, device.type), on_message=on_message,
                        stop_requested=lambda: stop is not None and stop.requested is not None)  # fmt: skip
    except Exception as failure:
        if not errors:
            raise
        error = errors[0]  # the worker's own error, not the launcher's summary of it
        if isinstance(error, TrainingStopped) and stop is not None and stop.requested:
            error = TrainingStopped(
                str(error).replace("a stop request", stop.requested)
            )
        raise error from failure
    trained = from_bytes(result)
    state = job.prepare(device)[0]
    state.load_state_dict(trained["state"])
    state.hold_best()
    state.peak_memory_mb, state.peak_memory_method = trained["peak_memory"]
    return state


def _worker(job: _Job, device_type: str, messages: Any, stop: Any) -> bytes | None:
    """One data-parallel worker (a spawned process): train ``job`` in the group; the
    first worker of each machine reports its epochs and checkpoints and returns the
    state (the same on every worker)."""
    group, local_rank = join_group(device_type, stop)
    try:
        device = (
            torch.device(device_type, local_rank)
            if device_type == "cuda"
            else torch.device(device_type)
        )
        if device_type == "cpu":  # the machine's cores, shared between its workers
            torch.set_num_threads(max(1, torch.get_num_threads() // job.budget.devices))
        reporting = local_rank == 0
        if reporting:  # (a Kedro import may have set logging up already)
            logging.basicConfig(
                level=logging.INFO, format="[worker %(process)d] %(message)s"
            )
        else:  # the first worker speaks for all
            logging.disable(logging.INFO)
        state = job.run(
            device,
            on_epoch_end=(lambda epoch, record: messages.put(("epoch", epoch, record)))
            if reporting else None,
            on_checkpoint=(lambda saved: messages.put(("checkpoint", to_bytes(saved))))
            if reporting else None,
            group=group,
        )  # fmt: skip
        if not reporting:
            return None
        return to_bytes({"state": state.state_dict(),
                         "peak_memory": [state.peak_memory_mb, state.peak_memory_method]})  # fmt: skip
    except Exception as error:
        messages.put(("error", error))
        raise
    finally:
        leave_group()


def _check_batch(name: str, split: Split, budget: Budget, world: int) -> None:
    """A batch larger than its rows, or smaller than the workers sharing it."""
    size = budget.batch_size_of(name)
    of = f" of source {name!r}" if name else ""
    if size > len(split):
        raise BatchSizeError(
            f"batch size {size} is larger than the {len(split)} train rows{of}: lower "
            "training.batch_size (or training.fusion.batch_size, or "
            "pretraining.training.batch_size for the pretraining), or give it more data"
        )
    if size < world:
        raise BatchSizeError(
            f"batch size {size}{of} is smaller than the {world} workers that share each "
            "batch (training.devices x training.nodes): raise training.batch_size"
        )


def _load_warm_start(
    network: MultiTaskModel, warm_start: WarmStart, parameter_names: set[str]
) -> None:
    """Load the transferred state, naming what does not fit the model being trained."""
    own = network.state_dict()
    missing, unexpected = (
        sorted(set(own) - set(warm_start.state)),
        sorted(set(warm_start.state) - set(own)),
    )
    wrong = [f"{k}: model {tuple(own[k].shape)}, state {tuple(warm_start.state[k].shape)}"
             for k in own if k in warm_start.state and own[k].shape != warm_start.state[k].shape]  # fmt: skip
    unknown = sorted(warm_start.transferred - parameter_names)
    if missing or unexpected or wrong or unknown:
        raise TransferError(
            "the transferred state does not fit the model being trained (it was built "
            "for another model or task spec: rerun weight_transfer): "
            + "; ".join(f"{what} {names[:4]}" for what, names in (
                ("missing", missing), ("unexpected", unexpected), ("shape", wrong),
                ("transferred names not in the model", unknown)) if names)
        )  # fmt: skip
    network.load_state_dict(warm_start.state)


def _by_source(data: Split | Mapping[str, Split]) -> dict[str, Split]:
    return {"": data} if isinstance(data, Split) else dict(data)


def _train_source(train: Mapping[str, Split], budget: Budget) -> BatchSource:
    """One source: shuffled mini-batches; several: one fused batch per step, each
    source shuffled by its own stream."""
    if len(train) == 1:
        ((name, split),) = train.items()
        seed = torch_seed(budget.seed, "data_order")
        return InMemorySource(split, budget.batch_size_of(name), seed=seed)
    return FusedSource(
        {name: InMemorySource(split, budget.batch_size_of(name),
                              seed=torch_seed(budget.seed, f"data_order:{name}"))
         for name, split in train.items()},
        steps=budget.fusion_steps,
    )  # fmt: skip


def _probe(val: Mapping[str, Split], rows: int) -> Batch:
    """A fixed batch: the first ``rows`` validation rows of each source."""
    return fuse([split.batch(slice(0, rows)) for split in val.values()])
