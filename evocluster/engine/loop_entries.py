"""The engine loops' runs in a checkpoint file: which entry each loop of the job claims, writes
and gives back (:func:`claim_loop_entry`, :func:`write_loop_entry`, :func:`release_loop_entry`,
:func:`forget_run`), and what an entry records it belongs to (:func:`job_name`) or resumes by
itself for (:func:`slurm_restarted`).

A file holds one entry per loop the job ran with that path, in order (a job that runs 30 seeds
one after the other resumes in the loop it was in; the finished ones return their stored result
without evaluating anything).  The file itself -- format, atomic write, signature, lock -- is
:mod:`evocluster.checkpoint`'s.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from .. import _config as config
from .. import checkpoint
from ..checkpoint import CheckpointError

__all__ = [
    "claim_loop_entry",
    "forget_run",
    "job_name",
    "release_loop_entry",
    "slurm_restarted",
    "write_loop_entry",
]


# The runs of engine loops, by checkpoint file: a file holds one entry per loop the job ran
# with it, in order, {"engine": 1, "loops": [entry, ...]}; an entry is a dict with at least
# "algorithm", "seed" and "finished" (None: that loop wrote nothing).
_ENGINE_LAYOUT = 1


class _Run:
    __slots__ = ("entries", "next")

    def __init__(self, entries: list[dict[str, Any] | None]) -> None:
        self.entries = entries
        self.next = 0  # the index of the next loop that uses this file


_runs: dict[str, _Run] = {}  # absolute path -> the run this process writes there
_runs_lock = threading.Lock()  # loops may start in threads of the job (without signals, then)


def job_name() -> str | None:
    """The job this process runs, as an engine checkpoint records it: its file's name (not its
    directory: the same job resumed from another working directory, or from a copy of the
    project, is itself) or its ``-m`` module; ``None`` without either (``python -c``, an
    interactive session), which is then not compared."""
    from .. import (
        _jobfile as jobfile,  # the master's: its job runs as __main__ (the launcher's, SCOOP's...)
    )

    spec = jobfile.spec_for_current_main()
    if spec.module is not None:
        return spec.module
    return os.path.basename(spec.path) if spec.path is not None else None


def slurm_restarted() -> bool:
    """Whether SLURM started this job again (``SLURM_RESTART_COUNT`` > 0: requeued)."""
    return config.slurm_restart_count() > 0


def claim_loop_entry(
    path: os.PathLike[str] | str,
    *,
    algorithm: str,
    seed: int,
    resume: bool | None,
    source: os.PathLike[str] | str | None = None,
) -> tuple[int, dict[str, Any] | None]:
    """Take the next loop's place in the run checkpointed at ``path``; return its index and the
    entry saved there (``None``: the loop starts afresh).

    The first loop of this process that uses ``path`` decides: ``resume`` true reads the run from
    ``source`` (default ``path``); false starts afresh, overwriting it; ``None`` starts afresh
    but refuses to overwrite an existing file.

    Raises:
        CheckpointError: ``missing``, damaged or foreign (see
            :func:`~evocluster.checkpoint.load`); ``mismatch``: not an engine run, or its loop
            at this index is another algorithm or seed; ``exists``; ``locked``: another run
            holds ``path`` (:func:`~evocluster.checkpoint.hold`, taken here).
    """
    checkpoint.hold(path)
    key = os.path.abspath(os.fspath(path))
    with _runs_lock:
        run = _runs.get(key)
        if run is None:
            run = _Run(_read_run(Path(source or path)) if resume else [])
            if resume is None and os.path.exists(key):
                raise _exists(Path(path))
        index = run.next
        entry = run.entries[index] if index < len(run.entries) else None
        if entry is not None and (entry["algorithm"], entry["seed"]) != (algorithm, seed):
            raise CheckpointError(  # nothing is recorded: the call may be made again
                "mismatch",
                source or path,
                f"loop {index + 1} of the run it holds is {entry['algorithm']}() with seed "
                f"{entry['seed']}, not {algorithm}() with seed {seed}: resume the job that wrote "
                "it with its seed, or start afresh with another checkpoint path",
            )
        _runs[key] = run
        run.next += 1
    return index, entry


def _read_run(path: Path) -> list[dict[str, Any] | None]:
    header, body = checkpoint.load(path)
    if not (
        isinstance(body, dict)
        and body.get("engine") == _ENGINE_LAYOUT
        and isinstance(body.get("loops"), list)
    ):
        raise CheckpointError(
            "mismatch",
            path,
            f"it was written by {header.get('algorithm')!r}, not by evocluster's engine loops: "
            "resume it with what wrote it (evocluster.Checkpoint for a job's own loop)",
        )
    return list(body["loops"])


def _exists(path: Path) -> CheckpointError:
    try:
        h = checkpoint.read_header(path)
        what = f" (a run of {h.get('algorithm')}() with seed {h.get('seed')}, {h.get('created')})"
    except CheckpointError:
        what = ""
    return CheckpointError(
        "exists",
        path,
        f"it exists already{what}: continue that run with --resume (resume=True), or remove "
        "it or choose another path to start afresh (resume=False overwrites it)",
    )


def release_loop_entry(path: os.PathLike[str] | str, index: int) -> None:
    """Give back loop ``index``'s place (taken by :func:`claim_loop_entry`) if no later loop took
    one: it failed before writing anything, and the next call is that loop again."""
    with _runs_lock:
        run = _runs.get(os.path.abspath(os.fspath(path)))
        if run is not None and run.next == index + 1:
            run.next = index


def forget_run(path: os.PathLike[str] | str) -> None:
    """End this process's run at ``path``: the next loop that uses it is the first of a new
    run, as in a new process (an engine loop calls it when a signal stopped it)."""
    with _runs_lock:
        _runs.pop(os.path.abspath(os.fspath(path)), None)


def write_loop_entry(
    path: os.PathLike[str] | str,
    index: int,
    entry: dict[str, Any],
    *,
    extra: dict[str, Any] | None = None,
) -> None:
    """Store ``entry`` as loop ``index`` of the run at ``path`` (see :func:`claim_loop_entry`) and
    write the whole run atomically; the header names this loop's algorithm and seed.

    Raises:
        CheckpointError: ``unwritable`` (the previous file is kept).
    """
    key = os.path.abspath(os.fspath(path))
    with _runs_lock:
        run = _runs.setdefault(key, _Run([]))
        while len(run.entries) <= index:
            run.entries.append(None)
        run.entries[index] = entry
        loops = list(run.entries)
    checkpoint.save(  # through the module: a test may stand in for it
        path,
        {"engine": _ENGINE_LAYOUT, "loops": loops},
        algorithm=entry["algorithm"],
        seed=entry["seed"],
        extra={**(extra or {}), "loop": index + 1, "loops": len(loops)},
    )
