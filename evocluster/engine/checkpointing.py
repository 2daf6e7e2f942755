"""Checkpointing an engine loop: one context every loop runs in (:meth:`Checkpointing.run`).

Where the checkpoint is and how often it is written (the loop's keywords, else the launcher's
defaults, :func:`evocluster.checkpoint.defaults`), what it resumes from, whether it belongs to
this loop (:meth:`Checkpointing.identify`, :meth:`Checkpointing.reached`), and the signals that
stop the loop.  The file itself -- its format, atomic write, lock and signature -- is
:mod:`evocluster.checkpoint`'s.
"""

from __future__ import annotations

import numbers
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import numpy as np

from .. import _observe as observe
from .. import checkpoint as _checkpoint
from .._checkpoint_options import check_every
from .._failures import function_name
from ..rng import master as _master_rng
from . import loop_entries
from .settings import CheckpointSettings
from .state import Fitness, Log, Population, Result, State, initial_genomes
from .stopping import StopSignals, Waits


def recorded(value: Any) -> Any:
    """A loop's argument as a checkpoint records it, to be compared on resume: numbers as
    numbers, operators by qualified name (through ``functools.partial``), sequences as lists."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if callable(value):
        return function_name(value)
    if isinstance(value, list | tuple | np.ndarray):
        return [recorded(v) for v in value]
    return f"{type(value).__module__}.{type(value).__qualname__}"


def shape_of(genomes: np.ndarray) -> str:
    """``100 x 64 (bool)``: a population's size, genome shape and dtype, for a message."""
    return " x ".join(str(n) for n in genomes.shape) + f" ({genomes.dtype})"


