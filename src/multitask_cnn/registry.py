"""One registry helper for everything chosen by name: backbones, task kinds,
loss-balancing strategies, optimizers and data sources.

A registry refuses duplicate names and answers an unknown name with the names it
knows, so a typo in the configuration reads as a fix, not a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from multitask_cnn.errors import UserError

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(UserError, KeyError):
    """A name no entry is registered under; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


class Registry(Generic[T]):
    """Named entries of one kind (``Registry("backbone")``), filled by a decorator."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under ``name`` (once)."""

        def decorator(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = entry
            return entry

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; choose from {self.names()}"
            ) from None

    def check(self, name: str) -> str:
        """``name`` if registered, else :class:`ValueError` (for pydantic validators)."""
        if name not in self._entries:
            raise ValueError(
                f"unknown {self.kind} {name!r}; choose from {self.names()}"
            )
        return name

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
