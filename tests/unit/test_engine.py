"""The engine's loops, per-task random streams and shared data, on in-process executors.

The engine is handed a ``concurrent.futures.Executor``: these tests use evocluster's serial
backend, the stdlib's thread pool (which completes tasks out of order) and a local process pool.
The launched jobs under MPI and SCOOP are in test_jobs.py.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import os
import pickle
import random
import time
from typing import Any

import numpy as np
import pytest
from helpers import require_module

import evocluster
from evocluster import _sharing as sharing
from evocluster import engine, pareto
from evocluster import operators as ops
from evocluster.rng import call as seeded_call

BITS = functools.partial(ops.bit_flip, p=0.05)


def noisy_onemax(genome: np.ndarray) -> float:
    """Ones, plus noise from both per-task streams: equal only if the seeding is per task."""
    return float(genome.sum()) + 1e-3 * evocluster.rng().random() + 1e-6 * random.random()


def jittery_onemax(genome: np.ndarray) -> float:
    """For thread pools: a random sleep makes threads finish out of order; the noise comes from
    ``evocluster.rng()`` only (Python's ``random`` is one state per process, shared by threads:
    its per-task seeding holds in processes, not in threads)."""
    rng = evocluster.rng()
    time.sleep(0.002 * rng.random())
    return float(genome.sum()) + 1e-3 * rng.random()


def sphere(x: np.ndarray) -> float:
    return float(np.sum(x * x))


def onemax_run(
    executor: cf.Executor, generations: int = 6, fitness: Any = noisy_onemax, **kw: Any
) -> engine.Result:
    args: dict[str, Any] = {
        "executor": executor,
        "generations": generations,
        "seed": 7,
        "crossover": ops.two_point,
        "mutate": BITS,
        "elitism": 1,
        "log": None,
    }
    return engine.generational(fitness, lambda rng: ops.random_bits(30, 20, rng), **args | kw)


TIMING = {"seconds", "evals_per_s", "utilisation"}


def untimed(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


# ------------------------------------------------------------------ rng
def test_rng_streams_are_per_task_and_repeatable() -> None:
    def draw() -> tuple[float, float]:
        return float(evocluster.rng().random()), random.random()

    a, _ = seeded_call(draw, 1, (0, 5))
    b, _ = seeded_call(draw, 1, (0, 5))
    c, _ = seeded_call(draw, 1, (0, 6))
    d, _ = seeded_call(draw, 2, (0, 5))
    assert a == b
    assert len({a[0], c[0], d[0]}) == 3 and len({a[1], c[1], d[1]}) == 3


def test_rng_continues_its_stream_within_one_evaluation() -> None:
    def two() -> tuple[float, float]:
        return float(evocluster.rng().random()), float(evocluster.rng().random())

    (x, y), _ = seeded_call(two, 3, (1,))
    assert x != y


def test_rng_outside_an_evaluation_says_where_it_works() -> None:
    with pytest.raises(RuntimeError, match=r"evocluster\.rng\.master"):
        evocluster.rng()


def test_random_module_state_is_restored_after_an_evaluation() -> None:
    random.seed(123)
    expected = random.Random(123).random()
    seeded_call(random.random, 9, (0, 0))
    assert random.random() == expected


def test_the_seeding_does_not_freeze_one_stream_into_every_task(serial: Any) -> None:
    same = np.zeros((8, 4), dtype=bool)  # identical genomes: only the task key differs
    values = list(serial.map(functools.partial(seeded_call, noisy_onemax, 5), range(8), same))
    assert len({v for v, _ in values}) == 8


def test_map_users_get_the_same_numbers_on_any_executor(serial: Any, local2: Any) -> None:
    genomes = list(np.eye(6, dtype=bool))
    keys = [(0, i) for i in range(6)]
    fn = functools.partial(seeded_call, noisy_onemax, 11)
    got = [[v for v, _ in ex.map(fn, keys, genomes)] for ex in (serial, local2)]
    with cf.ThreadPoolExecutor(3) as threads:
        got.append([v for v, _ in threads.map(fn, keys, genomes)])
    assert got[0] == got[1] == got[2]


def test_negative_seeds_are_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        seeded_call(random.random, -1, (0,))


# ------------------------------------------------------------------ generational
def test_generational_improves_and_reports_every_generation(serial: Any) -> None:
    lines: list[str] = []
    r = onemax_run(serial, generations=15, log=lines.append)
    assert len(lines) == len(r.history) == 16
    assert lines[0].startswith("gen    0") and "util" in lines[-1]
    assert r.history[-1]["max"][0] > r.history[0]["max"][0]
    assert r.best_fitness[0] == r.fitness[:, 0].max()
    assert r.state.evaluations == sum(row["evals"] for row in r.history)
    for row in r.history:
        assert row["min"][0] <= row["mean"][0] <= row["max"][0] and row["std"][0] >= 0


def test_elitism_never_loses_the_best(serial: Any) -> None:
    r = onemax_run(serial, generations=12, mutate=functools.partial(ops.bit_flip, p=0.3))
    best = [row["max"][0] for row in r.history]
    assert best == sorted(best)


def test_only_changed_individuals_are_evaluated(serial: Any) -> None:
    r = onemax_run(serial, generations=4, cxpb=0.0, mutpb=0.0)
    assert [row["evals"] for row in r.history] == [30, 0, 0, 0, 0]


def test_same_seed_same_result_on_serial_threads_and_processes(serial: Any, local2: Any) -> None:
    digests = {onemax_run(serial).digest(), onemax_run(local2).digest()}
    assert len(digests) == 1
    assert onemax_run(serial, seed=8).digest() not in digests
    with cf.ThreadPoolExecutor(4) as threads:
        threaded = onemax_run(threads, fitness=jittery_onemax).digest()
    assert threaded == onemax_run(serial, fitness=jittery_onemax).digest()


@pytest.mark.parametrize("loop", ["generational", "mu_plus_lambda", "mu_comma_lambda", "nsga2"])
def test_resuming_from_a_state_is_bit_identical(serial: Any, loop: str) -> None:
    def run(generations: int, resume: engine.State | None = None) -> engine.Result:
        common: dict[str, Any] = {
            "executor": serial,
            "generations": generations,
            "seed": 3,
            "log": None,
            "resume": resume,
            "mutate": functools.partial(ops.gaussian, sigma=0.2, p=0.5),
            "crossover": functools.partial(ops.blend, alpha=0.3),
        }
        init = functools.partial(ops.random_reals, 12, 4, low=0.0, high=1.0)
        if loop == "nsga2":
            return engine.nsga2(
                pareto.zdt1,
                init,
                weights=(-1.0, -1.0),
                **common
                | {
                    "crossover": functools.partial(ops.sbx, eta=15.0, low=0.0, high=1.0),
                    "mutate": functools.partial(
                        ops.polynomial, eta=20.0, low=0.0, high=1.0, p=0.25
                    ),
                },
            )
        if loop == "generational":
            return engine.generational(sphere, init, weights=(-1.0,), **common)
        fn = getattr(engine, loop)
        return fn(sphere, init, lambda_=16, weights=(-1.0,), **common)  # type: ignore[no-any-return]

    whole = run(6)
    half = run(3).state
    restored = engine.State.from_dict(pickle.loads(pickle.dumps(half.to_dict())))
    resumed = run(6, restored)
    assert resumed.digest() == whole.digest()
    assert untimed(resumed.history) == untimed(whole.history)


def test_resume_refuses_another_loop_or_seed(serial: Any) -> None:
    state = onemax_run(serial, generations=1).state
    with pytest.raises(ValueError, match="seed"):
        onemax_run(serial, generations=2, seed=8, resume=state)
    with pytest.raises(ValueError, match="generational"):
        engine.mu_plus_lambda(
            noisy_onemax, state.genomes, executor=serial, generations=2, seed=7, lambda_=4,
            crossover=ops.two_point, mutate=BITS, resume=state, log=None,
        )  # fmt: skip


def test_corrupt_state_is_refused() -> None:
    with pytest.raises(ValueError, match="missing"):
        engine.State.from_dict({"algorithm": "generational"})
    good = engine.State("generational", 1, 0, np.zeros((3, 2)), np.zeros((2, 1)), (1.0,), {})
    with pytest.raises(ValueError, match="consistent"):
        engine.State.from_dict(good.to_dict())


# ------------------------------------------------------------------ failures
def fails_on_generation_two(genome: np.ndarray) -> float:
    if genome.sum() > 14:
        raise ZeroDivisionError("a fitness bug")
    return float(genome.sum())


def test_a_raising_fitness_names_the_task_and_keeps_the_last_state(serial: Any) -> None:
    with pytest.raises(evocluster.EvaluationError) as info:
        onemax_run(serial, generations=30, fitness=fails_on_generation_two)
    err = info.value
    assert isinstance(err.__cause__, ZeroDivisionError)
    assert "a fitness bug" in str(err) and str(err.key) in str(err) and "resume=" in str(err)
    state = err.state
    assert isinstance(state, engine.State) and not np.isnan(state.fitness).any()
    assert state.generation == err.key[0] - 1
    # the kept state resumes with a fixed fitness
    r = onemax_run(serial, generations=state.generation + 2, fitness=sphere, resume=state)
    assert r.state.generation == state.generation + 2


@pytest.mark.parametrize("bad", ["text", (1.0, 2.0), float("nan")])
def test_a_bad_fitness_value_is_explained(serial: Any, bad: Any) -> None:
    with pytest.raises(evocluster.EvaluationError, match=r"returned .*number"):
        onemax_run(serial, fitness=functools.partial(_constant, bad))


def _constant(value: Any, genome: np.ndarray) -> Any:
    return value


def test_arguments_are_validated(serial: Any) -> None:
    with pytest.raises(ValueError, match="nsga2"):
        onemax_run(serial, weights=(1.0, 1.0))
    with pytest.raises(ValueError, match="cxpb"):
        onemax_run(serial, cxpb=1.5)
    with pytest.raises(ValueError, match="elitism"):
        onemax_run(serial, elitism=30)
    with pytest.raises(TypeError, match="Executor"):
        onemax_run(map)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lambda_"):
        engine.mu_comma_lambda(
            sphere, np.zeros((5, 2)), executor=serial, generations=1, seed=0, lambda_=3,
            crossover=ops.blend, mutate=functools.partial(ops.gaussian, sigma=1.0), log=None,
        )  # fmt: skip


# ------------------------------------------------------------------ other loops
def test_evolution_strategies_minimise_the_sphere(serial: Any) -> None:
    for loop in (engine.mu_plus_lambda, engine.mu_comma_lambda):
        r = loop(
            sphere, functools.partial(ops.random_reals, 10, 3, low=-3.0, high=3.0),
            executor=serial, generations=25, seed=1, lambda_=30, weights=(-1.0,),
            crossover=functools.partial(ops.blend, alpha=0.3),
            mutate=functools.partial(ops.gaussian, sigma=0.3), log=None,
        )  # fmt: skip
        assert r.best_fitness[0] < 0.1 * r.history[0]["min"][0]
        assert len(r.population) == 10


def test_plus_strategy_never_loses_its_best(serial: Any) -> None:
    r = engine.mu_plus_lambda(
        sphere, functools.partial(ops.random_reals, 6, 3, low=-3.0, high=3.0),
        executor=serial, generations=10, seed=2, lambda_=6, weights=(-1.0,),
        crossover=ops.blend, mutate=functools.partial(ops.gaussian, sigma=1.0), log=None,
    )  # fmt: skip
    mins = [row["min"][0] for row in r.history]
    assert mins == sorted(mins, reverse=True)


def test_nsga2_moves_towards_the_zdt1_front(serial: Any) -> None:
    def hv(state: engine.State) -> dict[str, float]:
        return {"hv": pareto.hypervolume(state.fitness, (1.1, 11.0))}

    r = engine.nsga2(
        pareto.zdt1, functools.partial(ops.random_reals, 40, 10, low=0.0, high=1.0),
        executor=serial, generations=25, seed=4, weights=(-1.0, -1.0),
        crossover=functools.partial(ops.sbx, eta=15.0, low=0.0, high=1.0),
        mutate=functools.partial(ops.polynomial, eta=20.0, low=0.0, high=1.0, p=0.1),
        report=hv, log=None,
    )  # fmt: skip
    assert r.history[-1]["hv"] > r.history[0]["hv"] > 0
    first = pareto.non_dominated_fronts(-r.fitness)[0]
    assert r.best.tolist() in r.population[first].tolist()


def test_steady_state_deterministic_does_not_depend_on_the_executor(serial: Any) -> None:
    def run(ex: cf.Executor) -> engine.Result:
        return engine.steady_state(
            jittery_onemax, lambda rng: ops.random_bits(10, 16, rng), executor=ex,
            evaluations=60, seed=5, crossover=ops.uniform, mutate=BITS, deterministic=True,
            in_flight=6, log=None,
        )  # fmt: skip

    with cf.ThreadPoolExecutor(1) as one, cf.ThreadPoolExecutor(6) as six:
        results = [run(serial), run(one), run(six)]
    assert len({r.digest() for r in results}) == 1
    assert results[0].state.evaluations == 70


def test_steady_state_replaces_the_worst(serial: Any) -> None:
    lines: list[str] = []
    r = engine.steady_state(
        noisy_onemax, lambda rng: ops.random_bits(10, 16, rng), executor=serial,
        evaluations=80, seed=5, crossover=ops.uniform, mutate=BITS, report_every=10,
        deterministic=True, in_flight=4, log=lines.append,
    )  # fmt: skip
    assert r.state.evaluations == 90 and len(r.population) == 10
    assert len(lines) == len(r.history) == 9  # one per 10 integrated results
    mins = [row["min"][0] for row in r.history]
    assert mins == sorted(mins)  # an offspring only ever replaces the worst
    assert not np.isnan(r.fitness).any()


def test_steady_state_keeps_the_window_full(serial: Any) -> None:
    # a stdlib pool does not say how wide it is (evocluster's executors do: max_workers): the
    # engine takes it as wide as the machine's CPUs
    w = os.cpu_count() or 1
    with cf.ThreadPoolExecutor(w) as threads:
        r = engine.steady_state(
            jittery_onemax, lambda rng: ops.random_bits(10, 16, rng), executor=threads,
            evaluations=200, seed=5, crossover=ops.uniform, mutate=BITS, report_every=10,
            log=None,
        )  # fmt: skip
    assert r.state.evaluations == 210 and not np.isnan(r.fitness).any()
    # default window: 3 x w workers; a row is written as one returns, before the next leaves
    in_flight = [row["in_flight"] for row in r.history[:-1]]
    assert max(in_flight) <= 3 * w - 1 and np.median(in_flight) > 2 * w, in_flight


class RandomSearch:
    """A minimal ask/tell optimiser: Gaussian steps around the best point so far."""

    def __init__(self, x0: list[float], seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.best = (np.inf, np.asarray(x0, dtype=float))
        self.told = 0

    def ask(self) -> list[np.ndarray]:
        return [self.best[1] + self.rng.normal(0, 0.5, len(self.best[1])) for _ in range(8)]

    def tell(self, xs: list[np.ndarray], values: list[float]) -> None:
        self.told += len(values)
        i = int(np.argmin(values))
        if values[i] < self.best[0]:
            self.best = (values[i], xs[i])

    def stop(self) -> bool:
        return self.best[0] < 1e-2


def test_ask_tell_runs_an_external_optimiser(serial: Any) -> None:
    opt = RandomSearch([2.0, 2.0], 0)
    r = engine.ask_tell(opt, sphere, executor=serial, seed=1, iterations=40, log=None)
    assert opt.told == r.state.evaluations == 8 * r.state.generation
    assert r.best_fitness[0] == opt.best[0]
    assert r.best_fitness[0] < 8.0


def test_ask_tell_drives_cma_es(serial: Any, local2: Any) -> None:
    cma = require_module("cma")  # of the test extra: skipped if missing, failed under CI

    def run(ex: cf.Executor) -> engine.Result:
        es = cma.CMAEvolutionStrategy(4 * [1.0], 0.5, {"seed": 3, "verbose": -9})
        return engine.ask_tell(es, sphere, executor=ex, seed=3, log=None)

    a, b = run(serial), run(local2)
    assert a.best_fitness[0] < 1e-8  # stopped by es.stop() (tolfun), not by a cap
    assert a.digest() == b.digest()


def test_ask_tell_needs_a_bound() -> None:
    class NoStop:
        def ask(self) -> list[float]:
            return [0.0]

        def tell(self, xs: Any, values: Any) -> None:
            pass

    with cf.ThreadPoolExecutor(1) as ex, pytest.raises(ValueError, match="iterations"):
        engine.ask_tell(NoStop(), sphere, executor=ex, seed=0)


def negative_fails(x: np.ndarray) -> float:
    if x[0] < 0:
        raise ValueError("infeasible")
    return float(x[0])


def test_ask_tell_state_before_the_first_iteration_has_the_callers_weights(serial: Any) -> None:
    class Negative:
        def ask(self) -> list[list[float]]:
            return [[1.0], [-1.0]]

        def tell(self, xs: Any, values: Any) -> None:
            pass

    for weights in ((1.0,), (-1.0,)):
        with pytest.raises(evocluster.EvaluationError) as info:
            engine.ask_tell(
                Negative(), negative_fails, executor=serial, seed=0, iterations=1,
                weights=weights, log=None,
            )  # fmt: skip
        assert info.value.state.weights == weights  # was (-1.0,) whatever the caller said
        assert info.value.state.generation == 0


def test_seed_sequence_is_the_stream_rng_draws_from() -> None:
    def draw() -> float:
        return float(evocluster.rng().random())

    for key in (5, (3, 4), (0,)):
        inside, _ = seeded_call(draw, 7, key)
        replay = np.random.default_rng(evocluster.rng.seed_sequence(7, key)).random()
        assert inside == replay, key
    with pytest.raises(ValueError):
        evocluster.rng.seed_sequence(7, (-1,))


# ------------------------------------------------------------------ shared data
def read_shared(i: int) -> int:
    return int(evocluster.shared("table")[i])


def test_shared_data_reaches_the_workers_once_per_host(local2: Any) -> None:
    table = np.arange(1_000_000, dtype=np.int64)  # 8 MB
    evocluster.share("table", table)
    try:
        before = local2.stats()
        assert list(local2.map(read_shared, range(0, 1_000_000, 5_000))) == list(
            range(0, 1_000_000, 5_000)
        )
        assert list(local2.map(read_shared, range(7, 100))) == list(range(7, 100))
        after = local2.stats()
    finally:
        evocluster._sharing.unshare()
    sent = after["bytes_sent"] - before["bytes_sent"]
    assert after["functions_sent"] - before["functions_sent"] == 2  # once per worker
    # the table went once into shared memory, which both workers map: references only crossed
    assert sent < 0.5 * table.nbytes


def test_sharing_again_sends_the_new_object(serial: Any) -> None:
    evocluster.share("table", [1, 2, 3])
    try:
        assert serial.submit(read_shared, 2).result() == 3
        evocluster.share("table", [4, 5, 6])
        assert serial.submit(read_shared, 2).result() == 6
    finally:
        sharing.unshare()


def test_shared_names_what_is_missing() -> None:
    evocluster.share("present", 1)
    try:
        with pytest.raises(KeyError, match=r"'absent'.*'present'.*evocluster.share"):
            evocluster.shared("absent")
    finally:
        sharing.unshare()
    with pytest.raises(TypeError, match="name"):
        evocluster.share(3, 1)  # type: ignore[arg-type]


# ------------------------------------------------------------------ issue 20
def _opt() -> Any:
    class Opt:
        def ask(self) -> list[np.ndarray]:
            return [np.zeros(2), np.ones(2)]

        def tell(self, xs: Any, values: Any) -> None:
            pass

    return Opt()


def two_spheres(x: np.ndarray) -> tuple[float, float]:
    return float(np.sum(x * x)), float(np.sum((x - 1) ** 2))


def _loops(serial: Any) -> dict[str, Any]:
    """One call per loop, every argument overridable."""
    reals = functools.partial(ops.random_reals, 6, 3, low=0.0, high=1.0)
    ga = {
        "executor": serial, "seed": 1, "log": None, "crossover": ops.blend,
        "mutate": functools.partial(ops.gaussian, sigma=0.1),
    }  # fmt: skip
    es = ga | {"generations": 2, "lambda_": 6}

    def call(loop: Any, *args: Any, **defaults: Any) -> Any:
        return lambda **kw: loop(*args, **defaults | kw)

    return {
        "generational": call(engine.generational, sphere, reals, **ga, generations=2),
        "mu_plus_lambda": call(engine.mu_plus_lambda, sphere, reals, **es),
        "mu_comma_lambda": call(engine.mu_comma_lambda, sphere, reals, **es),
        "nsga2": call(engine.nsga2, two_spheres, reals, **ga, generations=2, weights=(-1, -1)),
        "steady_state": call(engine.steady_state, sphere, reals, **ga, evaluations=6),
        "ask_tell": call(
            engine.ask_tell, _opt(), sphere, executor=serial, seed=1, log=None, iterations=2
        ),
    }


BAD_COUNTS = {
    "generational": ["generations"],
    "mu_plus_lambda": ["generations", "lambda_"],
    "mu_comma_lambda": ["generations", "lambda_"],
    "nsga2": ["generations"],
    "steady_state": ["evaluations", "in_flight", "report_every"],
    "ask_tell": ["iterations"],
}


@pytest.mark.parametrize("loop", sorted(BAD_COUNTS))
def test_counts_and_seeds_that_are_not_whole_numbers_are_refused(serial: Any, loop: str) -> None:
    """``generations=-1`` or ``2.5`` and ``seed=True`` were accepted: each is refused with a
    ValueError naming the argument, in every loop."""
    call = _loops(serial)[loop]
    call()  # the call itself is right
    for name in ["seed", *BAD_COUNTS[loop]]:
        low = 1 if name in ("in_flight", "report_every", "iterations", "lambda_") else 0
        for bad in (low - 1, 2.5, True, "3"):
            with pytest.raises(ValueError, match=rf"^{name} must be an integer >= \d, got "):
                call(**{name: bad})


def test_a_population_function_may_return_a_list(serial: Any) -> None:
    """A list of lists gave "'list' object has no attribute 'ndim'": any array-like is taken,
    and what cannot be one array is explained."""
    array = engine.generational(
        noisy_onemax, lambda rng: ops.random_bits(30, 20, rng), executor=serial, generations=3,
        seed=7, crossover=ops.two_point, mutate=BITS, log=None,
    )  # fmt: skip
    listed = engine.generational(
        noisy_onemax, lambda rng: ops.random_bits(30, 20, rng).tolist(), executor=serial,
        generations=3, seed=7, crossover=ops.two_point, mutate=BITS, log=None,
    )  # fmt: skip
    assert listed.digest() == array.digest()
    with pytest.raises(ValueError, match=r"2-D array .* got a list numpy cannot make one"):
        engine.generational(
            noisy_onemax, lambda rng: [[1, 0], [1]], executor=serial, generations=1, seed=7,
            crossover=ops.two_point, mutate=BITS, log=None,
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"at least 2 individuals, got shape \(3,\)"):
        engine.generational(
            noisy_onemax, lambda rng: [1, 0, 1], executor=serial, generations=1, seed=7,
            crossover=ops.two_point, mutate=BITS, log=None,
        )  # fmt: skip


def test_a_fitness_too_large_for_a_float_is_a_bad_value(serial: Any) -> None:
    """``10**400`` gave a bare OverflowError: it is a bad value like NaN, named in the
    EvaluationError (with the state kept), and penalized under on_error="penalize"."""
    huge = functools.partial(_constant, 10**400)
    with pytest.raises(evocluster.EvaluationError) as info:
        onemax_run(serial, fitness=huge)
    err = info.value
    assert isinstance(err.__cause__, ValueError) and err.state is not None
    assert "returned 1000000000" in str(err) and "too large for a float" in str(err), str(err)
    r = onemax_run(serial, fitness=huge, on_error="penalize", penalty=-1.0)
    assert r.failed == len(r.failures) > 0 and "too large" in r.failures[0].message


def infeasible_zdt1(x: np.ndarray) -> np.ndarray:
    """ZDT1, with ``+inf`` (minimised: the worst) for a point whose x[1] is above 0.5, as the
    engine's NaN message suggests for an infeasible individual."""
    f = pareto.zdt1(x)
    return np.array([f[0], np.inf]) if x[1] > 0.5 else f


def test_nsga2_takes_infinite_objectives(serial: Any) -> None:
    """``nsga2`` with an infinite objective failed after generation 0 with a bare ValueError
    from pareto.py: it runs, infeasible members sort last, and the result is reproducible."""

    def go(executor: Any) -> engine.Result:
        return engine.nsga2(
            infeasible_zdt1, functools.partial(ops.random_reals, 24, 6, low=0.0, high=1.0),
            executor=executor, generations=8, seed=4, weights=(-1.0, -1.0),
            crossover=functools.partial(ops.sbx, eta=15.0, low=0.0, high=1.0),
            mutate=functools.partial(ops.polynomial, eta=20.0, low=0.0, high=1.0, p=0.2),
            log=None,
        )  # fmt: skip

    r = go(serial)
    assert r.state.generation == 8
    assert np.isinf(r.history[0]["max"][1])  # generation 0 had infeasible members
    assert np.isfinite(r.best_fitness).all()  # the first front's first is a feasible one
    with cf.ThreadPoolExecutor(3) as threads:
        assert go(threads).digest() == r.digest()
