"""User errors: a mistake in what the user gave (parameters, data, files, a checkpoint)
ends ``kedro run`` with one message and a non-zero exit status, not a traceback.

Every such error derives from :class:`UserError` (as well as from the built-in type it
always was, so ``except ValueError`` still catches it). :func:`install_excepthook`
(the ``UserErrorsHook`` in ``settings.py`` calls it) shows them as one message;
``MULTITASK_CNN_DEBUG=1`` shows the traceback as before. Anything else, a bug, keeps its
traceback.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType

__all__ = [
    "DEBUG_ENV",
    "DataFileError",
    "UserError",
    "install_excepthook",
    "user_error_in",
]

DEBUG_ENV = "MULTITASK_CNN_DEBUG"


class UserError(Exception):
    """A mistake the user can fix from the message alone."""


class DataFileError(UserError, ValueError):
    """A file given as input (images, labels, a checkpoint, saved progress) that cannot
    be used as it is; the message names the file and what is wrong with it."""


def user_error_in(error: BaseException | None) -> UserError | None:
    """``error`` or the first error it was raised from that is a :class:`UserError`
    (Kedro wraps a dataset's errors in its own ``DatasetError``)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return error
        seen.add(id(error))
        # the error it was raised from (``from``), else the one being handled when it
        # was raised, unless ``from None`` hid that one
        error = error.__cause__ or (
            None if error.__suppress_context__ else error.__context__
        )
    return None


def install_excepthook() -> None:
    """Show an uncaught :class:`UserError` as one message on stderr (the exit status
    stays 1); leave every other exception to the hook installed before (Rich's)."""
    previous = sys.excepthook
    if getattr(previous, "_multitask_cnn", False):
        return

    def excepthook(
        kind: type[BaseException], error: BaseException, tb: TracebackType | None
    ) -> None:
        found = user_error_in(error)
        if found is None or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            previous(kind, error, tb)
            return
        sys.stderr.write(
            f"Error: {found}\n({type(found).__name__}: a problem with the input, not "
            f"a bug; {DEBUG_ENV}=1 shows the traceback)\n"
        )
        sys.stderr.flush()

    excepthook._multitask_cnn = True  # type: ignore[attr-defined]
    sys.excepthook = excepthook
