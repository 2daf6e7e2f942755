"""An external ask/tell optimiser (``cma.CMAEvolutionStrategy``, ...) evaluated on the
executor: :func:`ask_tell`."""

from __future__ import annotations

import concurrent.futures as cf
import os
import pickle
import random
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import checkpoint as _checkpoint
from .checkpointing import Checkpointing
from .evaluation import Evaluator
from .run import check_counts, check_whole
from .settings import RunSettings
from .state import CheckpointPath, Fitness, Log, Result, State, checked_weights
from .statistics import add_row


def ask_tell(
    optimizer: Any,
    fitness: Fitness,
    *,
    executor: cf.Executor,
    seed: int,
    iterations: int | None = None,
    weights: Sequence[float] = (-1.0,),
    log: Log = print,
    resume: bool | str | os.PathLike[str] | None = None,
    checkpoint: CheckpointPath = None,
    checkpoint_every: float | None = None,
    checkpoint_every_generations: int | None = None,
    on_error: str | None = None,
    penalty: float | Sequence[float] | None = None,
) -> Result:
    """Evaluate an external ask/tell optimiser's candidates on the executor.

    Each iteration: ``xs = optimizer.ask()``, their fitness evaluated in parallel (task keys
    ``(iteration, index)``), ``optimizer.tell(xs, values)``; until ``optimizer.stop()`` is true
    (when it has one) or ``iterations`` are done.  The optimiser's own randomness is its own:
    seed it too (``cma.CMAEvolutionStrategy(x0, sigma0, {"seed": seed})``).

    Checkpoints (as :func:`generational`; "generations" are iterations) need an optimiser that
    plain pickle can store (``cma``'s can; its class importable by name, not a lambda): before
    each iteration the loop keeps it pickled, with Python's ``random`` and numpy's global random
    state (``cma`` draws from the latter).  On resume the saved optimiser's attributes replace
    those of ``optimizer`` -- the object passed in ends in the state an uninterrupted run would
    have left it in -- and the global random states are restored.

    Args:
        optimizer: has ``ask()`` and ``tell(solutions, values)``; ``stop()`` optional.
        fitness: ``fitness(x) -> number``; values are told as they are, so minimise with the
            ``cma`` package (``weights=(-1.0,)``, the default, says so to the statistics).
        iterations: a cap on ask/tell rounds (``None``: until ``stop()``).
        resume: ``True`` or a path: go on from the checkpoint (not from a :class:`State`,
            which lacks the optimiser).
        on_error, penalty: as :func:`generational`; the optimiser is told the penalty of a
            failed candidate (give a finite ``penalty`` to an optimiser that cannot take
            ``inf``), and ``best`` is never a failed one while another was evaluated.
        Others: as :func:`generational`.

    Returns:
        :class:`Result` whose state holds the last candidates; ``best`` is the best evaluated.

    Raises:
        ValueError: neither ``iterations`` nor ``optimizer.stop`` bounds the run.
        TypeError: checkpoints of an optimiser whose attributes cannot be replaced.
        EvaluationError: an evaluation failed.
        CheckpointError: the optimiser cannot be pickled, or the checkpoint cannot be resumed.
    """
    w = checked_weights(weights)
    if len(w) != 1:
        raise ValueError("ask_tell() optimises one objective")
    check_counts(seed=seed)
    if iterations is not None:
        check_whole("iterations", iterations, 1)
    if iterations is None and not callable(getattr(optimizer, "stop", None)):
        raise ValueError("give iterations=, or an optimizer with a stop() method")
    if isinstance(resume, State):
        raise TypeError(
            "ask_tell() resumes from a checkpoint (resume=True, or its path), not from a State: "
            "the optimiser's state is part of it"
        )
    run = RunSettings.of(locals())
    checkpointing = Checkpointing("ask_tell", seed, log, run.checkpoints)
    loops: list[_AskTell] = []

    def check() -> None:
        checkpointing.identify(fitness, {"optimizer": type(optimizer), "weights": weights})
        if iterations is not None:
            checkpointing.reached(iterations, "iterations")
        loop = _AskTell(optimizer, Evaluator(run, checkpointing.waits), checkpointing)
        # finished or not: the optimiser passed in takes its state
        if checkpointing.entry is not None:
            loop.restore(checkpointing.entry["loop"], checkpointing.entry["state"])
        loops.append(loop)

    def asking() -> Result:
        (loop,) = loops
        checkpointing.resumed()
        loop.mark()
        checkpointing.track(loop.snapshot)
        return loop.run(iterations)

    return checkpointing.run(asking, check=check)


