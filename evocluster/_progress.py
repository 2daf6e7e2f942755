"""The progress line: the same figures as plain text (stderr not a terminal: batch jobs,
``mpiexec``'s output) or as a live display on a terminal, drawn by rich.

rich rather than tqdm: a run's own output must never be garbled, and the job's ``print`` goes
through ``sys.stdout``, not through the progress library.  rich's ``Live`` takes ``sys.stdout``
and ``sys.stderr`` while it shows (``redirect_stdout``/``redirect_stderr``) and prints what the
job writes above its line; tqdm leaves that to the job (``tqdm.write``), which a job written for
any executor does not call.  rich is imported only on a terminal.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from ._monitor import Tally

__all__ = ["Live", "duration", "line"]


def duration(seconds: float) -> str:
    """``0:01:02``; days as ``2d 03:04:05``."""
    s = int(seconds)
    days, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{days}d {h:02d}:{m:02d}:{s:02d}" if days else f"{h}:{m:02d}:{s:02d}"


def _number(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.4g}"


def parts(fig: dict[str, Any]) -> list[str]:
    """The progress line's parts, in order."""
    out = [duration(fig["elapsed"])]
    if fig.get("generation") is not None:
        total = fig.get("generations")
        out.append(f"gen {fig['generation']}" + (f"/{total}" if total else ""))
    if fig["total"]:
        pct = 100.0 * fig["done"] / fig["total"]
        out.append(f"map {fig['done']}/{fig['total']} ({pct:.0f}%)")
    out.append(f"{_number(fig['rate'])} evals/s")
    out.append(f"workers {fig['busy']}/{fig['workers']} busy")
    out.append(f"{fig['failed']} failed")
    best = fig.get("best")
    if best is not None and math.isfinite(best):
        out.append(f"best {best:.6g}")
    if fig.get("eta") is not None:
        out.append(f"~{duration(fig['eta'])} left")
    out.append(f"{fig['evaluations']} evals in all")
    return out


def line(fig: dict[str, Any]) -> str:
    """One plain line: ``0:01:02  gen 12/50  map 37/64 (58%)  ...  ~0:00:30 left  N evals in
    all`` (on a narrow terminal the live line is cut from the right: the least needed last)."""
    return "  ".join(parts(fig))


class Live:
    """rich's live display of the tally on ``stream`` (a terminal), refreshed twice a second
    by rich's thread; the job's output goes above it."""

    def __init__(self, tally: Tally, stream: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live as RichLive

        self.tally = tally
        self._live = RichLive(
            _Line(tally),
            console=Console(file=stream),
            refresh_per_second=2,
            redirect_stdout=True,
            redirect_stderr=True,
            transient=False,
        )

    def start(self) -> None:
        self._live.start()

    def stop(self) -> None:
        self._live.stop()


class _Line:
    """The renderable rich refreshes: a bar of the current map and the line's figures."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    def __rich__(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        fig = self.tally.figures()
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=16)
        grid.add_column(no_wrap=True, overflow="ellipsis")  # one line, whatever the width
        total = fig["total"] or 1
        bar = ProgressBar(total=total, completed=fig["done"] if fig["total"] else 0, width=16)
        grid.add_row(bar, Text("  ".join(parts(fig)), no_wrap=True, overflow="ellipsis"))
        return grid