class Checkpointing:
    """One loop's checkpoints: where, how often, what it resumes from, and the signals that stop
    it.  Without a path (no ``checkpoint=``, no launcher ``--checkpoint``) it does nothing.

    The loop hands :meth:`track` a function returning its state now, ``(State or None,
    loop-specific plain data or None)``.  That must be a complete, consistent point whenever the
    loop can be stopped: at a :meth:`safe_point`, and inside ``waits`` (while it waits for
    evaluations the signal may interrupt it there; nothing of the step in progress has been
    written into the state yet).
    """

    def __init__(self, name: str, seed: int, log: Log, settings: CheckpointSettings) -> None:
        path, resume = settings.checkpoint, settings.resume
        every, every_generations = settings.checkpoint_every, settings.checkpoint_every_generations
        self.name, self.seed, self.log = name, seed, log
        self.given = resume if isinstance(resume, State) else None  # resume=State: that state
        self.entry: dict[str, Any] | None = None  # what the checkpoint holds for this loop
        self.item = 0  # this loop's place among the loops of the job using the file
        self.signals: StopSignals | None = None
        self.waits = Waits()  # how the loop waits for evaluations: stepped, signals looked at
        self.snapshot: Callable[[], tuple[State | None, Any]] | None = None
        self.saved_at, self.saved_generation = time.monotonic(), -1
        self.every: float | None = None
        self.every_generations: int | None = None
        self.identity: dict[str, Any] = {}  # what the entry records it belongs to (identify)
        launcher = _checkpoint.defaults()
        source = None  # resume=PATH: read there
        if isinstance(resume, str | os.PathLike):
            source, resume = Path(resume), True
        if path is False:
            self.path = None
        elif path is not None:
            self.path = Path(path)
        else:
            self.path = Path(launcher.path) if launcher.path else source
        if self.path is None:
            if resume is True:
                raise ValueError(
                    f"{name}(resume=...) continues a run from its checkpoint: give "
                    "checkpoint=PATH (or the launcher's --checkpoint PATH)"
                )
            return
        self._periods(
            launcher.every if every is None else every,
            launcher.every_generations if every_generations is None else every_generations,
        )
        mode: bool | None = None  # None: afresh, but never over an existing file
        if self.given is not None or resume is False:
            mode = False
        elif resume is True or launcher.resume:
            mode = True
        elif loop_entries.slurm_restarted() and (source or self.path).exists():
            mode = True  # SLURM requeued the job: resume where it stopped
        self.read_from = source or self.path  # where the entry came from, for messages
        self.item, self.entry = loop_entries.claim_loop_entry(
            self.path, algorithm=name, seed=seed, resume=mode, source=source
        )
        self.signals = StopSignals()
        self.waits = Waits(self.signals)

    def run(
        self,
        begin: Callable[[], Result],
        *,
        check: Callable[[], None] | None = None,
        until: int | None = None,
    ) -> Result:
        """The one frame every loop runs in: ``check()`` (the loop's :meth:`identify` and
        :meth:`reached`, and whatever it must restore even from a finished run), then the stored
        result if the checkpoint says the loop had finished (see :meth:`finished`: ``until``);
        otherwise, with the stop signals taken, ``begin()`` -- the loop itself -- and its final
        state written (:meth:`finish`).  A stop signal leaving the loop writes the checkpoint and
        raises :class:`~evocluster.checkpoint.Interrupted`; a loop that fails before it has
        begun gives its place in the checkpoint's run back (:meth:`handle`)."""
        try:
            if check is not None:
                check()
            done = self.finished(until)
        except BaseException as e:
            self.handle(e)
            raise
        if done is not None:
            return done
        observe.emit("loop", loop=self.name, seed=self.seed, generations=until)
        with self:
            try:
                return self.finish(begin())
            except BaseException as e:
                self.handle(e)
                raise

    def identify(
        self,
        fitness: Fitness,
        settings: dict[str, Any],
        population: Population | None = None,
        seed: int = 0,
    ) -> None:
        """Record what this loop's entry belongs to -- the job, the fitness's qualified name,
        the ``settings`` that shape the run -- and refuse an entry of the checkpoint that
        belongs to something else, naming what differs.  The population is compared by size,
        genome shape and dtype with the checkpoint's (``population`` called once, on a
        generator of its own, if it is a function: nothing of the run draws from it).

        What does not shape the run is not compared: the backend, the number of workers, the
        working directory (the job by its file's name), the checkpoint period, the statistics.
        An entry written before these were recorded is not checked.

        Raises:
            CheckpointError: ``mismatch``.
        """
        if self.path is None:
            return
        mine = {k: recorded(v) for k, v in settings.items()}
        ours: dict[str, Any] = {"job": loop_entries.job_name(), "fitness": function_name(fitness)}
        self.identity = ours | {"settings": mine}
        e = self.entry
        if e is None:
            return
        differ: list[tuple[str, Any, Any]] = [
            (name, e[name], ours[name])
            for name in ("job", "fitness")
            if e.get(name) is not None and ours[name] is not None and e[name] != ours[name]
        ]
        saved = e.get("settings") or {}
        differ += [(k, saved[k], v) for k, v in mine.items() if k in saved and saved[k] != v]
        state = e.get("state")
        if population is not None and state is not None:
            theirs = shape_of(np.asarray(state["genomes"]))
            this = shape_of(initial_genomes(population, _master_rng(int(seed))))
            if theirs != this:
                differ.append(("population", theirs, this))
        if differ:
            raise _checkpoint.CheckpointError(
                "mismatch",
                self.read_from or self.path,
                f"loop {self.item + 1} of the run it holds is {self.name}() of "
                + ", ".join(f"{k} {quote(a)}" for k, a, _ in differ)
                + "; this run's is of "
                + ", ".join(f"{k} {quote(b)}" for k, _, b in differ)
                + ": resume it with the job and settings that wrote it, or start afresh "
                "with another checkpoint path (or resume=False)",
            )

    def reached(self, until: int, what: str = "generations", done: int | None = None) -> None:
        """Refuse to resume a run that has done more than ``until`` (``what=until`` asks for
        fewer generations, or evaluations, iterations, than it holds: ``done``, by default the
        generation of its state): continuing it to more is the feature, returning more than
        asked for without a word is not.

        Raises:
            CheckpointError: ``mismatch``; ValueError: the same for ``resume=State``.
        """
        if self.given is not None and self.given.generation > until:
            raise ValueError(
                f"resume= is a state at generation {self.given.generation}, and this call asks "
                f"for {what}={until}: ask for {self.given.generation} or more to go on from it"
            )
        state = self.entry.get("state") if self.entry is not None else None
        if done is None:
            done = state["generation"] if state is not None else 0
        if done > until:
            raise _checkpoint.CheckpointError(
                "mismatch",
                self.read_from or self.path or "",
                f"{self.name}() had done {done} {what} in it, and this call asks for "
                f"{what}={until}: ask for {done} or more to continue it (exactly {done}: its "
                "result as saved), or start afresh (resume=False, or another checkpoint path)",
            )

    def _periods(self, every: float | None, every_generations: int | None) -> None:
        check_every(every, every_generations)
        if every is None and every_generations is None:
            every = _checkpoint.DEFAULT_EVERY
        self.every, self.every_generations = every, every_generations

    def __enter__(self) -> Checkpointing:
        if self.signals is not None:
            self.signals.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.signals is not None:
            self.signals.__exit__(kind, exc, tb)

    def _say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)

    def finished(self, until: int | None = None) -> Result | None:
        """The stored result, if the checkpoint says this loop had finished -- unless ``until``
        asks for more generations than it had: then it goes on from there."""
        e = self.entry
        if e is None or not e["finished"]:
            return None
        state = State.from_dict(e["state"])
        if until is not None and state.generation < until:
            self.entry = e | {"finished": False}
            return None
        self._say(
            f"{self.name}() had finished in {self.path} (generation {state.generation}, "
            f"{state.evaluations} evaluations): its result is returned, nothing is evaluated again"
        )
        return Result(state, np.asarray(e["best"]), np.asarray(e["best_fitness"]))

    def resumed(self) -> dict[str, Any] | None:
        """What the checkpoint holds for this loop, to go on from (``None``: start afresh)."""
        e = self.entry
        if e is None or e["finished"]:
            return None
        g = e["state"]["generation"] if e["state"] is not None else 0
        n = e["state"]["evaluations"] if e["state"] is not None else 0
        self._say(f"resumed {self.name}() from {self.path}: generation {g}, {n} evaluations")
        observe.emit(
            "checkpoint",
            action="resumed",
            loop=self.name,
            path=str(self.path),
            generation=g,
            evaluations=n,
        )
        self.saved_generation = g
        return e

    def start_state(self) -> State | None:
        """The state a generational loop resumes from: ``resume=State``, or the checkpoint's."""
        if self.given is not None:
            return self.given
        e = self.resumed()
        return State.from_dict(e["state"]) if e is not None else None

    def track(self, snapshot: Callable[[], tuple[State | None, Any]]) -> None:
        """The loop's state from now on; written at once when the checkpoint has none yet."""
        self.snapshot = snapshot
        if self.path is not None and self.entry is None:
            self.save()

    def safe_point(self, generation: int) -> None:
        """Between generations: stop if a signal asked to; write a checkpoint when one is due."""
        if self.signals is None:
            return
        if self.signals.signal is not None:
            self.stop()
        gens, every = self.every_generations, self.every
        if (gens is not None and generation - self.saved_generation >= gens) or (
            every is not None and time.monotonic() - self.saved_at >= every
        ):
            self.save()

    def save(self, result: Result | None = None) -> None:
        """Write the loop's state now (``result``: its final one)."""
        assert self.snapshot is not None and self.path is not None
        state, data = self.snapshot()
        if result is not None:
            state = result.state
        entry: dict[str, Any] = {
            "algorithm": self.name,
            "seed": self.seed,
            "finished": result is not None,
            "state": None if state is None else state.to_dict(),
            "loop": data,
        }
        if result is not None:
            entry |= {"best": result.best.copy(), "best_fitness": result.best_fitness.copy()}
        entry |= self.identity
        generation = state.generation if state is not None else 0
        loop_entries.write_loop_entry(
            self.path,
            self.item,
            entry,
            extra={
                "generation": generation,
                "evaluations": state.evaluations if state is not None else 0,
                "finished": result is not None,
                "job": self.identity.get("job"),
                "fitness": self.identity.get("fitness"),
            },
        )
        self.saved_at, self.saved_generation = time.monotonic(), generation
        observe.emit(
            "checkpoint",
            action="written",
            loop=self.name,
            path=str(self.path),
            generation=generation,
            evaluations=state.evaluations if state is not None else 0,
            finished=result is not None,
        )

    def stop(self, cause: Exception | None = None, finished: Result | None = None) -> NoReturn:
        """Write the checkpoint (unless ``finished`` was just written), say so on stderr, and
        raise :class:`~evocluster.checkpoint.Interrupted` (exit code 75)."""
        assert self.signals is not None and self.signals.signal is not None
        assert self.snapshot is not None and self.path is not None
        if finished is None:
            self.save()
            state = self.snapshot()[0]
        else:
            state = finished.state
        if finished is not None:
            what = "as it finished (its result is saved)"
        elif state is None:
            what = "before its first iteration"
        elif np.isnan(state.fitness).any() and state.evaluations == 0:
            what = "before its initial population was evaluated"
        else:
            what = f"at generation {state.generation}, {state.evaluations} evaluations"
        if finished is None:
            what += " (the evaluations in flight are abandoned: they run again on resume)"
        name = signal.Signals(self.signals.signal).name
        message = (
            f"{name}: {self.name}() stopped {what}; its checkpoint is {self.path}. Exit code "
            f"{_checkpoint.EXIT_TEMPFAIL}: run the same command with --resume (resume=True) to "
            "go on (automatic when SLURM requeues the job)"
        )
        print(f"evocluster: {message}", file=sys.stderr, flush=True)
        loop_entries.forget_run(self.path)  # the job's run ends here; a resume is a new one
        raise _checkpoint.Interrupted(message, self.path, self.signals.signal, state) from cause

    def handle(self, exc: BaseException) -> None:
        """The loop is left by ``exc``: if that is the stop, checkpoint and raise
        :class:`~evocluster.checkpoint.Interrupted` instead; otherwise return (the caller
        re-raises).  A loop that fails before it has begun (bad arguments) gives its place in
        the checkpoint's run back."""
        if self.path is not None and self.snapshot is None:  # failed before it began: its
            loop_entries.release_loop_entry(self.path, self.item)  # place is the next call's
        if self.signals is not None and self.snapshot is not None and self.signals.is_stop(exc):
            self.stop(exc if isinstance(exc, Exception) else None)

    def finish(self, result: Result) -> Result:
        """The loop has ended: write its final state; a signal received on the way still ends
        the process with 75 (the batch system asked it to stop), the result saved."""
        if self.path is None:
            return result
        self.save(result)
        if self.signals is not None and self.signals.signal is not None:
            self.stop(finished=result)
        return result


def quote(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)
