"""Per-evaluation random streams that do not depend on who evaluates, or on how many workers exist.

A fitness that draws random numbers (a noisy simulation, a stochastic test set) must give the same
numbers for the same individual whatever worker runs it.  The seed therefore travels *with the
task*: :func:`call` is what the engine sends, ``call(fn, seed, key, *args)``, and on the worker it

* makes :func:`rng` return a ``numpy.random.Generator`` seeded from
  ``numpy.random.SeedSequence(seed, spawn_key=key)``, created on first use (the sequence alone
  costs 10-20 µs, 20-75 µs with the generator: a fitness that draws nothing does not pay it), and
* seeds Python's ``random`` module from the same ``(seed, key)`` (``random.seed`` of a string
  naming them, which ``random`` hashes with SHA-512; 6-11 µs).  Where the process does something
  else too -- the serial backend evaluates in the master's own process, SCOOP's root may
  evaluate -- the previous state of ``random`` is restored afterwards (~20 µs more; these three
  figures: benchmarks/RESULTS.md F11-F13, 2026-12-02).  An
  evocluster worker process only evaluates, and every evaluation seeds ``random`` anew, so it
  skips the restore.  ``random`` has one state per process: in a *thread* pool, evaluations
  running at once share it, and only :func:`rng` is reproducible there (evocluster's workers
  are processes).

``key`` is a stable identity of the evaluation (the engine uses ``(generation, index)``, or the
submission number in the steady-state loop), never a worker number or a clock.  A generator pickled
into every task would repeat the same numbers in every evaluation (the frozen-RNG trap); a generator
per worker would make results depend on scheduling.  Neither can happen here.

Users of :func:`evocluster.map` get the same with
``executor.map(functools.partial(evocluster.rng.call, fitness, seed), keys, population)``.

``evocluster.rng`` is this module, and calling it is calling :func:`rng`: ``evocluster.rng()``
inside a fitness, ``evocluster.rng.call`` and ``from evocluster.rng import rng`` all work.  (A
function and a module cannot share the name otherwise, and importing numpy in ``evocluster``'s
``__init__`` would slow down the start of every worker rank.)
"""

from __future__ import annotations

import importlib
import random
import sys
import threading
import time
import types
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["call", "master", "rng", "seed_sequence"]

_local = threading.local()  # the evaluation running on this thread (threads: the serial backend)


def seed_sequence(seed: int, key: int | Sequence[int]) -> np.random.SeedSequence:
    """The ``SeedSequence`` behind :func:`rng` in the evaluation ``key`` of the run seeded with
    ``seed``: ``np.random.default_rng(seed_sequence(seed, key))`` draws what ``rng()`` draws
    inside ``call(fn, seed, key, ...)`` (to replay one evaluation, or to seed another library).

    Raises:
        ValueError: ``seed`` or an element of ``key`` is negative.
    """
    ints = (key,) if isinstance(key, int | np.integer) else key
    return _sequence(seed, _checked(seed, ints))


def _sequence(seed: int, key: tuple[int, ...]) -> np.random.SeedSequence:
    """An evaluation's sequence (``key`` already checked): 2**32 first in the spawn key keeps its
    streams apart from :func:`master`'s."""
    return np.random.SeedSequence(seed, spawn_key=(1 << 32, *key))


def _checked(seed: int, key: Sequence[int]) -> tuple[int, ...]:
    """``key`` as a tuple of ints, once ``seed`` and it are known to be >= 0."""
    if seed < 0 or any(k < 0 for k in key):
        raise ValueError(f"seeds and task keys must be >= 0, got seed {seed} and key {tuple(key)}")
    return tuple(int(k) for k in key)


def master(seed: int) -> np.random.Generator:
    """The master's generator for selection and variation: a stream apart from every task's."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))


class _Evaluation:
    __slots__ = ("generator", "key", "seed")

    def __init__(self, seed: int, key: tuple[int, ...]) -> None:
        self.seed = seed
        self.key = key  # checked by call()
        self.generator: np.random.Generator | None = None  # made by the first rng() call

    def make_generator(self) -> np.random.Generator:
        self.generator = np.random.Generator(np.random.PCG64(_sequence(self.seed, self.key)))
        return self.generator


def _dedicated_worker() -> bool:
    """Whether this process is an evocluster worker serving a master (it only evaluates, so no
    one else reads its ``random`` state).  Looked up, not imported: a fitness evaluated in the
    master's process must not import the worker's modules."""
    calls = sys.modules.get("evocluster._calls")  # the worker's marks
    return calls is not None and bool(getattr(calls, "serving", False))


def rng() -> np.random.Generator:
    """The random generator of the evaluation running now (call it inside a fitness).

    Each call inside one evaluation returns the same generator, so draws continue its stream.

    Raises:
        RuntimeError: called outside an evaluation started by :func:`call` (the engine's loops
            use it; so can ``map`` users, see the module docstring).
    """
    ev: _Evaluation | None = getattr(_local, "current", None)
    if ev is None:
        raise RuntimeError(
            "evocluster.rng() is for a fitness evaluated by evocluster's engine (or through "
            "evocluster.rng.call): outside an evaluation there is no task to seed it from; on the "
            "master use evocluster.rng.master(seed)"
        )
    return ev.generator if ev.generator is not None else ev.make_generator()


def call(
    fn: Callable[..., Any], seed: int, key: int | Sequence[int], /, *args: Any, **kwargs: Any
) -> tuple[Any, float]:
    """Evaluate ``fn(*args, **kwargs)`` with its random streams seeded from ``(seed, key)``.

    ``key``: the evaluation's stable identity, an integer or a tuple of them (``(generation,
    index)``); never anything that depends on the worker or the clock.

    Returns:
        ``(value, seconds)``: what ``fn`` returned and how long it ran (the worker's own clock,
        for the engine's utilisation figures).
    """
    ev = _Evaluation(seed, _checked(seed, (key,) if isinstance(key, int | np.integer) else key))
    previous = getattr(_local, "current", None)
    state = None if _dedicated_worker() else random.getstate()
    random.seed(f"evocluster.rng {seed} {ev.key}")
    _local.current = ev
    start = time.perf_counter()
    try:
        value = fn(*args, **kwargs)
    finally:
        elapsed = time.perf_counter() - start
        _local.current = previous
        if state is not None:
            random.setstate(state)
    return value, elapsed


class _CallableModule(types.ModuleType):
    """This module's type: ``evocluster.rng()`` is :func:`rng`."""

    def __call__(self) -> np.random.Generator:
        return rng()

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # by name, as pickle and cloudpickle store any module: cloudpickle stores the submodules a
        # function of __main__ uses (``evocluster.rng()`` in a fitness of a notebook or of
        # ``python -c``), and finds only plain modules in its table
        return importlib.import_module, (self.__name__,)


sys.modules[__name__].__class__ = _CallableModule
