"""The asynchronous steady-state loop, :func:`steady_state`: no generational barrier, every
worker kept busy."""

from __future__ import annotations

import concurrent.futures as cf
import os
import queue
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import operators
from .checkpointing import Checkpointing
from .evaluation import Evaluator, finished
from .run import check_counts, check_probability, check_whole, start
from .settings import RunSettings
from .state import (
    CheckpointPath,
    Crossover,
    Fitness,
    Log,
    Mutate,
    Population,
    Result,
    Select,
    State,
    checked_weights,
    copy_plain,
    result_of,
)
from .statistics import add_row

_STEADY_KEY = 1  # task keys of the steady-state loop's offspring: (1, offspring number)


def steady_state(
    fitness: Fitness,
    population: Population,
    *,
    executor: cf.Executor,
    evaluations: int,
    seed: int,
    crossover: Crossover,
    mutate: Mutate,
    select: Select = operators.tournament,
    cxpb: float = 0.9,
    weights: Sequence[float] = (1.0,),
    deterministic: bool = False,
    in_flight: int | None = None,
    report_every: int | None = None,
    log: Log = print,
    resume: bool | str | os.PathLike[str] | None = None,
    checkpoint: CheckpointPath = None,
    checkpoint_every: float | None = None,
    checkpoint_every_generations: int | None = None,
    on_error: str | None = None,
    penalty: float | Sequence[float] | None = None,
) -> Result:
    """An asynchronous steady-state EA: no generational barrier, not even the first one.

    ``in_flight`` evaluations are kept submitted.  The first ones are the initial population;
    once two members are evaluated, offspring follow (two parents by ``select`` among the
    evaluated members, crossed with ``cxpb``, then always mutated).  Whenever an evaluation
    returns, an initial member takes its place in the population, an offspring replaces the
    worst member if it is at least as good, and the next submission leaves at once.  A worker
    never waits for the slowest evaluation of a generation.

    ``deterministic=False`` (default) integrates results in the order they complete (the ones
    that complete together as one batch, whose offspring are made in one vectorised step): the
    best utilisation, but the run depends on timing.  ``deterministic=True`` integrates them in
    submission order, one at a time: submission ``s`` is made from the population after results
    ``0 .. s - in_flight``, whatever the workers do, so the result depends only on the seed and
    ``in_flight``.  The price: while the oldest evaluation runs, finished ones wait to be
    integrated, and a worker may idle.  Give ``in_flight`` 2-4 times the number of workers.

    Checkpoints (as :func:`generational`; "generations" are statistics rows) hold the
    individuals in flight too: on resume they are submitted again, in order, under their own
    task keys, so a deterministic run resumes bit-identically (with the same ``in_flight``).
    A non-deterministic one resumes correctly, but no more reproducibly than it ran.

    Args:
        evaluations: offspring evaluations after the initial population.
        in_flight: evaluations kept submitted.  Default: ``deterministic=False``: three times
            the executor's workers (its ``max_workers``; a stdlib pool, which does not say:
            the machine's CPUs) (on evocluster's pools each worker holds one running and one
            prefetched, and the master one more, sent at once to the worker that frees first:
            on W3, 16 workers, utilisation 0.84-0.85 with twice, 0.86-0.87 with three times);
            ``deterministic=True``: 64, independent of the workers (a number that depends on
            them would make the result depend on them).
        report_every: a statistics row every this many integrated results (default: the
            population size).  Rows carry ``generation`` = rows so far - 1 and ``in_flight``.
        resume: ``True`` or a path: go on from the checkpoint (not from a :class:`State`,
            which lacks the individuals in flight).
        on_error, penalty: as :func:`generational`; a failed initial member takes its place
            with the penalty, a failed offspring is discarded unless the worst member is no
            better.  On evocluster's executors a failure's record is matched to its
            evaluation by the order of failures (the count is exact; when two fail at once
            their messages may be swapped) and retried attempts are not recorded.
        Others: as :func:`generational`.

    Returns:
        :class:`Result` (its state cannot be passed as ``resume=``: evaluations in flight are
        not part of it; resume from a checkpoint).
    """
    w = checked_weights(weights)
    check_probability("cxpb", cxpb)
    check_counts(evaluations=evaluations, seed=seed)
    for name, value in (("in_flight", in_flight), ("report_every", report_every)):
        if value is not None:
            check_whole(name, value, 1)
    if isinstance(resume, State):
        raise TypeError(
            "steady_state() resumes from a checkpoint (resume=True, or its path), not from a "
            "State: its individuals in flight are part of its state"
        )
    run = RunSettings.of(locals())
    checkpointing = Checkpointing("steady_state", seed, log, run.checkpoints)

    def check() -> None:
        checkpointing.identify(
            fitness,
            {
                "select": select, "crossover": crossover, "mutate": mutate, "cxpb": cxpb,
                "weights": weights, "deterministic": deterministic,
            },
            population,
            seed,
        )  # fmt: skip
        e = checkpointing.entry
        if e is not None and e["state"] is not None and e["loop"] is not None:
            # offspring sent so far (the initial members come first): those in flight are
            # sent again on resume, and taken in
            checkpointing.reached(
                evaluations, "evaluations", e["loop"]["submitted"] - len(e["state"]["genomes"])
            )

    def steady() -> Result:
        entry = checkpointing.resumed()
        state, rng, _ = start(
            "steady_state",
            population,
            seed,
            w,
            State.from_dict(entry["state"]) if entry is not None else None,
        )
        evaluator = Evaluator(run, checkpointing.waits)
        window = (
            in_flight if in_flight is not None else (64 if deterministic else 3 * evaluator.workers)
        )
        if window < 1:
            raise ValueError(f"in_flight must be >= 1, got {window}")
        loop = _SteadyState(
            evaluator,
            state,
            rng,
            evaluations=evaluations,
            select=select,
            crossover=crossover,
            mutate=mutate,
            cxpb=cxpb,
            deterministic=deterministic,
            window=window,
            every=report_every or len(state.genomes),
        )
        if entry is not None:
            loop.restore(entry["loop"])
        checkpointing.track(loop.snapshot)
        return loop.run(checkpointing)

    return checkpointing.run(steady, check=check)


