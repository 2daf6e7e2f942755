"""The engine under failing evaluations: strict fitness values, and the failure policies
(``on_error``: raise, penalize, retry:N; ``penalty``) of every loop, on the stdlib's executors
(the engine's own guard around the call) and on evocluster's (``with_policy``), through
checkpoints too.  Real executors, no mocks: evocluster's serial and local backends, the stdlib's
thread and process pools.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import fractions
import functools
import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import evocluster
from evocluster import engine
from evocluster import operators as ops
from evocluster.errors import Failure

BITS = functools.partial(ops.bit_flip, p=0.05)


def onemax_run(executor: cf.Executor, fitness: Any, generations: int = 5, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "executor": executor,
        "generations": generations,
        "seed": 11,
        "crossover": ops.two_point,
        "mutate": BITS,
        "elitism": 1,
        "log": None,
    }
    return engine.generational(fitness, lambda rng: ops.random_bits(24, 20, rng), **args | kw)


def unlucky(genome: np.ndarray) -> bool:
    """About one individual in seven, decided by the genome alone (so every executor agrees)."""
    return int(genome @ np.arange(1, len(genome) + 1)) % 7 == 0


def onemax_failing(genome: np.ndarray) -> float:
    if unlucky(genome):
        raise ZeroDivisionError("injected")
    return float(genome.sum())


def constant(value: Any, genome: np.ndarray) -> Any:
    return value


def check_failures(result: Any, penalty: float = -math.inf) -> None:
    """Every penalized member is an unlucky genome holding the penalty and every other member a
    lucky one; the rows count the records; the statistics are finite."""
    state = result.state
    for genome, fit, bad in zip(state.genomes, state.fitness, state.penalized, strict=True):
        assert bad == unlucky(genome)
        assert (fit[0] == penalty) if bad else (fit[0] == genome.sum())
    penalized = [f for f in result.failures if f.action == "penalized"]
    assert result.failed == len(penalized) > 0
    assert sum(row.get("failed", 0) for row in result.history) == result.failed
    assert all(np.isfinite(row["mean"]).all() for row in result.history)
    assert all(isinstance(f, Failure) for f in result.failures)
    assert {f.function for f in result.failures} == {f"{__name__}.onemax_failing"}
    assert {f.error for f in penalized} == {"builtins.ZeroDivisionError"}
    assert all(f.message == "injected" for f in penalized)
    assert all(f.item == k[-1] for f, k in zip(result.failures, result.failure_keys, strict=True))
    assert not unlucky(result.best)


def untimed(failures: list[Failure]) -> list[Failure]:
    return [f._replace(seconds=0.0) for f in failures]


# ------------------------------------------------------------------ values
BAD_VALUES = [
    ("52.0", "'52.0'"),
    (b"1", "b'1'"),
    (None, "None"),
    ({"f": 1.0}, "{'f': 1.0}"),
    (np.zeros(2), "array([0., 0.])"),
    (np.zeros((1, 1)), "array([[0.]])"),
    (True, "True"),
    (np.bool_(False), "False"),
    ([1.0, True], "[1.0, True]"),
    (1 + 2j, "(1+2j)"),
    (float("nan"), "nan"),
]


@pytest.mark.parametrize(("bad", "shown"), BAD_VALUES, ids=[repr(b)[:12] for b, _ in BAD_VALUES])
def test_a_value_that_is_not_a_number_names_function_task_and_value(
    serial: Any, bad: Any, shown: str
) -> None:
    with pytest.raises(evocluster.EvaluationError) as info:
        onemax_run(serial, functools.partial(constant, bad))
    text = str(info.value)
    assert f"{__name__}.constant" in text  # through the partial, the user's function
    assert "(0, 0)" in text and info.value.key == (0, 0)
    assert f"returned {bad!r}" in text  # repr: numpy 2 shows np.False_, np.float64(1.0)
    assert shown in text
    assert isinstance(info.value.__cause__, TypeError | ValueError)


def test_a_long_bad_value_is_shown_truncated(serial: Any) -> None:
    with pytest.raises(evocluster.EvaluationError) as info:
        onemax_run(serial, functools.partial(constant, "x" * 10_000))
    assert "'xxxx" in str(info.value) and "..." in str(info.value)
    assert len(str(info.value)) < 1000


@pytest.mark.parametrize(
    "good",
    [3, np.float32(2.5), np.int64(4), [1.5], (2,), np.array([1.0]), np.array(1.0),
     fractions.Fraction(1, 2), math.inf],
)  # fmt: skip
def test_numbers_in_any_usual_form_are_taken(serial: Any, good: Any) -> None:
    r = onemax_run(serial, functools.partial(constant, good), generations=1)
    assert (r.fitness == float(np.asarray(good, dtype=np.float64).reshape(-1)[0])).all()


def test_steady_state_and_ask_tell_name_a_bad_value_too(serial: Any) -> None:
    fitness = functools.partial(constant, "52.0")
    with pytest.raises(evocluster.EvaluationError, match=rf"{__name__}\.constant returned '52\.0'"):
        engine.steady_state(
            fitness, lambda rng: ops.random_bits(6, 8, rng), executor=serial, evaluations=4,
            seed=1, crossover=ops.two_point, mutate=BITS, log=None,
        )  # fmt: skip
    with pytest.raises(evocluster.EvaluationError, match=r"returned '52\.0' for task \(0, 0\)"):
        engine.ask_tell(Grid(), fitness, executor=serial, seed=0, iterations=1, log=None)


class Grid:
    """A stand-in ask/tell optimiser: four candidates around its centre, which moves to the best
    told value."""

    def __init__(self) -> None:
        self.centre = np.zeros(2)
        self.told: list[list[float]] = []

    def ask(self) -> list[np.ndarray]:
        return [self.centre + d for d in ([1, 0], [0, 1], [-1, 0], [0, -1])]

    def tell(self, xs: list[np.ndarray], values: list[float]) -> None:
        self.told.append(values)
        self.centre = xs[int(np.argmin(values))]


# ------------------------------------------------------------------ policies: arguments
def test_policy_arguments_are_checked(serial: Any) -> None:
    with pytest.raises(ValueError, match="retry:N"):
        onemax_run(serial, onemax_failing, on_error="retry")
    with pytest.raises(ValueError, match="no use"):
        onemax_run(serial, onemax_failing, on_error="raise", penalty=-1.0)
    with pytest.raises(ValueError, match="penalty must be"):
        onemax_run(serial, onemax_failing, on_error="penalize", penalty=True)
    # issue 20: "penalty must be a number ..., got -1.0: 1 numbers where there are 2" read as if
    # -1.0 were not a number: the arity leads, with the fix
    with pytest.raises(ValueError) as info:
        engine.nsga2(
            onemax_failing, lambda rng: ops.random_bits(6, 8, rng), executor=serial,
            generations=1, seed=0, crossover=ops.two_point, mutate=BITS, weights=(1.0, -1.0),
            on_error="penalize", penalty=-1.0, log=None,
        )  # fmt: skip
    assert str(info.value) == (
        "penalty -1.0 gives 1 value where there are 2 objectives: give one per objective, "
        "e.g. (-1.0, -1.0)"
    )
    with pytest.raises(ValueError, match=r"penalty \[1, 2, 3\] gives 3 values where there are 2"):
        engine.nsga2(
            onemax_failing, lambda rng: ops.random_bits(6, 8, rng), executor=serial,
            generations=1, seed=0, crossover=ops.two_point, mutate=BITS, weights=(1.0, -1.0),
            on_error="penalize", penalty=[1, 2, 3], log=None,
        )  # fmt: skip


def test_raise_is_the_default_and_keeps_the_last_state(serial: Any) -> None:
    with pytest.raises(evocluster.EvaluationError) as info:
        onemax_run(serial, onemax_failing)
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert isinstance(info.value.state, engine.State)


# ------------------------------------------------------------------ penalize
@pytest.mark.parametrize("kind", ["thread", "process", "serial", "local"])
def test_penalize_goes_on_and_counts_every_failure(kind: str, serial: Any, local2: Any) -> None:
    with executor_of(kind, serial, local2) as ex:
        r = onemax_run(ex, onemax_failing, on_error="penalize")
    check_failures(r)
    assert r.summary()["failed"] == r.failed


def executor_of(kind: str, serial: Any, local2: Any) -> contextlib.AbstractContextManager[Any]:
    """A fresh stdlib pool (the engine guards the call), or a shared evocluster executor (the
    engine evaluates through ``with_policy``)."""
    if kind == "thread":
        return cf.ThreadPoolExecutor(2)
    if kind == "process":
        return cf.ProcessPoolExecutor(2)
    return contextlib.nullcontext(serial if kind == "serial" else local2)


def test_penalized_runs_are_identical_on_every_executor(serial: Any, local2: Any) -> None:
    digests = set()
    for kind in ("thread", "serial", "local"):
        with executor_of(kind, serial, local2) as ex:
            r = onemax_run(ex, onemax_failing, on_error="penalize")
        digests.add((r.digest(), r.failed, tuple(r.failure_keys)))
    assert len(digests) == 1


def test_a_given_penalty_is_the_failed_individuals_fitness(serial: Any) -> None:
    r = onemax_run(serial, onemax_failing, on_error="penalize", penalty=-5)
    check_failures(r, penalty=-5.0)


def test_the_generation_line_shows_the_failures_when_there_are_some(serial: Any) -> None:
    lines: list[str] = []
    r = onemax_run(serial, onemax_failing, on_error="penalize", log=lines.append)
    for line, row in zip(lines, r.history, strict=True):
        assert (f"failed {row['failed']}" in line) if "failed" in row else ("failed" not in line)
    assert any("failed" in row for row in r.history)


def always_fails(genome: np.ndarray) -> float:
    raise RuntimeError("always")


def test_when_every_evaluation_fails_the_statistics_are_nan_not_a_warning(serial: Any) -> None:
    r = onemax_run(serial, always_fails, on_error="penalize", generations=2)
    assert all(np.isnan(row["mean"]).all() for row in r.history)
    assert r.failed == r.state.evaluations and r.state.penalized.all()


def test_a_bad_value_under_penalize_is_penalized_and_recorded(serial: Any) -> None:
    r = onemax_run(serial, functools.partial(constant, "52.0"), on_error="penalize", penalty=-1)
    assert r.failed == r.state.evaluations
    assert {f.error for f in r.failures} == {"builtins.TypeError"}
    assert "returned '52.0'" in r.failures[0].message


def test_mu_plus_lambda_mu_comma_lambda_and_nsga2_penalize(serial: Any) -> None:
    common: dict[str, Any] = {
        "executor": serial, "generations": 3, "seed": 3, "crossover": ops.two_point,
        "mutate": BITS, "log": None, "on_error": "penalize",
    }  # fmt: skip
    for loop in (engine.mu_plus_lambda, engine.mu_comma_lambda):
        r = loop(onemax_failing, lambda rng: ops.random_bits(20, 20, rng), lambda_=30, **common)
        check_failures(r)

    def two(genome: np.ndarray) -> tuple[float, float]:
        return onemax_failing(genome), float(len(genome) - genome.sum())

    r = engine.nsga2(two, lambda rng: ops.random_bits(20, 20, rng), weights=(1.0, -1.0), **common)
    assert r.failed > 0
    bad = r.state.penalized
    assert (r.fitness[bad] == [-np.inf, np.inf]).all() and np.isfinite(r.fitness[~bad]).all()
    assert all(np.isfinite(row["max"]).all() for row in r.history)


@pytest.mark.parametrize("kind", ["thread", "serial"])
def test_steady_state_penalizes(kind: str, serial: Any, local2: Any) -> None:
    with executor_of(kind, serial, local2) as ex:
        r = engine.steady_state(
            onemax_failing, lambda rng: ops.random_bits(20, 20, rng), executor=ex,
            evaluations=200, seed=5, crossover=ops.two_point, mutate=BITS, log=None,
            deterministic=True, in_flight=4, on_error="penalize",
        )  # fmt: skip
    assert r.failed > 0 and r.failed == sum(row.get("failed", 0) for row in r.history)
    for genome, bad in zip(r.state.genomes, r.state.penalized, strict=True):
        assert bad == unlucky(genome)
    keys = r.failure_keys
    assert len(set(keys)) == len(keys)  # one record per failed evaluation
    assert all(np.isfinite(row["mean"]).all() for row in r.history)


def fails_right_of_origin(x: np.ndarray) -> float:
    if x[0] > 0:
        raise ValueError("right of the origin")
    return float(x @ x)


@pytest.mark.parametrize("kind", ["thread", "serial"])
def test_ask_tell_penalizes_and_tells_the_penalty(kind: str, serial: Any, local2: Any) -> None:
    opt = Grid()
    with executor_of(kind, serial, local2) as ex:
        r = engine.ask_tell(
            opt, fails_right_of_origin, executor=ex, seed=0, iterations=3, log=None,
            on_error="penalize", penalty=1e9,
        )  # fmt: skip
    assert opt.told[0][0] == 1e9  # (1, 0) failed
    assert r.failed == 3 and r.failure_keys == [(0, 0), (1, 0), (2, 0)]
    assert r.best_fitness[0] != 1e9


# ------------------------------------------------------------------ retry
_calls: dict[bytes, int] = {}
_calls_lock = threading.Lock()


def fails_on_the_first_call(genome: np.ndarray) -> float:
    """Unlucky genomes fail the first time they are evaluated in this process (a transient
    fault), then succeed."""
    if unlucky(genome):
        with _calls_lock:
            n = _calls[genome.tobytes()] = _calls.get(genome.tobytes(), 0) + 1
        if n == 1:
            raise OSError("transient")
    return float(genome.sum())


@pytest.mark.parametrize("kind", ["thread", "serial"])
def test_retry_evaluates_again_and_records_the_retried_attempts(
    kind: str, serial: Any, local2: Any
) -> None:
    _calls.clear()
    with executor_of(kind, serial, local2) as ex:
        r = onemax_run(ex, fails_on_the_first_call, on_error="retry:2")
    assert r.failed == 0 and not r.state.penalized.any()
    retried = [f for f in r.failures if f.action == "retried"]
    assert retried and len(retried) == len(r.failures)
    assert {f.error for f in retried} == {"builtins.OSError"} and {f.attempt for f in retried} == {
        1
    }
    assert sum(row.get("retried", 0) for row in r.history) == len(retried)


@pytest.mark.parametrize("kind", ["thread", "serial"])
def test_retry_without_a_penalty_raises_when_the_retries_fail(
    kind: str, serial: Any, local2: Any
) -> None:
    with executor_of(kind, serial, local2) as ex, pytest.raises(evocluster.EvaluationError) as e:
        onemax_run(ex, onemax_failing, on_error="retry:1")
    assert "injected" in str(e.value)


@pytest.mark.parametrize("kind", ["thread", "serial"])
def test_retry_with_a_penalty_falls_back_to_it(kind: str, serial: Any, local2: Any) -> None:
    with executor_of(kind, serial, local2) as ex:
        r = onemax_run(ex, onemax_failing, on_error="retry:1", penalty=-3)
    check_failures(r, penalty=-3.0)
    attempts = {f.action: f.attempt for f in r.failures}
    assert attempts == {"retried": 1, "penalized": 2}


# ------------------------------------------------------------------ evocluster executors only
def sleeps_when_unlucky(genome: np.ndarray) -> float:
    if unlucky(genome):
        time.sleep(60)
    return float(genome.sum())


def test_a_timed_out_evaluation_is_penalized() -> None:
    with evocluster.Executor(backend="local", workers=2, eval_timeout=0.5) as ex:
        r = onemax_run(ex, sleeps_when_unlucky, generations=1, on_error="penalize")
    assert r.failed > 0
    assert {f.error.rsplit(".", 1)[-1] for f in r.failures} == {"EvaluationTimeout"}
    for genome, bad in zip(r.state.genomes, r.state.penalized, strict=True):
        assert bad == unlucky(genome)


def test_on_error_none_follows_the_executors_own_policy() -> None:
    with evocluster.Executor(backend="serial", on_error="penalize", penalty=-2.0) as ex:
        r = onemax_run(ex, onemax_failing)
    check_failures(r, penalty=-2.0)


# ------------------------------------------------------------------ checkpoints
def test_a_resumed_run_reports_the_same_failures(serial: Any, tmp_path: Path) -> None:
    whole = onemax_run(serial, onemax_failing, generations=6, on_error="penalize")
    path = tmp_path / "run.ckpt"
    onemax_run(serial, onemax_failing, generations=3, on_error="penalize", checkpoint=path)
    resumed = onemax_run(
        serial, onemax_failing, generations=6, on_error="penalize", checkpoint=path, resume=True
    )
    assert resumed.digest() == whole.digest()
    assert resumed.failed == whole.failed > 0
    assert untimed(resumed.failures) == untimed(whole.failures)
    assert resumed.failure_keys == whole.failure_keys
    assert [r.get("failed") for r in resumed.history] == [r.get("failed") for r in whole.history]
    assert (resumed.state.penalized == whole.state.penalized).all()


def test_a_state_from_before_failure_policies_still_loads(serial: Any) -> None:
    r = onemax_run(serial, onemax_failing, generations=2, on_error="penalize")
    old = r.state.to_dict()
    del old["penalized"], old["failures"]
    state = engine.State.from_dict(old)
    assert state.failures == [] and not state.penalized.any()
    assert len(state.penalized) == len(state.genomes)
