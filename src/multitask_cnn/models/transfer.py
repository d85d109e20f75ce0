"""Weight transfer: fill a model from another network's state_dict through an explicit,
reported mapping.

Every tensor of the target model's ``state_dict`` is answered for: copied from one
source tensor (possibly adapted: an RGB first convolution summed or averaged down to
the target's single input channel), or skipped with the reason (excluded, no source,
shape mismatch). A stage the model keeps per task (``model.shared_stages`` below the
backbone's depth) is filled in every task's copy from the same source tensor.

Names. A target tensor answers to its own name (``shared.conv1.0.weight``,
``task_stages.left.fc.1.weight``, ``heads.left.0.weight``) and, for backbone stages,
to its *backbone name* ``backbone.<stage>.<rest>`` whether the stage is shared or
per task. The pretraining pipeline saves the backbone under backbone names, so by
default every stage finds its source whatever the share depth. ``renames``
(``"conv1.* -> backbone.stem.conv1.*"``, each ``*`` carried over in order) rename
source tensors first; ``include`` / ``exclude`` globs select target tensors by either
name.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multitask_cnn.errors import DataFileError, UserError

from .backbones import Backbone
from .checkpoint import load_weights_only
from .multitask import MultiTaskModel

__all__ = [
    "BACKBONE_PREFIX",
    "Rename",
    "TransferError",
    "TransferMapping",
    "TransferReport",
    "backbone_name",
    "backbone_state_dict",
    "state_dict_of",
    "load_state_dict_file",
    "transfer_weights",
]

BACKBONE_PREFIX = "backbone."
_PER_TASK = re.compile(r"^task_stages\.[^.]+\.")
_PER_EXPERT = re.compile(r"^experts\.\d+\.")


class TransferError(UserError, ValueError):
    """The transfer cannot be done as asked; the message names the tensor, pattern or
    file and what was expected."""


@dataclass(frozen=True)
class Rename:
    """``source`` glob → ``target`` template; each ``*`` of ``source`` captures, and the
    captures replace the ``*`` of ``target`` in order."""

    source: str
    target: str

    @classmethod
    def parse(cls, text: str) -> Rename:
        parts = [part.strip() for part in text.split("->")]
        if len(parts) != 2 or not all(parts):
            raise ValueError(
                f"rename {text!r} is not of the form 'source.* -> target.*'"
            )
        rename = cls(*parts)
        if rename.source.count("*") != rename.target.count("*"):
            raise ValueError(
                f"rename {text!r}: the source has {rename.source.count('*')} '*' and the "
                f"target {rename.target.count('*')}; they must match"
            )
        return rename

    def apply(self, name: str) -> str | None:
        """The renamed ``name``, or None when the source pattern does not match it."""
        regex = "^" + "(.*)".join(map(re.escape, self.source.split("*"))) + "$"
        match = re.match(regex, name)
        if match is None:
            return None
        pieces = self.target.split("*")
        out = pieces[0]
        for capture, piece in zip(match.groups(), pieces[1:], strict=True):
            out += capture + piece
        return out

    def __str__(self) -> str:
        return f"{self.source} -> {self.target}"


@dataclass(frozen=True)
class TransferMapping:
    """Which source tensor fills which target tensor (module docstring)."""

    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    renames: tuple[Rename, ...] = ()
    channel_adapt: str = "sum"  # "sum" | "mean": an RGB first conv to fewer channels

    def __post_init__(self) -> None:
        if self.channel_adapt not in ("sum", "mean"):
            raise ValueError(
                f"channel_adapt must be 'sum' or 'mean', got {self.channel_adapt!r}"
            )

    @classmethod
    def from_config(
        cls,
        include: Sequence[str] = ("*",),
        exclude: Sequence[str] = (),
        renames: Sequence[str] = (),
        channel_adapt: str = "sum",
    ) -> TransferMapping:
        return cls(tuple(include), tuple(exclude),
                   tuple(Rename.parse(r) for r in renames), channel_adapt)  # fmt: skip


def backbone_name(target: str) -> str | None:
    """``shared.<stage>…``, ``task_stages.<task>.<stage>…`` (a task's copy or column)
    and ``experts.<i>.<stage>…`` (an MMoE expert) → ``backbone.<stage>…``; None for
    other tensors (heads, cross-stitch units, attention modules, gates)."""
    if target.startswith("shared."):
        return BACKBONE_PREFIX + target.removeprefix("shared.")
    for per_copy in (_PER_TASK, _PER_EXPERT):
        if per_copy.match(target):
            return BACKBONE_PREFIX + per_copy.sub("", target)
    return None


def backbone_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone tensors under backbone names (``backbone.<stage>.<rest>``), on the
    CPU: a :class:`~multitask_cnn.models.Backbone`'s, or the shared stages of a
    :class:`~multitask_cnn.models.MultiTaskModel` that shares all of them (what
    pretraining saves)."""
    if isinstance(model, Backbone):
        items = (
            (f"shared.{k.removeprefix('stages.')}", v)
            for k, v in model.state_dict().items()
        )
    elif isinstance(model, MultiTaskModel) and not any(model.task_stages.values()):
        items = (
            (k, v) for k, v in model.state_dict().items() if k.startswith("shared.")
        )
    else:
        raise ValueError(
            "backbone_state_dict needs a Backbone or a model sharing every stage"
        )
    return {backbone_name(k): v.detach().cpu() for k, v in items}


def state_dict_of(obj: Any, where: str) -> dict[str, torch.Tensor]:
    """The state_dict inside a loaded file: a plain ``{name: tensor}``, or a dict with
    ``state_dict`` (pretraining, torch conventions) or ``model`` (this project's
    multi-task checkpoint). ``where`` names the file in the error."""
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if (
                isinstance(inner, Mapping)
                and inner
                and all(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                return dict(inner)
    found = type(obj).__name__ + (
        f" with keys {sorted(obj)[:8]}" if isinstance(obj, Mapping) else ""
    )
    raise TransferError(
        f"{where} is not a checkpoint: expected a state_dict (parameter name -> tensor) "
        f"or a dict holding one under 'state_dict' or 'model'; found a {found}"
    )


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The state_dict in the file ``path``, loaded with ``weights_only=True`` (no code
    runs) onto the CPU; :class:`TransferError` names the file when it is missing or
    is not a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise TransferError(f"checkpoint file {str(path)!r} does not exist")
    try:
        obj = load_weights_only(path)
    except DataFileError as error:
        raise TransferError(f"transfer.checkpoint: {error}") from None
    return state_dict_of(obj, repr(str(path)))


@dataclass
class _Source:
    name: str  # as in the file
    tensor: torch.Tensor
    renamed_by: Rename | None


def _renamed_sources(
    source: Mapping[str, torch.Tensor], renames: Sequence[Rename]
) -> dict[str, _Source]:
    out: dict[str, _Source] = {}
    for name, tensor in source.items():
        new, rule = name, None
        for rename in renames:
            renamed = rename.apply(name)
            if renamed is not None:
                new, rule = renamed, rename
                break
        if new in out:
            raise TransferError(
                f"source tensors {out[new].name!r} and {name!r} are both renamed to "
                f"{new!r}; make the renames tell them apart"
            )
        out[new] = _Source(name, tensor, rule)
    return out


def _adapt(
    source: torch.Tensor, target_shape: torch.Size, how: str
) -> torch.Tensor | None:
    """A conv kernel ``(O, C, k, k)`` with C > 1 input channels reduced to the target's
    single channel (sum keeps a grey image's response to R=G=B; mean keeps the scale
    of the weights); None when the shapes differ otherwise."""
    if (
        source.dim() == 4 and len(target_shape) == 4 and target_shape[1] == 1
        and source.shape[1] > 1
        and source.shape[0] == target_shape[0] and source.shape[2:] == target_shape[2:]
    ):  # fmt: skip
        reduce = torch.sum if how == "sum" else torch.mean
        return reduce(source, dim=1, keepdim=True)
    return None


def _unmatched(
    patterns: Sequence[str], names: Sequence[str], what: str, skip: Sequence[str] = ()
) -> None:
    for pattern in patterns:
        if pattern in skip:
            continue
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise TransferError(
                f"{what} pattern {pattern!r} matches no tensor; some of them are "
                f"{list(names)[:6]}"
            )


@dataclass
class TransferReport:
    """Each target tensor → its source, or skipped with the reason; JSON-able via
    :meth:`to_dict`."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    unused_sources: list[str] = field(default_factory=list)
    mapping: dict[str, Any] = field(default_factory=dict)

    @property
    def transferred(self) -> list[str]:
        return [e["target"] for e in self.entries if e["status"] == "transferred"]

    def counts(self, parameter_names: set[str]) -> dict[str, int]:
        moved = [e for e in self.entries if e["status"] == "transferred"]
        return {
            "tensors_transferred": len(moved),
            "tensors_skipped": len(self.entries) - len(moved),
            "tensors_adapted": sum(1 for e in moved if e.get("adapted")),
            "parameters_transferred": sum(
                e["numel"] for e in moved if e["target"] in parameter_names
            ),
            "parameters_total": sum(
                e["numel"] for e in self.entries if e["target"] in parameter_names
            ),
            "source_tensors_unused": len(self.unused_sources),
        }

    def to_dict(self, parameter_names: set[str]) -> dict[str, Any]:
        return {
            "mapping": self.mapping,
            "counts": self.counts(parameter_names),
            "tensors": self.entries,
            "unused_source_tensors": self.unused_sources,
        }


def transfer_weights(
    model: nn.Module, source: Mapping[str, torch.Tensor], mapping: TransferMapping
) -> TransferReport:
    """Copy ``source`` tensors into ``model`` as ``mapping`` says; returns the report.

    Raises :class:`TransferError` when a pattern or rename matches nothing, when a
    tensor the mapping asked for by name (through a rename, or an ``include`` other
    than ``*``) has another shape than its source (both shapes named), or when
    nothing at all could be transferred.
    """
    targets = model.state_dict()
    aliases = {t: [t] + ([b] if (b := backbone_name(t)) else []) for t in targets}
    every_alias = [a for names in aliases.values() for a in names]
    _unmatched(mapping.include, every_alias, "include", skip=("*",))
    _unmatched(mapping.exclude, every_alias, "exclude")
    for rename in mapping.renames:
        if not any(rename.apply(name) is not None for name in source):
            raise TransferError(
                f"rename {str(rename)!r} matches no source tensor; the source has "
                f"{list(source)[:6]}"
            )
    sources = _renamed_sources(source, mapping.renames)

    report = TransferReport(mapping={
        "include": list(mapping.include), "exclude": list(mapping.exclude),
        "renames": [str(r) for r in mapping.renames], "channel_adapt": mapping.channel_adapt,
    })  # fmt: skip
    used: set[str] = set()
    selected = 0  # targets the include / exclude patterns let through
    new_state = dict(targets)
    for target, tensor in targets.items():
        names = aliases[target]
        entry: dict[str, Any] = {
            "target": target,
            "shape": list(tensor.shape),
            "numel": tensor.numel(),
        }
        report.entries.append(entry)
        excluded = next(
            (p for p in mapping.exclude for n in names if fnmatch.fnmatchcase(n, p)),
            None,
        )
        included = next(
            (p for p in mapping.include for n in names if fnmatch.fnmatchcase(n, p)),
            None,
        )
        if excluded is not None or included is None:
            entry |= {"status": "skipped", "reason": f"excluded by {excluded!r}"
                      if excluded else "matches no include pattern"}  # fmt: skip
            continue
        selected += 1
        found = next((sources[n] for n in names if n in sources), None)
        if found is None:
            entry |= {"status": "skipped", "reason": "no source tensor"}
            continue
        entry["source"] = found.name
        value = found.tensor
        if value.shape != tensor.shape:
            value = _adapt(found.tensor, tensor.shape, mapping.channel_adapt)
            if value is None:
                asked = found.renamed_by is not None or included != "*"
                if asked:
                    why = (
                        f"rename {str(found.renamed_by)!r}"
                        if found.renamed_by
                        else f"include {included!r}"
                    )
                    raise TransferError(
                        f"target tensor {target!r} has shape {tuple(tensor.shape)} but its "
                        f"source {found.name!r} (asked for by {why}) has shape "
                        f"{tuple(found.tensor.shape)}"
                    )
                entry |= {"status": "skipped", "reason": (
                    f"shape mismatch: target {tuple(tensor.shape)}, source "
                    f"{found.name!r} {tuple(found.tensor.shape)}")}  # fmt: skip
                continue
            entry["adapted"] = (f"{mapping.channel_adapt} of {found.tensor.shape[1]} input "
                                f"channels {tuple(found.tensor.shape)}")  # fmt: skip
        new_state[target] = value.to(dtype=tensor.dtype)
        used.add(found.name)
        entry["status"] = "transferred"
    report.unused_sources = [name for name in source if name not in used]
    if not selected:
        raise TransferError(
            "nothing transferable: transfer.include / transfer.exclude select no "
            f"target tensor (include {list(mapping.include)}, exclude {list(mapping.exclude)})"
        )
    if not report.transferred:
        raise TransferError(
            "nothing transferable: no target tensor found a source of its shape "
            f"(target names such as {every_alias[:4]}, source names such as "
            f"{list(source)[:4]}); set transfer.renames to map them, or include "
            "tensors the source has (the pretrained backbone has no heads; the default "
            "exclude leaves out backbone.fc.*: set exclude: [] to carry it)"
        )
    model.load_state_dict(new_state)
    return report
