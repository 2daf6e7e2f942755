"""The arguments of a job's items on their way to the workers: how a message names them, the
check that they pickle (on the first item of a map, before anything is sent), and which item of
a chunk that could not be pickled is to blame."""

from __future__ import annotations

from typing import Any

from . import _serialization as serialization
from ._jobs import Job
from .errors import SerializationError

__all__ = ["args_label", "check_args", "diagnose", "unsendable"]


def args_label(job: Job, index: int) -> str:
    return f"args (call {index})" if job.star else f"args[0] (individual {index})"


def unsendable(label: str, exc: Exception) -> SerializationError:
    """A :class:`SerializationError` for arguments whose own pickling code raised ``exc`` (a
    ``__getstate__`` or ``__reduce__`` raising something that is not a pickling error)."""
    err = SerializationError(
        f"cannot send {label} to the workers: pickling it raised {type(exc).__name__}: {exc} "
        "(the object's own __getstate__ / __reduce__ failed; make it picklable)"
    )
    err.__cause__ = exc
    return err


def check_args(obj: Any, label: str, policy: str) -> None:
    """:func:`serialization.check`, and any exception of the object's own pickling code as a
    :class:`SerializationError` too (with that exception as its cause)."""
    try:
        serialization.check(obj, label, policy)
    except SerializationError:
        raise
    except Exception as e:
        raise unsendable(label, e) from e


def diagnose(job: Job, start: int, items: list[Any], exc: Exception) -> BaseException:
    """Name the first item of a chunk that cannot be serialised, and why."""
    for i, item in enumerate(items):
        try:
            check_args(item, args_label(job, start + i), job.serialization)
        except SerializationError as e:
            return e
    return unsendable(f"items {start} to {start + len(items) - 1}", exc)
