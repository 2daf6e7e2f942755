"""The launcher's options of the progress display and the run log (what ``_monitor`` shows and
writes), parsed and checked on every rank, without loading the monitor: a worker rank never
needs it.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from .errors import ConfigurationError

__all__ = ["add_arguments", "given", "unwritable"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The launcher's --quiet, --progress-every, --log and --log-every."""
    m = p.add_argument_group("progress and run log (docs/observability.md)")
    m.add_argument(
        "--quiet",
        action="store_true",
        default=None,
        help="no progress display (on a terminal: a live line; else a plain line every "
        "--progress-every seconds, on stderr)",
    )
    m.add_argument(
        "--progress-every",
        metavar="SECONDS",
        type=float,
        help="seconds between plain progress lines when stderr is not a terminal (default 30)",
    )
    m.add_argument(
        "--log",
        metavar="PATH",
        help="append a run log there (JSON Lines: start, generations, intervals, workers, "
        "failures, checkpoints, end); read it with `status` and `report`",
    )
    m.add_argument(
        "--log-every",
        metavar="SECONDS",
        type=float,
        help="seconds between the log's interval and workers records (default 30)",
    )


def given(ns: argparse.Namespace) -> dict[str, Any]:
    """The monitor's settings the command line gives (each also read from EVOCLUSTER_QUIET,
    _PROGRESS_EVERY, _LOG, _LOG_EVERY when not given), checked on every rank."""
    given = {
        "quiet": ns.quiet,
        "progress_every": ns.progress_every,
        "log": ns.log,
        "log_every": ns.log_every,
    }
    for flag, value in (("--progress-every", ns.progress_every), ("--log-every", ns.log_every)):
        if value is not None and not 0 < value < float("inf"):
            raise ConfigurationError(f"{flag} must be a number of seconds > 0, not {value:g}")
    if ns.log is not None and os.path.isdir(ns.log):
        raise ConfigurationError(
            f"--log {ns.log} is a directory: give the path of a file for the run log "
            f"(e.g. {os.path.join(ns.log, 'run.jsonl')})"
        )
    return {k: v for k, v in given.items() if v is not None}


def unwritable(log: str | None) -> str | None:
    """Why the run log at ``log`` (or EVOCLUSTER_LOG's) cannot be written, if it cannot: the
    master says so before any worker starts."""
    log = log or os.environ.get("EVOCLUSTER_LOG")
    if not log:
        return None
    try:
        open(log, "a").close()
    except OSError as e:
        return f"cannot write the run log {log}: {e.strerror or e}"
    return None
