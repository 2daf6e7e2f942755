"""The evolutionary loops that run on the master, driven by any ``concurrent.futures.Executor``.

The engine never sees a backend: it is handed an executor (evocluster's, on any backend, or the
stdlib's) and sends it only the individuals whose fitness is unknown.  Every evaluation is wrapped
by :func:`evocluster.rng.call` with the run seed and a stable task key, so a fitness that draws
random numbers (``evocluster.rng()``) gets the same numbers whichever worker runs it.  The master's
own randomness (selection, variation) is one generator seeded from the run seed.  Hence, given a
seed, the result does not depend on the backend or the number of workers -- with one exception,
the steady-state loop with ``deterministic=False`` (see :func:`steady_state`).

Loops::

    generational()   select -> vary -> evaluate the new -> replace (elitism optional)
    mu_plus_lambda() / mu_comma_lambda()   evolution strategies, DEAP's varOr variation
    nsga2()          generational, multi-objective: non-dominated sort + crowding distance
    steady_state()   asynchronous: each returned evaluation is inserted at once and a new
                     offspring submitted -- no generational barrier, every worker kept busy
    ask_tell()       an external optimiser (``cma.CMAEvolutionStrategy``, ...) evaluated here

Representation: a population is a 2-D numpy array of genomes, shape ``(n, d)``; fitness a 2-D
float array ``(n, m)`` of raw objective values; ``weights`` say which way each objective is better
(``+1`` maximise, ``-1`` minimise, as DEAP's).  The state between generations is plain data
(:class:`State`): numpy arrays, numbers and the generator's state dict, so a checkpoint restores a
run bit-identically (``resume=state``).

Checkpoints (every loop): ``checkpoint=PATH`` writes the loop's whole state there -- when it
starts, every ``checkpoint_every`` seconds (default 60) and/or ``checkpoint_every_generations``,
when it ends, and when SIGUSR1 or SIGTERM asks it to stop; ``resume=True`` (or a path) continues
from it.  The launcher's ``--checkpoint``, ``--checkpoint-every``,
``--checkpoint-every-generations`` and ``--resume`` are the defaults of these keywords
(:func:`evocluster.checkpoint.set_defaults`), so a job checkpoints with no change.  A stop
abandons the evaluations in flight (they are evaluated again after the restart, under the same
task keys), writes the last complete state and raises
:class:`evocluster.checkpoint.Interrupted`, a ``SystemExit`` with code 75.  A resumed run ends
bit-identical to an uninterrupted one, on any backend and number of workers -- except
``steady_state(deterministic=False)``, whose results never were independent of timing.  A
checkpoint path is held by one run at a time; a checkpoint records the job, the fitness and the
settings that shape the run, and resuming it with others, or asking for fewer generations than it
holds, is refused (:class:`~evocluster.checkpoint.CheckpointError`, naming what differs).

Operator signatures (see :mod:`evocluster.operators`; bind options with ``functools.partial``)::

    select(scores, k, rng) -> indices          scores: 1-D, larger is better
    crossover(a, b, rng) -> (child1, child2)   a, b: (pairs, d)
    mutate(x, rng) -> x'                       x: (n, d)
"""

from __future__ import annotations

from .ask_tell import ask_tell
from .generational import generational, nsga2
from .state import Result, State
from .steady_state import steady_state
from .strategies import best, mu_comma_lambda, mu_plus_lambda

__all__ = [
    "Result",
    "State",
    "ask_tell",
    "best",
    "generational",
    "mu_comma_lambda",
    "mu_plus_lambda",
    "nsga2",
    "steady_state",
]
