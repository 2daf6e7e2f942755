"""The master's monitor: the progress display and the run log, fed by the pools' snapshots and
the events of :mod:`evocluster._observe`.

One thread (``evocluster-monitor``) sleeps until the next line or record is due -- a plain
progress line every ``progress_every`` s when stderr is not a terminal, an ``interval`` and a
``workers`` record every ``log_every`` s -- and reads every pool's :meth:`snapshot` then; on a
terminal, rich's own refresh thread draws the live line (``_progress.Live``).  Events (a failure,
a generation, a checkpoint) are written to the log as they come.  Nothing here runs per result:
the pools count, the monitor reads at intervals.

The launcher starts the monitor before the job (``--quiet``, ``--progress-every``, ``--log``,
``--log-every``); a job run without it (``python job.py``, ``python -m scoop job.py``) gets one
when its first pool opens, from the EVOCLUSTER_QUIET, EVOCLUSTER_PROGRESS_EVERY, EVOCLUSTER_LOG
and EVOCLUSTER_LOG_EVERY variables, stopped at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, TextIO

from . import _config as config
from . import _observe as observe
from ._runlog import SCHEMA, RunLog
from ._version import __version__
from .errors import ConfigurationError

__all__ = ["Monitor", "Settings", "Tally", "abandon", "current", "pool_opened", "start", "stop"]

#: a batch (the items put while some were pending) this small reads "map 3/4": the ETA of the
#: run, when a loop says how many generations it has, comes from whole generations instead
DEFAULT_PROGRESS_EVERY = 30.0
DEFAULT_LOG_EVERY = 30.0


@dataclass(frozen=True)
class Settings:
    """What the monitor shows and writes."""

    quiet: bool = False  # no progress (the log, if any, is still written)
    progress_every: float = DEFAULT_PROGRESS_EVERY  # plain lines, when stderr is no terminal
    log: str | None = None  # the run log's path (appended to)
    log_every: float = DEFAULT_LOG_EVERY  # interval and workers records

    @classmethod
    def from_env(cls) -> Settings:
        """From EVOCLUSTER_QUIET, _PROGRESS_EVERY, _LOG and _LOG_EVERY."""
        env = os.environ
        quiet = False
        if "EVOCLUSTER_QUIET" in env:
            try:
                quiet = config._flag(env["EVOCLUSTER_QUIET"])
            except ValueError:
                raise ConfigurationError(
                    f"EVOCLUSTER_QUIET={env['EVOCLUSTER_QUIET']!r} is not a valid on/off value "
                    "(1/0, true/false, yes/no, on/off)"
                ) from None
        return cls(
            quiet=quiet,
            progress_every=_seconds(env, "EVOCLUSTER_PROGRESS_EVERY", DEFAULT_PROGRESS_EVERY),
            log=env.get("EVOCLUSTER_LOG") or None,
            log_every=_seconds(env, "EVOCLUSTER_LOG_EVERY", DEFAULT_LOG_EVERY),
        )

    def check(self, progress_flag: str = "--progress-every", log_flag: str = "--log-every") -> None:
        for flag, value in ((progress_flag, self.progress_every), (log_flag, self.log_every)):
            if not value > 0 or value == float("inf"):
                raise ConfigurationError(f"{flag} must be a number of seconds > 0, not {value!r}")


def _seconds(env: os._Environ[str], name: str, default: float) -> float:
    if name not in env:
        return default
    try:
        value = float(env[name])
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ConfigurationError(f"{name}={env[name]!r} is not a number of seconds > 0")
    return value


class Tally:
    """The run's figures, put together from the pools' snapshots and the events: what the
    progress line shows, and the log's interval records say."""

    #: the rate is over this many seconds of the latest snapshots
    RATE_WINDOW = 30.0

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.closed: dict[int, dict[str, Any]] = {}  # pool serial -> its last figures
        self.history: deque[tuple[float, int]] = deque([(self.t0, 0)])
        self.loop: dict[str, Any] = {}  # the engine loop running: its name, generations, seed
        self.generation: dict[str, Any] | None = None  # its latest statistics row
        self.generation_started: float | None = None  # when it began (its first row)
        self.checkpoint: dict[str, Any] | None = None
        self.failures = 0

    def snapshots(self, per_worker: bool = False) -> list[dict[str, Any]]:
        """Every pool's figures: the live ones now, the closed ones as they ended; each worker's
        stats too only if ``per_worker`` (the log's ``workers`` record: the progress line needs
        none, and copying them costs O(workers) a look)."""
        for _ in range(3):
            try:
                live = list(observe.pools)
                break
            except RuntimeError:  # a pool opened meanwhile
                continue
        else:
            live = []
        with self.lock:
            found = dict(self.closed)
        for pool in live:
            if pool.serial not in found:
                with contextlib.suppress(Exception):
                    found[pool.serial] = pool.snapshot(per_worker)
        return [found[k] for k in sorted(found)]

    def on_event(self, kind: str, fields: dict[str, Any]) -> None:
        with self.lock:
            if kind == "pool_closed":
                self.closed[fields["serial"]] = fields
            elif kind == "failure":
                self.failures += 1
            elif kind == "loop":
                self.loop = dict(fields)
                self.generation = None
                self.generation_started = time.monotonic()
            elif kind == "generation":
                self.generation = dict(fields)
            elif kind == "checkpoint":
                self.checkpoint = dict(fields)

    def figures(self, snapshots: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The figures now: evaluations, rate, workers busy, the current batch, estimates."""
        snaps = self.snapshots() if snapshots is None else snapshots
        now = time.monotonic()
        put = sum(s["put"] for s in snaps)
        settled = sum(s["settled"] for s in snaps)
        base = sum(min(s["batch_base"], s["settled"]) for s in snaps)
        with self.lock:
            live = [s for s in snaps if s["serial"] not in self.closed]
            history = self.history
            history.append((now, settled))
            while len(history) > 2 and history[0][0] < now - self.RATE_WINDOW:
                history.popleft()
            (t_first, n_first) = history[0]
            rate = (settled - n_first) / (now - t_first) if now > t_first else 0.0
            loop, gen, checkpoint = self.loop, self.generation, self.checkpoint
            started = self.generation_started
        counters = [s["counters"] for s in snaps]
        fig: dict[str, Any] = {
            "elapsed": now - self.t0,
            "evaluations": settled,
            "submitted": put,
            "done": settled - base,
            "total": put - base,
            "rate": rate,
            "workers": sum(s["workers"] for s in live),
            "busy": sum(s["busy"] for s in live),
            "failed": sum(c.get("failed", 0) for c in counters),
            "retried": sum(c.get("retried", 0) for c in counters),
            "backends": sorted({s["name"] for s in snaps}),
        }
        left = fig["total"] - fig["done"]
        fig["eta"] = left / rate if rate > 0 and left > 0 else None
        if loop:
            fig["loop"] = loop.get("loop")
            fig["generations"] = loop.get("generations")
        if gen is not None:
            fig["generation"] = gen.get("generation")
            fig["best"] = gen.get("best")
            total = loop.get("generations")
            g = gen.get("generation") or 0
            if total and started is not None and g > 0:
                # whole generations so far (the initial population's row is generation 0)
                per = (now - started) / (g + 1)
                fig["eta"] = max(0.0, (total - g) * per - 0.0)
        if checkpoint is not None:
            fig["checkpoint"] = checkpoint
        return fig


def _versions() -> dict[str, Any]:
    """The versions of what the run uses, without importing what it has not imported."""
    from importlib import metadata

    out: dict[str, Any] = {"evocluster": __version__, "python": sys.version.split()[0]}
    for name in ("numpy", "cloudpickle", "mpi4py", "scoop"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    mpi = sys.modules.get("mpi4py.MPI")
    out["mpi_library"] = None
    if mpi is not None:
        with contextlib.suppress(Exception):
            text = mpi.Get_library_version().replace("\x00", "").strip()
            out["mpi_library"] = text.splitlines()[0] if text else None
    return out


def _slurm() -> dict[str, Any] | None:
    env = os.environ
    job = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
    if not job:
        return None
    return {
        "job_id": job,
        "array_job_id": env.get("SLURM_ARRAY_JOB_ID"),
        "array_task_id": env.get("SLURM_ARRAY_TASK_ID"),
        "restart_count": config.slurm_restart_count(),
        "nodes": env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST"),
    }


def start_record(**fields: Any) -> dict[str, Any]:
    """The ``start`` record's fields: ``fields`` (the launcher's: backend, ranks, workers) and
    the versions, the host, the command line, SLURM's ids."""
    return {
        "schema": SCHEMA,
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **_versions(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
        "slurm": _slurm(),
        **fields,
    }


class Monitor:
    """The progress display and the run log of one run (on the master)."""

    def __init__(self, settings: Settings, stream: TextIO | None = None) -> None:
        self.settings = settings
        self.stream = stream if stream is not None else sys.stderr
        self.tally = Tally()
        self.log: RunLog | None = None
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._live: Any = None
        # pool serial -> the workers' names and hosts the log has (a worker's label gains its
        # host and pid when it says them, which may be after it was first counted)
        self._sent: dict[int, list[tuple[str, str]]] = {}
        self._hosts_said: set[int] = set()  # pools whose hosts record is written
        self.tty = _is_tty(self.stream)

    def start(self, **start_fields: Any) -> None:
        """Open the log (its ``start`` record), listen to events, start the thread (and, on a
        terminal, the live display)."""
        if self.settings.log is not None:
            self.log = RunLog(self.settings.log)
            self.log.write("start", **start_record(**start_fields))
        observe.subscribe(self._on_event)
        for pool in list(observe.pools):  # (a pool whose workers started before the monitor)
            hosts = pool.hosts()
            if hosts is not None:
                self._on_event("hosts", {"pool": pool.serial, "backend": pool.name, "hosts": hosts})
        if not self.settings.quiet and self.tty:
            from ._progress import Live

            self._live = Live(self.tally, self.stream)
            self._live.start()
        if self.log is not None or (not self.settings.quiet and not self.tty):
            self._thread = threading.Thread(
                target=self._run, name="evocluster-monitor", daemon=True
            )
            self._thread.start()

    def stop(self, exit_code: int | None = None) -> None:
        """The last records (``interval``, ``workers``, ``end``), the display ended."""
        if self._stopped:
            return
        self._stopped = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        observe.unsubscribe(self._on_event)
        if self._live is not None:
            with contextlib.suppress(Exception):
                self._live.stop()
        if self.log is not None:
            snaps = self.tally.snapshots(per_worker=True)
            fig = self.tally.figures(snaps)
            self._write_interval(fig)
            self._write_workers(snaps)
            hosts: dict[str, int] = {}
            for s in snaps:
                for w in s["per_worker"].values():
                    hosts[w["host"] or "?"] = hosts.get(w["host"] or "?", 0) + 1
            self.log.write(
                "end",
                exit_code=exit_code,
                seconds=round(fig["elapsed"], 3),
                evaluations=fig["evaluations"],
                failed=fig["failed"],
                retried=fig["retried"],
                hosts=hosts,
            )
            self.log.close()

    # ------------------------------------------------------------------ events, any thread
    def _on_event(self, kind: str, fields: dict[str, Any]) -> None:
        self.tally.on_event(kind, fields)
        if kind == "hosts":  # once per pool (its event may race with the monitor's start)
            with self.tally.lock:
                if fields["pool"] in self._hosts_said:
                    return
                self._hosts_said.add(fields["pool"])
        if self.log is not None and kind != "pool_closed":
            self.log.write(kind, soon=kind == "failure", **fields)

    # ------------------------------------------------------------------ the monitor's thread
    def _run(self) -> None:
        s = self.settings
        plain = not s.quiet and not self.tty
        now = time.monotonic()
        next_line = now + s.progress_every if plain else float("inf")
        next_log = now + s.log_every if self.log is not None else float("inf")
        last_said: tuple[int, int, int] | None = None
        while not self._stopped:
            self._wake.wait(max(0.0, min(next_line, next_log) - time.monotonic()))
            if self._stopped:
                return
            now = time.monotonic()
            try:
                snaps = self.tally.snapshots(per_worker=now >= next_log)
                fig = self.tally.figures(snaps)
                if now >= next_line:
                    # while work is pending, a line each time (a long evaluation is a line
                    # that does not change); idle and unchanged, none: a program that keeps
                    # an executor between runs of work is not told every 30 s that it rests
                    said = (fig["evaluations"], fig["submitted"], fig["failed"])
                    if fig["submitted"] > fig["evaluations"] or said != last_said:
                        from ._progress import line

                        print(f"evocluster: {line(fig)}", file=self.stream, flush=True)
                        last_said = said
                    next_line = now + s.progress_every
                if now >= next_log:
                    self._write_interval(fig)
                    self._write_workers(snaps)
                    next_log = now + s.log_every
            except Exception:  # the monitor never ends a run; it says nothing more instead
                return

    def _write_interval(self, fig: dict[str, Any]) -> None:
        assert self.log is not None
        keep = (
            "evaluations", "submitted", "done", "total", "rate", "workers", "busy", "failed",
            "retried", "eta", "generation", "generations", "best",
        )  # fmt: skip
        self.log.write("interval", **{k: fig[k] for k in keep if k in fig})

    def _write_workers(self, snaps: list[dict[str, Any]]) -> None:
        """Per worker, cumulative: tasks, items, busy seconds, bytes, failures; its name and
        host when the log has not had them yet; the master's CPU cost (``master_*``)."""
        assert self.log is not None
        for s in snaps:
            stats = list(s["per_worker"].values())
            if not stats:
                continue
            record: dict[str, Any] = {"pool": s["serial"], "backend": s["name"]}
            named = [(w["name"], w["host"]) for w in stats]
            if self._sent.get(s["serial"]) != named:
                record["names"] = [w["name"] for w in stats]
                record["hosts"] = [w["host"] for w in stats]
                self._sent[s["serial"]] = named
            for column in ("tasks", "items", "bytes_sent", "bytes_received", "failed"):
                record[column] = [w[column] for w in stats]
            record["busy"] = [round(w["busy"], 3) for w in stats]
            # the master's CPU cost for this pool so far (the thread pool's; not SCOOP's)
            record.update((k, v) for k, v in s["counters"].items() if k.startswith("master_"))
            self.log.write("workers", **record)


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


_current: Monitor | None = None


def current() -> Monitor | None:
    return _current


def start(settings: Settings, stream: TextIO | None = None, **start_fields: Any) -> Monitor:
    """Start the run's monitor (the launcher's, before the job runs)."""
    global _current
    monitor = Monitor(settings, stream)
    _current = monitor
    monitor.start(**start_fields)
    return monitor


def stop(exit_code: int | None = None) -> None:
    global _current
    monitor, _current = _current, None
    if monitor is not None:
        monitor.stop(exit_code)


def abandon() -> None:
    """The process ends now (``os._exit``, a second Ctrl-C): give the terminal its cursor back,
    which the live display hid, without a lock (the thread the signal interrupted may hold
    rich's).  The log then ends without its ``end`` record, as after a ``SIGKILL``."""
    monitor = _current
    if monitor is not None and monitor._live is not None:
        # rich's stand-ins for them flush through its console's lock
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        with contextlib.suppress(Exception):
            os.write(monitor.stream.fileno(), b"\x1b[?25h\n")


def pool_opened(pool: Any) -> None:
    """``pool`` opened on the master: a run without the launcher's monitor gets one now, from
    the environment, stopped at interpreter exit (its ``end`` record has no exit code)."""
    if _current is not None:
        return
    settings = Settings.from_env()
    if settings.quiet and settings.log is None:
        return
    start(settings, backend=pool.name, ranks=None, workers=pool.n_workers, job=sys.argv[0])
    atexit.register(stop, None)
