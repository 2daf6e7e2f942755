"""The run log: JSON Lines, one record per line, schema :data:`SCHEMA` (docs/observability.md).

Every record is an object with ``record`` (its kind) and ``t`` (seconds since its run's
``start``); the kinds are ``start``, ``hosts``, ``loop``, ``generation``, ``interval``,
``workers``, ``failure``, ``worker_lost``, ``checkpoint`` and ``end``. A requeued batch job
appends to the same file: each ``start`` begins a new run. Lines are written whole and flushed
one by one, so a log cut short (a job killed, a node lost) reads up to its last whole line;
:func:`read` skips a torn last line and says so. Floats that are not finite (a NaN statistic,
an infinite penalty) are written as ``null``: strict JSON, which ``jq`` and every JSON reader
accept.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = ["SCHEMA", "Run", "RunLog", "RunLogError", "read"]

#: the version of the records' layout: a reader refuses a log whose ``start`` says a newer one
SCHEMA = 1


class RunLogError(ValueError):
    """A file that is not a run log evocluster can read (named, with the reason)."""


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float made ``None`` (recursively, lists and dicts)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _default(value: Any) -> Any:
    """What json cannot write itself: numpy scalars and arrays, paths, anything else by str."""
    tolist = getattr(value, "tolist", None)
    if tolist is not None:
        return _finite(tolist())
    return str(value)


class RunLog:
    """An open run log, appended to (a requeued job adds a run), written from any thread."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._t0 = self._flushed = time.monotonic()
        self._file: IO[str] | None = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    #: a record written in a burst (``soon``: failures) waits this long at most for its flush,
    #: or for the next record: a failure record costs 15 us flushed, 8.5 us not, against ~60 us
    #: the master spends on the failure itself (100,000 failures of 2 local workers, 2026-12-07)
    BURST = 0.5

    def write(self, record: str, *, soon: bool = False, **fields: Any) -> None:
        """One record, flushed -- or, ``soon``, once :attr:`BURST` s have passed since the last
        flush (a failure to write is the log's, never the run's: the log stops)."""
        now = time.monotonic()
        line = json.dumps(
            {"record": record, "t": round(now - self._t0, 3), **_finite(fields)},
            default=_default,
            allow_nan=False,
            separators=(",", ":"),
        )
        with self._lock:
            if self._file is None:
                return
            try:
                self._file.write(line + "\n")
                if not soon or now - self._flushed >= self.BURST:
                    self._file.flush()
                    self._flushed = now
            except (OSError, ValueError):
                self._file = None  # a full disk ends the log, not the run

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.close()
                self._file = None


@dataclass
class Run:
    """One run of a log (from a ``start`` to the next): its records, by kind in order."""

    start: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("record") == kind]

    def last(self, kind: str) -> dict[str, Any] | None:
        return next((r for r in reversed(self.records) if r.get("record") == kind), None)

    @property
    def ended(self) -> dict[str, Any] | None:
        return self.last("end")


def read(path: str | os.PathLike[str]) -> tuple[list[Run], str]:
    """The runs of the log at ``path`` and a note ("" or what was skipped: a torn last line,
    lines before the first ``start``).  Raises :class:`RunLogError` for a file that is not a
    run log, or one written by a newer schema."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise RunLogError(f"cannot read the run log {p}: {e.strerror or e}") from None
    runs: list[Run] = []
    notes: list[str] = []
    lines = text.split("\n")
    torn = lines[-1] != ""  # the last write did not finish (the job was killed)
    for n, line in enumerate(lines[:-1] if not torn else lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            kind = record["record"]
        except (ValueError, TypeError, KeyError):
            if torn and n == len(lines):
                notes.append(
                    f"line {n}, the last, was cut short (the run was killed?) and is skipped"
                )
                continue
            raise RunLogError(
                f"{p} is not an evocluster run log: line {n} is not a run-log record"
            ) from None
        if kind == "start":
            schema = record.get("schema")
            if not isinstance(schema, int) or schema > SCHEMA:
                raise RunLogError(
                    f"{p}: line {n} was written with run-log schema {schema}, and this evocluster "
                    f"reads schema {SCHEMA} and older: read it with a newer evocluster"
                )
            runs.append(Run(record))
        elif not runs:
            notes.append(f"line {n} comes before any start record and is skipped")
        else:
            runs[-1].records.append(record)
    if not runs:
        raise RunLogError(f"{p} holds no run (no start record): is it an evocluster run log?")
    return runs, "; ".join(notes)