class _AskTell:
    """The loop of :func:`ask_tell`; with checkpoints, :meth:`mark` keeps the optimiser pickled
    (and the global random states) at the start of each iteration: a stop during the
    evaluations saves that, not the optimiser already asked."""

    def __init__(self, optimizer: Any, evaluator: Evaluator, checkpointing: Checkpointing) -> None:
        self.optimizer, self.evaluator, self.checkpointing = optimizer, evaluator, checkpointing
        self.weights = tuple(float(x) for x in evaluator.weights)
        self.seed = checkpointing.seed
        self.state: State | None = None  # after the last iteration
        self.best: tuple[float, np.ndarray, np.ndarray] | None = None  # (score, genome, fitness)
        self.it = 0
        self.marked: dict[str, Any] | None = None
        if checkpointing.path is not None and not hasattr(optimizer, "__dict__"):
            raise TypeError(
                f"ask_tell() checkpoints restore the optimiser's attributes: a "
                f"{type(optimizer).__name__} has no __dict__ (run it with checkpoint=False)"
            )

    def mark(self) -> None:
        """Keep the optimiser and the global random states as they are now (checkpoints only)."""
        if self.checkpointing.path is None:
            return
        try:
            pickled = pickle.dumps(self.optimizer, protocol=5)
        except Exception as e:
            raise _checkpoint.CheckpointError(
                "unwritable",
                self.checkpointing.path,
                f"ask_tell() saves the optimiser with pickle, and a {type(self.optimizer).__name__}"
                f" cannot be pickled ({type(e).__name__}: {e}): make it picklable, or run this "
                "loop with checkpoint=False",
            ) from e
        self.marked = {
            "optimizer": pickled,
            "random": random.getstate(),
            "numpy": np.random.get_state(),
            "it": self.it,
            "best": self.best,
        }

    def snapshot(self) -> tuple[State | None, dict[str, Any] | None]:
        return self.state, self.marked

    def restore(self, data: dict[str, Any], state: dict[str, Any] | None) -> None:
        saved = pickle.loads(data["optimizer"])
        if type(saved) is not type(self.optimizer):
            raise ValueError(
                f"the checkpoint holds a {type(saved).__name__} optimiser, this call passes a "
                f"{type(self.optimizer).__name__}"
            )
        vars(self.optimizer).clear()
        vars(self.optimizer).update(vars(saved))
        random.setstate(data["random"])
        np.random.set_state(data["numpy"])
        self.it, self.best = data["it"], data["best"]
        self.state = State.from_dict(state) if state is not None else None

    def run(self, iterations: int | None) -> Result:
        optimizer, evaluator = self.optimizer, self.evaluator
        stop = getattr(optimizer, "stop", None)
        while iterations is None or self.it < iterations:
            self.mark()
            self.checkpointing.safe_point(self.it)
            if callable(stop) and stop():
                break
            t0 = time.perf_counter()
            xs = optimizer.ask()
            genomes = np.array(xs, dtype=np.float64)
            previous = self.state or State(
                "ask_tell", self.seed, 0, genomes, np.empty((0, 1)), self.weights, {}
            )
            keys = [(self.it, i) for i in range(len(genomes))]
            values, bad = evaluator.evaluate(genomes, keys, previous)
            optimizer.tell(xs, values[:, 0].tolist())
            self.it += 1
            self.state = State(
                algorithm="ask_tell",
                seed=self.seed,
                generation=self.it,
                genomes=genomes,
                fitness=values,
                weights=self.weights,
                rng={},
                evaluations=previous.evaluations + len(genomes),
                history=previous.history,
                penalized=bad,
                failures=previous.failures,
            )
            self.keep_best(genomes, values, bad)
            assert self.best is not None
            best_fitness = float(self.best[2][0])
            add_row(
                evaluator,
                self.state,
                len(genomes),
                time.perf_counter() - t0,
                {"best": best_fitness},
            )
        if self.state is None or self.best is None:
            raise ValueError("the optimizer stopped before its first iteration")
        return Result(self.state, self.best[1], self.best[2])

    def keep_best(self, genomes: np.ndarray, values: np.ndarray, bad: np.ndarray) -> None:
        """The best evaluated so far: a candidate that failed only while none has not (its
        score then counts as ``-inf``, so the first one that does not fail replaces it)."""
        scores = np.where(bad, -np.inf, values[:, 0] * self.evaluator.weights[0])
        i = int(np.argmax(scores))
        if self.best is None or scores[i] > self.best[0]:
            self.best = (float(scores[i]), genomes[i].copy(), values[i].copy())