class _SteadyState:
    """The loop of :func:`steady_state`: its whole state as attributes, one method per step.

    Submissions are numbered ``s = 0, 1, ...``: the first ``n`` are the initial members, in
    order, the rest offspring.  :meth:`key` is the one place a task key is made from ``s``, and
    :meth:`send` the one place an individual is submitted, so an individual sent again under its
    number gets the same random streams.  The individuals in flight are plain data
    (``in_flight``: submission -> genome); ``futures`` maps each running future back to its
    submission.  :meth:`snapshot` and :meth:`restore` are the checkpoint's view of it.
    """

    def __init__(
        self,
        evaluator: Evaluator,
        state: State,
        rng: np.random.Generator,
        *,
        evaluations: int,
        select: Select,
        crossover: Crossover,
        mutate: Mutate,
        cxpb: float,
        deterministic: bool,
        window: int,
        every: int,
    ) -> None:
        self.evaluator, self.state, self.rng = evaluator, state, rng
        self.select, self.crossover, self.mutate, self.cxpb = select, crossover, mutate, cxpb
        self.deterministic = deterministic
        self.window = window  # evaluations kept submitted
        self.every = every  # a statistics row every this many results taken in
        self.n = len(state.genomes)
        self.total = self.n + evaluations  # submissions in the whole run
        self.initial = state.genomes.copy()  # sent first, in order
        self.scores = np.full(self.n, -np.inf)  # weighted fitness of the members: larger better
        self.known = np.zeros(self.n, dtype=bool)  # members evaluated so far
        self.submitted = 0  # submissions so far: the next one's number
        self.integrated = 0  # results taken in so far
        self.since = 0  # results taken in since the last statistics row
        self.t0 = time.perf_counter()  # when the current statistics row began
        self.in_flight: dict[int, np.ndarray] = {}  # submission -> genome, submitted not taken in
        self.futures: dict[cf.Future[Any], int] = {}  # -> submission, in submission order
        self.order: deque[cf.Future[Any]] = deque()  # submission order, for deterministic mode
        self.finished: queue.SimpleQueue[cf.Future[Any]] = queue.SimpleQueue()  # by callbacks

    _SAVED = ("initial", "scores", "known", "submitted", "integrated", "since", "in_flight")

    def snapshot(self) -> tuple[State, dict[str, Any]]:
        """The loop as plain data, at a point where no result is half taken in."""
        self.state.rng = dict(self.rng.bit_generator.state)
        data = {name: copy_plain(getattr(self, name)) for name in self._SAVED}
        data["in_flight"] = {s: g.copy() for s, g in self.in_flight.items()}
        return self.state, data | {"window": self.window, "deterministic": self.deterministic}

    def restore(self, data: dict[str, Any]) -> None:
        """Take the counters, the members' scores and the individuals in flight of a snapshot
        (:meth:`run` submits those again, in order, under their own keys)."""
        if self.deterministic and (data["deterministic"], data["window"]) != (True, self.window):
            raise ValueError(
                f"the checkpoint was written by a run with deterministic={data['deterministic']}"
                f" and in_flight={data['window']}: resume a deterministic run with the same "
                "in_flight (its result depends on it)"
            )
        for name in self._SAVED:
            setattr(self, name, data[name])

    def key(self, s: int) -> tuple[int, int]:
        """The task key of submission ``s``: ``(0, s)`` for an initial member (as in every
        loop's generation 0), ``(_STEADY_KEY, s - n)`` for an offspring."""
        return (0, s) if s < self.n else (_STEADY_KEY, s - self.n)

    def run(self, checkpointing: Checkpointing) -> Result:
        """Submit (first, again, the individuals in flight of a restored run), take in what
        finishes, submit again, until ``total`` are taken in; whatever is still in flight when it
        fails or stops is cancelled."""
        try:
            for s in sorted(self.in_flight):
                self.send(s, self.in_flight[s])
            self.fill()
            while self.futures:
                checkpointing.safe_point(self.state.generation)
                for f in self.next_finished():
                    self.take(f)
                self.fill()
        finally:
            for f in self.futures:
                f.cancel()
        self.state.generation -= 1  # rows are numbered from 0, as generations are elsewhere
        self.state.rng = dict(self.rng.bit_generator.state)
        return result_of(self.state, self.evaluator.weights)

    def fill(self) -> None:
        """Fill the window: initial members first, then offspring once two are evaluated."""
        s = self.submitted
        room = min(self.window - len(self.futures), self.total - s)
        if room <= 0:  # (a restored run may have more in flight than its window now)
            return
        genomes = list(self.initial[s : s + room]) if s < self.n else []
        if len(genomes) < room and self.known.sum() >= 2:
            genomes.extend(self.offspring(room - len(genomes)))
        for genome in genomes:
            self.send(self.submitted, genome)
            self.submitted += 1

    def offspring(self, k: int) -> np.ndarray:
        """``k`` new genomes from the evaluated members, in one vectorised step."""
        members = np.flatnonzero(self.known) if not self.known.all() else None
        pool = self.scores if members is None else self.scores[members]
        picked = self.select(pool, 2 * k, self.rng)
        if members is not None:
            picked = members[picked]
        a, b = self.state.genomes[picked[0::2]], self.state.genomes[picked[1::2]]
        crossed = self.rng.random(k) < self.cxpb
        if crossed.any():
            a[crossed] = self.crossover(a[crossed], b[crossed], self.rng)[0]
        return np.asarray(self.mutate(a, self.rng))

    def send(self, s: int, genome: np.ndarray) -> None:
        """Submit ``genome`` as submission ``s``."""
        f = self.evaluator.submit(genome, self.key(s))
        self.futures[f] = s
        self.in_flight[s] = genome
        if self.deterministic:
            self.order.append(f)
        f.add_done_callback(self.finished.put)

    def next_finished(self) -> list[cf.Future[Any]]:
        """The futures to take in next, in submission order: deterministic, the oldest (waiting
        for it); otherwise every one finished by now (waiting for one if none is)."""
        if self.deterministic:
            return [self.order.popleft()]
        done = _drain(self.finished)
        if not done:  # nothing yet: wait, in steps (under SCOOP, waiting drives it)
            with self.evaluator.waits:
                self.evaluator.waits.until(lambda step: finished(self.futures, step))
            done = [f for f in self.futures if f.done()]
        return sorted({f for f in done if f in self.futures}, key=self.futures.__getitem__)

    def take(self, f: cf.Future[Any]) -> None:
        """Take in a finished evaluation: its value into the population, the counts, and a
        statistics row when one is due."""
        s = self.futures[f]
        value, bad = self.evaluator.collect(f, self.key(s), self.state)  # a stop may interrupt it:
        del self.futures[f]  # nothing is changed before it returns, the individual stays in flight
        genome = self.in_flight.pop(s)
        self.replace(s, genome, value, bad)
        self.integrated += 1
        self.since += 1
        self.state.evaluations += 1
        if self.since == self.every or self.integrated == self.total:
            self.report()

    def replace(self, s: int, genome: np.ndarray, value: np.ndarray, bad: bool) -> None:
        """An initial member takes its own place; an offspring replaces the worst member if it
        is at least as good, and is discarded otherwise."""
        score = value[0] * self.evaluator.weights[0]
        if s < self.n:
            slot = s
        else:
            members = np.flatnonzero(self.known)
            slot = int(members[np.argmin(self.scores[members])])
            if score < self.scores[slot]:
                return  # worse than the worst: discarded
        self.state.genomes[slot], self.state.fitness[slot] = genome, value
        self.state.penalized[slot] = bad
        self.scores[slot] = score
        self.known[slot] = True

    def report(self) -> None:
        """A statistics row of the evaluated members since the last one, then a new period."""
        add_row(
            self.evaluator,
            self.state,
            self.since,
            time.perf_counter() - self.t0,
            {"in_flight": len(self.futures)},
            self.known,
        )
        self.state.generation += 1
        self.since, self.t0 = 0, time.perf_counter()


def _drain(q: queue.SimpleQueue[cf.Future[Any]]) -> list[cf.Future[Any]]:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out
