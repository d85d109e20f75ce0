"""Data-parallel training on several devices (``training.devices``) and machines
(``training.nodes``), launched from inside the training node.

One ``kedro run`` stays one Kedro session and one MLflow run: :func:`launch` spawns
the workers from the node's process (on one machine, around a store on 127.0.0.1
that process holds; across machines, with torch elastic's c10d rendezvous, the
launcher behind ``torchrun``); each worker trains with a :class:`Group`; the first
worker of each machine sends every epoch's record and checkpoint back, and the node's
process logs and saves them, then rebuilds the trained state from what it returns.

What a step does on N workers: every rank draws the same shuffled global batch
(``training.batch_size`` rows) and keeps its share (:meth:`Group.shard`, rows
``rank, rank + N, ...``); the strategy's backward runs on that share; then one
all-reduce averages every gradient (and carries the task losses, for the non-finite
check, and the stop flag), so every rank takes the same optimizer step. Validation
sums are added over the ranks (:meth:`Group.sum`), so early stopping sees the same
``val.loss`` everywhere.

The gradients are averaged by an explicit all-reduce after the strategy's backward,
not by wrapping the model in ``DistributedDataParallel``: the gradient-level
strategies (TorchJD) write ``.grad`` themselves, past the autograd hooks DDP's reducer
relies on, and the loop calls the trunk and the heads separately. The arithmetic is
DDP's (the mean of the ranks' gradients); what is given up is the overlap of the
all-reduce with the backward pass.

A strategy that keeps state between steps (DWA, FAMO, GradNorm's first losses,
Nash-MTL) keeps it per rank, from that rank's share; rank 0's is the one saved.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import itertools
import logging
import os
import queue as queue_module
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from multitask_cnn.errors import UserError

from .sources import Batch, BatchSource

__all__ = [
    "DevicesError",
    "Group",
    "LaunchedUnderTorchrunError",
    "ShardedSource",
    "check_devices",
    "launch",
    "refuse_torchrun",
]

logger = logging.getLogger(__name__)

# set by torchrun / torch elastic in the processes it starts
TORCHRUN_VARIABLES = ("TORCHELASTIC_RUN_ID", "LOCAL_RANK", "GROUP_RANK")
_OURS = "MULTITASK_CNN_WORKER"  # set in the workers launch() starts
_STORE_PORT = "MULTITASK_CNN_STORE_PORT"  # the loopback store of one machine's workers


class LaunchedUnderTorchrunError(UserError, RuntimeError):
    """``kedro run`` itself was started by torchrun (one Kedro session per worker)."""


def refuse_torchrun(environ: Mapping[str, str] = os.environ) -> None:
    """Refuse to run a Kedro session in a process torchrun started: each worker would
    be a Kedro session and an MLflow run of its own."""
    if environ.get(_OURS):
        return
    found = [f"{k}={environ[k]}" for k in TORCHRUN_VARIABLES if k in environ]
    if found:
        raise LaunchedUnderTorchrunError(
            f"kedro run was started by torchrun ({', '.join(found)}): every worker "
            "would be a Kedro session and an MLflow run of its own. Run kedro once, "
            "without torchrun, and ask for the workers instead: kedro run --params "
            "training.devices=N (and training.nodes=M,training.rendezvous=HOST:PORT "
            "on each of M machines); the training node launches them itself"
        )


class DevicesError(UserError, ValueError):
    """More workers than the machine has devices for, or a device that cannot share."""


def check_devices(device: torch.device, devices: int) -> None:
    """Refuse ``training.devices`` that ``device`` cannot give, before any work."""
    if devices == 1:
        return
    if device.type == "mps":
        raise DevicesError(
            f"training.devices={devices}: Apple's MPS has one device and no "
            "collective backend; use training.devices=1"
        )
    if device.type == "cuda":
        found = torch.cuda.device_count()
        if device.index not in (None, 0):
            raise DevicesError(
                f"training.devices={devices} with training.device={device}: the workers "
                "take cuda:0 … cuda:N-1; choose the GPUs with CUDA_VISIBLE_DEVICES and "
                "set training.device=cuda"
            )
        if devices > found:
            raise DevicesError(
                f"training.devices={devices}, but this machine has {found} CUDA "
                "device(s): ask for at most that many"
            )


@dataclass
class Group:
    """This worker's place among ``world`` data-parallel workers.

    ``stop`` (rank 0 only): set by the node's process when it is asked to stop; the
    step's all-reduce carries it to every rank, so all stop after the same step."""

    rank: int
    world: int
    stop: Any = None  # a multiprocessing Event

    def shard(self, batch: Batch) -> Batch:
        """Rows ``rank, rank + world, ...`` of ``batch``; a fused batch's task blocks
        follow their rows."""
        images = batch.images[self.rank :: self.world]
        blocks, labels = None, {}
        if batch.blocks is None:
            labels = {t: y[self.rank :: self.world] for t, y in batch.labels.items()}
        else:
            blocks = {}
            for task, rows in batch.blocks.items():
                first, last, _ = rows.indices(len(batch.images))
                offset = (self.rank - first) % self.world  # first row of ours in it
                labels[task] = batch.labels[task][offset :: self.world]
                begin = _ours_before(first, self.rank, self.world)
                blocks[task] = slice(begin, begin + len(labels[task]))
        return Batch(images, labels, blocks)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` added over the ranks (every rank gets the total)."""
        dist.all_reduce(values)
        return values

    def average_gradients(
        self, params: Sequence[torch.nn.Parameter], values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Average every parameter's gradient over the ranks (a missing one counts as
        zero) in one all-reduce that also averages ``values`` and carries the stop
        request of the node's process; returns the averaged values and a flag, > 0
        when a stop was asked for (tensors on the device: the caller reads them when
        it syncs anyway)."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        stop = float(self.stop is not None and self.stop.is_set())
        flat = torch.cat(
            [g.flatten().float() for g in grads]
            + [values.detach().float().flatten(), values.new_full((1,), stop).float()]
        )
        dist.all_reduce(flat)
        flat /= self.world
        begin = 0
        for param, grad in zip(params, grads, strict=True):
            end = begin + grad.numel()
            param.grad = flat[begin:end].view_as(grad).to(grad.dtype)
            begin = end
        return flat[begin : begin + values.numel()].view_as(values), flat[-1]

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Rank 0's buffers (batch-norm running statistics) everywhere."""
        for tensor in module.buffers():
            dist.broadcast(tensor.data, src=0)

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers everywhere (as DDP does at its start)."""
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def _ours_before(index: int, rank: int, world: int) -> int:
    """How many of rows ``0 … index - 1`` are ``rank``'s (rows ``rank, rank + world, …``)."""
    return max(0, -(-(index - rank) // world))


class ShardedSource:
    """Each batch of ``source`` reduced to ``group``'s share (:meth:`Group.shard`);
    the data order is ``source``'s, the same on every rank."""

    def __init__(self, source: BatchSource, group: Group) -> None:
        self.source, self.group = source, group

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self) -> Iterator[Batch]:
        return (self.group.shard(batch) for batch in self.source)

    def state_dict(self) -> dict[str, Any]:
        return self.source.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.source.load_state_dict(state)


def to_bytes(value: Any) -> bytes:
    """``value`` (tensors, numbers, dicts) as ``torch.save`` bytes: what crosses from a
    worker to the node's process, so no tensor is shared through a worker's memory."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def from_bytes(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=True)


@dataclass(frozen=True)
class Launch:
    """How many workers, and where they meet."""

    devices: int
    nodes: int = 1
    rendezvous: str = ""  # host:port, for nodes > 1

    @property
    def world(self) -> int:
        return self.devices * self.nodes


def launch(
    how: Launch,
    worker: Callable[..., Any],
    args: tuple[Any, ...],
    *,
    on_message: Callable[[tuple[Any, ...]], None],
    stop_requested: Callable[[], bool],
) -> Any:
    """Run ``worker(*args, messages, stop)`` on ``how.devices`` spawned workers of this
    machine and return the first one's return value. Its messages reach
    ``on_message`` in this thread while they train; once ``stop_requested()``, it is
    told to stop (and tells the others). This process keeps its own graceful stop
    (SIGTERM, Ctrl-C): no launcher installs signal handlers here.

    On one machine the workers meet at a store on 127.0.0.1 that this process holds
    (nothing listens beyond loopback; torch elastic's rendezvous would listen on every
    interface); across machines, torch elastic's c10d rendezvous at
    ``how.rendezvous`` (run in a thread, so that it installs no signal handlers)."""
    context = torch.multiprocessing.get_context("spawn")
    messages, stop = context.Queue(), context.Event()
    full = (*args, messages, stop)
    results: dict[int, Any] = {}

    def handle(message: tuple[Any, ...]) -> None:
        if message[0] == "result":
            results[message[1]] = message[2]
        else:
            on_message(message)

    def until(finished: Callable[[], bool]) -> None:
        """Handle messages until ``finished()`` (which raises when a worker failed);
        then what is left, so that a failed worker's own error is read too."""
        try:
            while True:
                if stop_requested() and not stop.is_set():
                    stop.set()
                try:
                    handle(messages.get(timeout=0.2))
                    continue
                except queue_module.Empty:
                    pass
                if finished():
                    break
        finally:
            while True:
                try:
                    handle(messages.get(timeout=0.1))
                except queue_module.Empty:
                    break

    if how.nodes == 1:
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        store = dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False,
                              master_listen_fd=listener.detach())  # fmt: skip
        with _workers_environment(single_machine=True):
            processes = torch.multiprocessing.start_processes(
                _on_this_machine, args=(worker, full, how.devices, port),
                nprocs=how.devices, join=False, start_method="spawn",
            )  # fmt: skip
        try:
            until(lambda: processes.join(timeout=0))
        except BaseException:  # this side failed (or a worker did): none trains on
            for process in processes.processes:
                if process.is_alive():
                    process.terminate()
            raise
        finally:
            del store
        return results.get(0)
    return _with_torch_elastic(how, worker, full, until)


def _on_this_machine(
    index: int, worker: Callable[..., Any], args: tuple[Any, ...], world: int, port: int
) -> None:
    """A spawned worker on this machine: its place in the group, then ``worker``; the
    return value goes back through the messages (``args[-2]``)."""
    os.environ.update({"LOCAL_RANK": str(index), "RANK": str(index),
                       "WORLD_SIZE": str(world), _STORE_PORT: str(port)})  # fmt: skip
    result = worker(*args)
    args[-2].put(("result", index, result))


_LAUNCHES = itertools.count(1)  # several-machine launches made by this process


def _with_torch_elastic(
    how: Launch,
    worker: Callable[..., Any],
    args: tuple[Any, ...],
    until: Callable[[Callable[[], bool]], None],
) -> Any:
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=how.nodes, max_nodes=how.nodes, nproc_per_node=how.devices,
        # the same on every machine: they train the same models in the same order
        run_id=f"multitask-cnn-{next(_LAUNCHES)}", rdzv_backend="c10d",
        rdzv_endpoint=how.rendezvous,
        max_restarts=0, start_method="spawn", monitor_interval=0.2,
    )  # fmt: skip
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["results"] = elastic_launch(config, worker)(*args)
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=run, name="training-workers", daemon=True)
    with _workers_environment(single_machine=False), _launcher_quiet():
        thread.start()
        until(lambda: not thread.is_alive())
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    results = outcome["results"]
    if not isinstance(results, dict):
        return results
    # keyed by global rank: this machine's first worker is the one that returned
    return next((results[r] for r in sorted(results) if results[r] is not None), None)


class _NoSignalWarning(logging.Filter):
    """The launcher warns that, in a thread, it installs no signal handlers: that is
    the point here (the node's process keeps its graceful stop), and the workers die
    with the thread that started them (:func:`join_group`), so none is orphaned."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Failed to register signal handlers" not in record.getMessage()


@contextmanager
def _launcher_quiet() -> Iterator[None]:
    launcher = logging.getLogger("torch.distributed.elastic.multiprocessing.api")
    quiet = _NoSignalWarning()
    launcher.addFilter(quiet)
    try:
        yield
    finally:
        launcher.removeFilter(quiet)


@contextmanager
def _workers_environment(single_machine: bool) -> Iterator[None]:
    """Set, while the workers are spawned (they inherit this process's environment):
    the mark that they are ours (:func:`refuse_torchrun` lets them be) and, on one
    machine, gloo's interface: loopback, so nothing listens beyond this machine (and
    no hostname lookup is needed)."""
    settings = {_OURS: "1"}
    if single_machine and "GLOO_SOCKET_IFNAME" not in os.environ:
        settings["GLOO_SOCKET_IFNAME"] = "lo0" if sys.platform == "darwin" else "lo"
    before = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def join_group(device_type: str, stop: Any) -> tuple[Group, int]:
    """In a worker: join the process group (NCCL on CUDA, gloo otherwise); returns the
    group and this worker's local rank. Ctrl-C reaches the node's process, which tells
    rank 0; the workers ignore it themselves."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    local_rank = int(os.environ["LOCAL_RANK"])
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    backend = "nccl" if device_type == "cuda" else "gloo"
    if _STORE_PORT in os.environ:  # one machine: the node's process holds the store
        store = dist.TCPStore(
            "127.0.0.1", int(os.environ[_STORE_PORT]), is_master=False
        )
        dist.init_process_group(backend, store=store, rank=int(os.environ["RANK"]),
                                world_size=int(os.environ["WORLD_SIZE"]))  # fmt: skip
    else:  # torch elastic set MASTER_ADDR / MASTER_PORT up
        dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    return Group(rank, world, stop if local_rank == 0 else None), local_rank


def _die_with_parent() -> None:
    """Linux: this worker gets SIGKILL when the thread that started it ends (the node's
    process killed, for one), instead of training on as an orphan."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_PR_SET_PDEATHSIG = 1  # <sys/prctl.h>


def leave_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
