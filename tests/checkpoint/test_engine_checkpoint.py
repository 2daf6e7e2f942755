"""Checkpoint/restart of the engine's loops (issue 15).

* In this process, every loop (generational, mu_plus_lambda, mu_comma_lambda, nsga2,
  steady_state deterministic, ask_tell) is stopped by a real SIGUSR1 that its own fitness sends
  while the initial population is evaluated and in the middle of a later generation; resumed from
  the checkpoint on another executor, it ends bit-identical (``State.digest``, statistics rows) to
  an uninterrupted run.  A harmless handler stands in for the default actions around each of these
  tests, so a loop that failed to take the signal could not end pytest, and the test checks that
  the loop gave it back.
* Through the launcher, in real processes: stopped on one backend and resumed on another with a
  different number of workers (serial, local pools, ``mpiexec -n 3/-n 5``), a SIGTERM from the test
  while a worker is held in an evaluation, a ``kill -9`` of the master between two checkpoints, the
  automatic resume of a SLURM requeue, plain ``python job.py``, and the errors.

The signal is sent by the fitness at a chosen task key, or by the test once the job says it is
holding an evaluation: nothing waits for a time and hopes.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import (
    clean_env,
    default_signals,
    kill_session,
    launch_on,
    launcher,
    output,
    require_module,
    run,
)

import evocluster
from evocluster import checkpoint, engine, pareto
from evocluster import operators as ops
from evocluster.checkpoint import CheckpointError, Interrupted
from evocluster.engine import loop_entries, stopping

KEY = "c" * 40


@pytest.fixture(autouse=True)
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVOCLUSTER_KEY", KEY)
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)


@pytest.fixture(scope="module")
def serial() -> Iterator[evocluster.Executor]:
    with evocluster.Executor(backend="serial") as ex:
        yield ex


@pytest.fixture
def guarded() -> Iterator[list[int]]:
    """Harmless SIGUSR1/SIGTERM handlers for the test (a loop that did not take the signal must
    not end pytest); the loop must give them back.  Yields the signals they received."""
    got: list[int] = []

    def note(signum: int, frame: object) -> None:
        got.append(signum)

    before = {s: signal.signal(s, note) for s in (signal.SIGUSR1, signal.SIGTERM)}
    try:
        yield got
        for s in before:
            assert signal.getsignal(s) is note, "the loop did not restore the signal handler"
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


# ---------------------------------------------------------------------------- in this process
def current_key() -> tuple[int, ...]:
    """The task key of the evaluation running now (evocluster.rng's own record)."""
    return tuple(evocluster.rng._local.current.key)


#: handlers seen by the fitness while a loop runs (the loop's own, not the test's)
seen_handlers: list[Any] = []


def signalling(objective: Any, when: tuple[int, int] | None, genome: np.ndarray) -> Any:
    """``objective(genome)`` plus a noise from the task's stream; at task keys ``(g, >= i)`` for
    ``when = (g, i)``, first send SIGUSR1 to this process (the master: the executors here
    evaluate in it)."""
    key = current_key()
    if when is not None and key[0] == when[0] and key[1] >= when[1]:
        seen_handlers.append(signal.getsignal(signal.SIGUSR1))
        os.kill(os.getpid(), signal.SIGUSR1)
    return np.asarray(objective(genome)) + 1e-3 * evocluster.rng().random()


def sphere(x: np.ndarray) -> float:
    return float(np.sum(x * x))


class GlobalRandomSearch:
    """An ask/tell optimiser that draws from numpy's *global* generator, as ``cma`` does."""

    def __init__(self, x0: list[float]) -> None:
        self.centre = np.asarray(x0, dtype=float)
        self.best = np.inf
        self.told = 0

    def ask(self) -> list[np.ndarray]:
        return [self.centre + 0.5 * np.random.standard_normal(len(self.centre)) for _ in range(6)]

    def tell(self, xs: list[np.ndarray], values: list[float]) -> None:
        self.told += len(values)
        i = int(np.argmin(values))
        if values[i] < self.best:
            self.best, self.centre = values[i], np.asarray(xs[i])


def run_loop(
    loop: str,
    executor: cf.Executor,
    when: tuple[int, int] | None = None,
    generations: int = 6,
    **kw: Any,
) -> tuple[engine.Result, Any]:
    """One of the engine's loops, small; returns its result and (ask_tell) the optimiser."""
    fit = functools.partial(signalling, sphere, when)
    init = functools.partial(ops.random_reals, 12, 4, low=-2.0, high=2.0)
    common: dict[str, Any] = {"executor": executor, "seed": 3, "log": None} | kw
    mutate = functools.partial(ops.gaussian, sigma=0.2, p=0.5)
    crossover = functools.partial(ops.blend, alpha=0.3)
    if loop == "generational":
        r = engine.generational(
            fit, init, generations=generations, crossover=crossover, mutate=mutate, elitism=1,
            weights=(-1.0,), **common,
        )  # fmt: skip
    elif loop in ("mu_plus_lambda", "mu_comma_lambda"):
        r = getattr(engine, loop)(
            fit,
            init,
            generations=generations,
            lambda_=16,
            crossover=crossover,
            mutate=mutate,
            weights=(-1.0,),
            **common,
        )
    elif loop == "nsga2":
        r = engine.nsga2(
            functools.partial(signalling, pareto.zdt1, when),
            functools.partial(ops.random_reals, 12, 4, low=0.0, high=1.0),
            generations=generations,
            weights=(-1.0, -1.0), crossover=functools.partial(ops.sbx, eta=15.0, low=0.0, high=1.0),
            mutate=functools.partial(ops.polynomial, eta=20.0, low=0.0, high=1.0, p=0.25),
            **common,
        )  # fmt: skip
    elif loop == "steady_state":
        r = engine.steady_state(
            fit, init, evaluations=60, crossover=ops.blend, mutate=mutate, weights=(-1.0,),
            deterministic=True, in_flight=5, report_every=6, **common,
        )  # fmt: skip
    else:
        np.random.seed(5)  # the optimiser's randomness: numpy's global generator
        opt = GlobalRandomSearch([1.5, -1.0, 0.5])
        r = engine.ask_tell(opt, fit, iterations=7, weights=(-1.0,), **common)
        return r, opt
    return r, None


LOOPS = ["generational", "mu_plus_lambda", "mu_comma_lambda", "nsga2", "steady_state", "ask_tell"]
#: where the fitness sends the signal: during generation 0, or in the middle of a later one
STOPS = {
    "initial": (0, 4),
    "later": (3, 2),  # steady_state: offspring 2, 3, ... (key (1, j))
}
TIMING = {"seconds", "evals_per_s", "utilisation", "in_flight"}


def untimed(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


@pytest.mark.parametrize("at", sorted(STOPS))
@pytest.mark.parametrize("loop", LOOPS)
def test_a_loop_stopped_by_sigusr1_resumes_bit_identically(
    loop: str, at: str, serial: evocluster.Executor, tmp_path: Path, guarded: list[int]
) -> None:
    whole, whole_opt = run_loop(loop, serial)
    when = STOPS[at]
    if loop == "steady_state" and at == "later":
        when = (1, 20)
    path = tmp_path / "run.ckpt"
    seen_handlers.clear()
    with pytest.raises(Interrupted) as info:
        run_loop(loop, serial, when, checkpoint=path)
    stop = info.value
    assert stop.code == checkpoint.EXIT_TEMPFAIL == 75 and stop.signal == signal.SIGUSR1
    assert stop.path == str(path) and str(path) in str(stop)
    assert guarded == []  # the loop took every signal; the test's handler is back (fixture)
    assert seen_handlers and all(
        isinstance(h.__self__, stopping.StopSignals) for h in seen_handlers
    )
    header, body = checkpoint.load(path, algorithm=loop, seed=3)
    assert not header["finished"]
    if at == "initial" and loop != "steady_state":  # nothing complete yet: the initial state
        assert header["evaluations"] == 0 and header["generation"] == 0
    elif at == "later" and loop != "steady_state":  # the last complete generation before it
        complete = when[0] if loop == "ask_tell" else when[0] - 1  # ask_tell: keys (it, i)
        assert header["generation"] == complete, header
    if loop == "steady_state":
        in_flight = body["loops"][0]["loop"]["in_flight"]
        assert in_flight, "the steady-state checkpoint holds individuals in flight"
    # resumed on another executor: three threads instead of the serial backend
    with cf.ThreadPoolExecutor(3) as threads:
        resumed, resumed_opt = run_loop(loop, threads, checkpoint=path, resume=True)
    assert resumed.digest() == whole.digest()
    assert untimed(resumed.history) == untimed(whole.history)
    assert resumed.state.evaluations == whole.state.evaluations
    assert np.array_equal(resumed.best_fitness, whole.best_fitness)
    if loop == "ask_tell":  # the optimiser passed in ends as the uninterrupted one did
        assert (resumed_opt.told, resumed_opt.best) == (whole_opt.told, whole_opt.best)
        assert np.array_equal(resumed_opt.centre, whole_opt.centre)
    assert checkpoint.read_header(path)["finished"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_second_signal_while_the_checkpoint_is_written_changes_nothing(
    serial: evocluster.Executor,
    tmp_path: Path,
    guarded: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    whole, _ = run_loop("generational", serial)
    path = tmp_path / "run.ckpt"
    real_save = checkpoint.save

    def save_under_fire(*args: Any, **kw: Any) -> Any:
        if seen_handlers:  # the stop's own write: SIGTERM arrives in the middle of it
            os.kill(os.getpid(), signal.SIGTERM)
        return real_save(*args, **kw)

    monkeypatch.setattr(checkpoint, "save", save_under_fire)
    seen_handlers.clear()
    with pytest.raises(Interrupted) as info:
        run_loop("generational", serial, (2, 3), checkpoint=path)
    assert info.value.signal == signal.SIGUSR1  # the first one; SIGTERM was only noted
    assert guarded == []
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(checkpoint, "save", real_save)
    resumed, _ = run_loop("generational", serial, checkpoint=path, resume=True)
    assert resumed.digest() == whole.digest()


#: evaluations per loop of a job, counted here (the serial executor evaluates in this process)
calls = [0]


def counted(genome: np.ndarray) -> float:
    calls[0] += 1
    return sphere(genome)


def two_runs(executor: cf.Executor, path: Path | None, when: tuple[int, int] | None) -> list[str]:
    """A job that runs the same loop for two seeds, the second one signalling at ``when``."""
    out = []
    for seed in (1, 2):
        fit = functools.partial(signalling, counted, when if seed == 2 else None)
        r = engine.mu_plus_lambda(
            fit, functools.partial(ops.random_reals, 8, 3, low=-1.0, high=1.0), executor=executor,
            generations=5, seed=seed, lambda_=8, crossover=ops.blend,
            mutate=functools.partial(ops.gaussian, sigma=0.3), weights=(-1.0,), log=None,
            checkpoint=False if path is None else None,
        )  # fmt: skip
        out.append(r.digest())
    return out


def test_a_job_of_several_loops_resumes_in_the_loop_it_was_in(
    serial: evocluster.Executor, tmp_path: Path, guarded: list[int]
) -> None:
    whole = two_runs(serial, None, None)
    path = tmp_path / "runs.ckpt"
    checkpoint.set_defaults(path)  # as the launcher's --checkpoint: the job says nothing
    try:
        with pytest.raises(Interrupted):
            two_runs(serial, path, (3, 1))
        header = checkpoint.read_header(path)
        assert (header["loop"], header["loops"], header["seed"]) == (2, 2, 2)
        checkpoint.set_defaults(path, resume=True)  # as --resume
        calls[0] = 0
        with cf.ThreadPoolExecutor(2) as threads:
            assert two_runs(threads, path, None) == whole
        # the first loop returned its stored result: only the second one evaluated
        assert 0 < calls[0] <= 3 * 8
    finally:
        checkpoint.set_defaults()
        engine_runs_forget(path)


def engine_runs_forget(path: Path) -> None:
    """As if a new process ran the next loop: it would not know the loops that used ``path``."""
    loop_entries.forget_run(path)


def test_resume_errors_name_the_file_and_what_differs(
    serial: evocluster.Executor, tmp_path: Path
) -> None:
    path = tmp_path / "a.ckpt"
    with pytest.raises(CheckpointError) as info:
        run_loop("generational", serial, checkpoint=path, resume=True)
    assert info.value.reason == "missing" and str(path) in str(info.value)
    run_loop("generational", serial, checkpoint=path)
    engine_runs_forget(path)  # as a new process would
    with pytest.raises(CheckpointError) as info:
        run_loop("generational", serial, checkpoint=path)  # neither resume=True nor False
    assert info.value.reason == "exists" and "--resume" in str(info.value)
    with pytest.raises(CheckpointError) as info:
        run_loop("generational", serial, checkpoint=path, resume=True, seed=4)
    assert info.value.reason == "mismatch" and "seed 3" in str(info.value)
    assert str(path) in str(info.value)
    with pytest.raises(CheckpointError) as info:
        run_loop("nsga2", serial, checkpoint=path, resume=True)
    assert "generational()" in str(info.value) and "nsga2()" in str(info.value)
    # a job loop's own checkpoint is not an engine run
    job = tmp_path / "job.ckpt"
    checkpoint.Checkpoint(job, seed=3).save({"gen": 1})
    with pytest.raises(CheckpointError, match="not by evocluster's engine"):
        run_loop("generational", serial, checkpoint=job, resume=True)
    engine_runs_forget(job)
    with pytest.raises(ValueError, match="checkpoint=PATH"):
        run_loop("generational", serial, resume=True)
    with pytest.raises(TypeError, match="State"):
        run_loop("steady_state", serial, resume=run_loop("generational", serial)[0].state)
    # resume=False starts afresh over it; a call refused for its arguments takes no place
    with pytest.raises(ValueError, match="cxpb"):
        run_loop("generational", serial, checkpoint=path, resume=False, cxpb=2.0)
    run_loop("generational", serial, checkpoint=path, resume=False)
    header = checkpoint.read_header(path)
    assert header["finished"] and (header["loop"], header["loops"]) == (1, 1)
    engine_runs_forget(path)


def test_a_slurm_requeue_resumes_by_itself(
    serial: evocluster.Executor, tmp_path: Path, guarded: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    whole, _ = run_loop("nsga2", serial)
    path = tmp_path / "slurm.ckpt"
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # no file yet: a requeued job starts afresh
    with pytest.raises(Interrupted):
        run_loop("nsga2", serial, STOPS["later"], checkpoint=path)
    lines: list[str] = []
    resumed, _ = run_loop("nsga2", serial, checkpoint=path, log=lines.append)
    assert resumed.digest() == whole.digest()
    assert lines[0].startswith(f"resumed nsga2() from {path}")
    engine_runs_forget(path)


def test_a_finished_run_resumed_with_more_generations_goes_on(
    serial: evocluster.Executor, tmp_path: Path
) -> None:
    path = tmp_path / "longer.ckpt"
    whole, _ = run_loop("mu_plus_lambda", serial, generations=9)
    run_loop("mu_plus_lambda", serial, checkpoint=path)
    engine_runs_forget(path)
    again, _ = run_loop("mu_plus_lambda", serial, checkpoint=path, resume=True)  # as many
    assert again.state.generation == 6
    engine_runs_forget(path)
    longer, _ = run_loop("mu_plus_lambda", serial, generations=9, checkpoint=path, resume=True)
    assert longer.digest() == whole.digest()
    assert untimed(longer.history) == untimed(whole.history)
    engine_runs_forget(path)


def test_launcher_defaults_reach_a_loop_that_does_not_ask(
    serial: evocluster.Executor, tmp_path: Path
) -> None:
    path = tmp_path / "default.ckpt"
    checkpoint.set_defaults(path, every_generations=2)
    try:
        run_loop("mu_comma_lambda", serial, checkpoint=False)
        assert not path.exists()  # checkpoint=False: none, whatever the launcher says
        run_loop("mu_comma_lambda", serial)
        assert checkpoint.read_header(path)["finished"]
        with pytest.raises(ValueError, match="checkpoint_every"):
            run_loop("generational", serial, checkpoint_every=-1.0, checkpoint=tmp_path / "x")
    finally:
        checkpoint.set_defaults()
        engine_runs_forget(path)
    with pytest.raises(ValueError, match="--checkpoint"):
        checkpoint.set_defaults(resume=True)


def test_cma_es_stopped_and_resumed_ends_as_an_uninterrupted_run(
    serial: evocluster.Executor, tmp_path: Path, guarded: list[int]
) -> None:
    cma = require_module("cma")  # of the test extra

    def run_cma(when: tuple[int, int] | None, **kw: Any) -> tuple[engine.Result, Any]:
        es = cma.CMAEvolutionStrategy(4 * [1.0], 0.5, {"seed": 3, "verbose": -9})
        fit = functools.partial(signalling, sphere, when)
        r = engine.ask_tell(es, fit, executor=serial, seed=3, iterations=25, log=None, **kw)
        return r, es

    whole, es_whole = run_cma(None)
    path = tmp_path / "cma.ckpt"
    with pytest.raises(Interrupted):
        run_cma((12, 3), checkpoint=path)
    resumed, es_resumed = run_cma(None, checkpoint=path, resume=True)
    assert resumed.digest() == whole.digest()
    assert np.array_equal(es_resumed.mean, es_whole.mean)  # the optimiser passed in, restored


class Unpicklable(GlobalRandomSearch):
    def __init__(self, x0: list[float]) -> None:
        super().__init__(x0)
        self.hook = lambda: None


def test_ask_tell_refuses_an_optimiser_it_cannot_save(
    serial: evocluster.Executor, tmp_path: Path
) -> None:
    path = tmp_path / "opt.ckpt"
    with pytest.raises(CheckpointError, match="cannot be pickled") as info:
        engine.ask_tell(
            Unpicklable([1.0]), sphere, executor=serial, seed=1, iterations=2, log=None,
            checkpoint=path,
        )  # fmt: skip
    assert info.value.reason == "unwritable"
    engine_runs_forget(path)


def test_handlers_are_not_touched_by_a_loop_without_checkpoints(
    serial: evocluster.Executor, guarded: list[int]
) -> None:
    seen_handlers.clear()
    run_loop("generational", serial, (1, 0), checkpoint=False)  # signals, but no checkpoint:
    assert seen_handlers and all(h is seen_handlers[0] for h in seen_handlers)
    assert guarded  # the test's handler got them


@pytest.mark.parametrize("when", ["before the wait", "during the wait"])
def test_a_signal_ends_a_stepped_wait_and_its_handler_only_notes_it(
    guarded: list[int], when: str
) -> None:
    """The handler raises nothing (a wait raises the stop, in its own frame): the signal is
    noted, and the wait looks at it between its steps."""
    gate = threading.Event()  # never set: only the stop ends the wait (or its 60 s bound)
    steps = [0]

    def ready(timeout: float) -> bool:
        steps[0] += 1
        if when == "during the wait" and steps[0] == 2:
            os.kill(os.getpid(), signal.SIGUSR1)  # the handler runs here, and returns
            steps.append(-1)  # reached: the handler raised nothing
        gate.wait(timeout)
        return steps[0] > 600  # 60 s: the wait was not stopped

    waits = stopping.Waits(stopping.StopSignals())
    assert waits.signals is not None
    with waits.signals as stop:
        if when == "before the wait":
            os.kill(os.getpid(), signal.SIGUSR1)  # noted only: nothing raised here
        assert stop.signal == (signal.SIGUSR1 if when == "before the wait" else None)
        with pytest.raises(stopping.StopRequested) as info, waits:
            waits.until(ready)
        assert stop.is_stop(info.value) and stop.signal == signal.SIGUSR1
        assert steps == ([0] if when == "before the wait" else [2, -1])
        assert info.value.signal == signal.SIGUSR1
    assert guarded == []


def test_stopping_reads_no_source_code() -> None:
    """The stop is a flag looked at by stepped waits: nothing reads the source of threading's
    waits to find where a handler may raise (it broke whenever CPython changed them)."""
    import inspect

    for module in (stopping, checkpoint, engine.checkpointing, engine.evaluation):
        text = inspect.getsource(module)
        assert "getsource" not in text and "f_lineno" not in text and "pthread_kill" not in text
    assert not hasattr(checkpoint, "StopSignals")  # the engine's own, in engine.stopping


def sleepy(genome: np.ndarray) -> float:
    """A fitness whose evaluations outlast any reasonable stop: 30 s, unless told to end."""
    sleepy_gate.wait(30)
    return float(np.sum(genome * genome))


sleepy_gate = threading.Event()


def test_a_stop_while_waiting_on_a_stdlib_thread_pool_is_honoured_at_once(
    tmp_path: Path, guarded: list[int]
) -> None:
    """SIGTERM while the loop waits on a stdlib ThreadPoolExecutor whose evaluations sleep: the
    loop stops within a step (not at the end of the evaluations), its checkpoint written, with
    Interrupted (exit code 75); the evaluations in flight are abandoned."""
    import time

    path = tmp_path / "threads.ckpt"
    sleepy_gate.clear()
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    with cf.ThreadPoolExecutor(2) as threads:
        try:
            t0 = time.monotonic()
            timer.start()
            with pytest.raises(Interrupted) as info:
                ga(threads, fitness=sleepy, checkpoint=path)
            waited = time.monotonic() - t0
        finally:
            timer.cancel()
            sleepy_gate.set()  # the abandoned evaluations end now: the pool's exit is quick
    assert info.value.code == 75 and info.value.signal == signal.SIGTERM
    assert waited < 20, waited  # generous: the evaluations alone would take minutes
    header = checkpoint.read_header(path)
    assert (header["generation"], header["evaluations"], header["finished"]) == (0, 0, False)
    assert guarded == []
    loop_entries.forget_run(path)


def test_stop_signals_outside_the_main_thread_do_nothing() -> None:
    out: list[bool] = []

    def enter() -> None:
        with stopping.StopSignals() as s:
            out.append(s._previous == {})

    t = threading.Thread(target=enter)
    t.start()
    t.join(10)
    assert out == [True]


# ---------------------------------------------------------------------------- through the launcher
JOB = '''\
"""A checkpoint test job: an engine loop whose fitness signals the master at a chosen task key
(or holds an evaluation until a gate file exists).  It passes no checkpoint keyword unless told:
the launcher's options reach the loop."""

import argparse
import functools
import os
import signal
import time

import numpy as np

import evocluster
from evocluster import engine
from evocluster import operators as ops

ACTIONS = {"usr1": signal.SIGUSR1, "term": signal.SIGTERM, "kill": signal.SIGKILL}


def fitness(master, when, action, genome):
    key = evocluster.rng._local.current.key  # this evaluation's task key
    if when is not None and key[0] == when[0] and key[1] >= when[1]:
        if action == "gate":  # hold until the gate file exists; the test signals meanwhile
            print(f"waiting at {key}", flush=True)
            deadline = time.monotonic() + 60
            while not os.path.exists("gate") and time.monotonic() < deadline:
                time.sleep(0.01)
        else:
            os.kill(master, ACTIONS[action])
    return float(np.sum(genome * genome)) + 1e-3 * evocluster.rng().random()


def run(args, i):
    seed = args.seed + i
    stop = args.stop if i == args.stop_loop else None
    fit = functools.partial(fitness, os.getpid(), stop, args.action)
    init = functools.partial(ops.random_reals, 16, 5, low=-2.0, high=2.0)
    common = {"executor": evocluster.get_executor(), "seed": seed, "log": print}
    if args.ckpt:
        common["checkpoint"] = args.ckpt
    if args.resume:
        common["resume"] = True
    mutate = functools.partial(ops.gaussian, sigma=0.3, p=0.5)
    if args.loop == "steady":
        return engine.steady_state(
            fit, init, evaluations=args.gens * 16, crossover=ops.blend, mutate=mutate,
            weights=(-1.0,), deterministic=True, in_flight=6, report_every=8, **common,
        )
    return engine.generational(
        fit, init, generations=args.gens, crossover=functools.partial(ops.blend, alpha=0.3),
        mutate=mutate, elitism=1, weights=(-1.0,), **common,
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--loop", default="generational")
    p.add_argument("--gens", type=int, default=8)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--loops", type=int, default=1)
    p.add_argument("--stop", type=lambda s: tuple(int(x) for x in s.split(",")))
    p.add_argument("--action", default="usr1")
    p.add_argument("--stop-loop", type=int, default=0)
    p.add_argument("--ckpt")
    p.add_argument("--resume", action="store_true")
    args = p.parse_args()
    print(f"master {os.getpid()}", flush=True)
    for i in range(args.loops):
        r = run(args, i)
        print(f"digest {i} {r.digest()} {r.state.evaluations}", flush=True)
'''


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("job") / "ckpt_job.py"
    path.write_text(JOB)
    return path


ENV = clean_env(EVOCLUSTER_KEY=KEY)
_references: dict[tuple[str, ...], list[str]] = {}


def digests(stdout: str) -> list[str]:
    return [line.split()[2] for line in stdout.splitlines() if line.startswith("digest ")]


def reference(job: Path, *args: str) -> list[str]:
    """The final digests of an uninterrupted serial run of the job with ``args``."""
    if args not in _references:
        r = run(launcher("--backend", "serial", str(job), *args), env=ENV)
        assert r.returncode == 0, output(r)
        _references[args] = digests(r.stdout)
    return _references[args]


def launch(where: str, *args: str) -> list[str]:
    """``serial``, ``local-N`` (a pool of N) or ``mpi-N`` (``mpiexec -n N``: N - 1 workers)."""
    if where == "serial":
        return launcher("--backend", "serial", *args)
    kind, n = where.split("-")
    if kind == "local":
        return launch_on("local", int(n), *args)
    return launch_on("mpich-wheel", int(n) - 1, *args)


@pytest.mark.parametrize(
    ("first", "then", "loop", "stop"),
    [
        ("serial", "local-3", "generational", "0,5"),  # during the initial population
        ("local-2", "serial", "generational", "3,7"),  # mid-generation
        pytest.param("mpi-3", "mpi-5", "generational", "3,7", marks=pytest.mark.mpi),
        pytest.param("mpi-5", "local-2", "generational", "0,9", marks=pytest.mark.mpi),
        pytest.param(
            "local-2", "mpi-3", "steady", "1,40", marks=pytest.mark.mpi
        ),  # deterministic, individuals in flight
        pytest.param("mpi-3", "local-3", "steady", "0,3", marks=pytest.mark.mpi),
    ],
)
def test_stopped_on_one_backend_resumed_on_another_ends_bit_identical(
    job: Path, tmp_path: Path, first: str, then: str, loop: str, stop: str
) -> None:
    args = ("--loop", loop)
    ckpt = "run.ckpt"
    stopped = run(
        launch(first, "--checkpoint", ckpt, str(job), *args, "--stop", stop), env=ENV, cwd=tmp_path
    )
    assert stopped.returncode == 75, output(stopped)
    assert "SIGUSR1" in stopped.stderr and "run.ckpt" in stopped.stderr, output(stopped)
    assert not digests(stopped.stdout)
    resumed = run(
        launch(then, "--checkpoint", ckpt, "--resume", str(job), *args), env=ENV, cwd=tmp_path
    )
    assert resumed.returncode == 0, output(resumed)
    assert (
        f"resumed {'steady_state' if loop == 'steady' else loop}() from run.ckpt" in resumed.stdout
    )
    assert digests(resumed.stdout) == reference(job, *args)


@pytest.mark.parametrize("where", ["local-3", pytest.param("mpi-3", marks=pytest.mark.mpi)])
def test_sigterm_while_a_worker_holds_an_evaluation(job: Path, tmp_path: Path, where: str) -> None:
    cmd = launch(where, "--checkpoint", "t.ckpt", str(job), "--stop", "2,4", "--action", "gate")
    with subprocess.Popen(
        cmd, env=ENV, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=default_signals,  # noqa: PLW1509 (signal.signal only)
    ) as proc:  # fmt: skip
        try:
            assert proc.stdout is not None
            master = None
            for line in proc.stdout:  # bounded: the gate opens by itself after 60 s
                if line.startswith("master "):
                    master = int(line.split()[1])
                if line.startswith("waiting at"):
                    break
            assert master is not None
            os.kill(master, signal.SIGTERM)  # the batch system's warning, mid-generation
            out, err = proc.communicate(timeout=60)
        finally:  # nothing of the run outlives the test, whatever happened
            kill_session(proc.pid)
            if proc.poll() is None:
                proc.wait(30)
    assert proc.returncode == 75, f"{proc.returncode}\n{out}\n{err}"
    assert "SIGTERM" in err and "generation 1," in err, err  # the last complete one
    (tmp_path / "gate").touch()
    resumed = run(
        launch("local-2", "--checkpoint", "t.ckpt", "--resume", str(job)), env=ENV, cwd=tmp_path
    )
    assert resumed.returncode == 0, output(resumed)
    assert digests(resumed.stdout) == reference(job)


@pytest.mark.mpi  # resumed under mpiexec
def test_kill_9_between_checkpoints_then_resume(job: Path, tmp_path: Path) -> None:
    killed = run(
        launch("local-2", "--checkpoint", "k.ckpt", "--checkpoint-every-generations", "2",
               str(job), "--stop", "5,3", "--action", "kill"),
        env=ENV, cwd=tmp_path,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, output(killed)
    header = checkpoint.read_header(tmp_path / "k.ckpt")
    assert (header["generation"], header["finished"]) == (4, False), header
    resumed = run(
        launch("mpi-3", "--checkpoint", "k.ckpt", "--resume", str(job)), env=ENV, cwd=tmp_path
    )
    assert resumed.returncode == 0, output(resumed)
    assert digests(resumed.stdout) == reference(job)


def test_a_requeued_slurm_job_resumes_without_being_told(job: Path, tmp_path: Path) -> None:
    args = ("--loops", "2", "--stop-loop", "1", "--gens", "5")
    first = run(
        launch("local-2", "--checkpoint", "s.ckpt", str(job), *args, "--stop", "2,3"),
        env=ENV, cwd=tmp_path,
    )  # fmt: skip
    assert first.returncode == 75, output(first)
    assert len(digests(first.stdout)) == 1  # the first loop had finished
    again = run(
        launch("local-2", "--checkpoint", "s.ckpt", str(job), *args),
        env=clean_env(EVOCLUSTER_KEY=KEY, SLURM_RESTART_COUNT="1"), cwd=tmp_path,
    )  # fmt: skip
    assert again.returncode == 0, output(again)
    assert "had finished in s.ckpt" in again.stdout and "resumed generational()" in again.stdout
    assert digests(again.stdout) == reference(job, *args)


def test_plain_python_job_exits_75_and_resumes(job: Path, tmp_path: Path) -> None:
    env = clean_env(EVOCLUSTER_KEY=KEY, EVOCLUSTER_WORKERS="2")
    stopped = run(
        [sys.executable, str(job), "--ckpt", "p.ckpt", "--stop", "4,2"], env=env, cwd=tmp_path
    )
    assert stopped.returncode == 75, output(stopped)
    resumed = run([sys.executable, str(job), "--ckpt", "p.ckpt", "--resume"], env=env, cwd=tmp_path)
    assert resumed.returncode == 0, output(resumed)
    assert digests(resumed.stdout) == reference(job)


LATE_SIGNALS = """
import functools, os, signal, sys
import evocluster
from evocluster import engine, checkpoint
from evocluster import operators as ops

def fitness(genome):
    if evocluster.rng._local.current.key[0] == 1:
        os.kill(os.getpid(), signal.SIGUSR1)  # the batch system's warning, in generation 1
    return float(sum(genome))

with evocluster.Executor(backend="serial") as ex:
    try:
        engine.generational(
            fitness, functools.partial(ops.random_reals, 8, 3, low=-1.0, high=1.0), generations=4,
            seed=5, crossover=ops.blend, mutate=ops.gaussian, executor=ex, checkpoint="late.ckpt",
        )
    except checkpoint.Interrupted:
        assert signal.getsignal(signal.SIGUSR1) is not signal.SIG_DFL
        for signum in (signal.SIGUSR1, signal.SIGTERM):  # late ones, on the way out
            os.kill(os.getpid(), signum)
        print("still here", flush=True)
        raise
"""


def test_a_late_stop_signal_on_the_way_out_keeps_exit_75(tmp_path: Path) -> None:
    """Once a loop has stopped and checkpointed, another SIGUSR1 or SIGTERM (a second warning, an
    evaluation still running that signals) must not kill the process: a batch script would see
    138 or 143, not 75, and not requeue the job."""
    r = run([sys.executable, "-c", LATE_SIGNALS], env=ENV, cwd=tmp_path)
    assert r.returncode == 75, output(r)
    assert "still here" in r.stdout and (tmp_path / "late.ckpt").exists(), output(r)


def test_launcher_refuses_what_cannot_resume(job: Path, tmp_path: Path) -> None:
    for args, words in [
        (("--resume",), "need --checkpoint"),
        (("--checkpoint", "absent.ckpt", "--resume"), "no checkpoint absent.ckpt"),
        (("--checkpoint", "x.ckpt", "--checkpoint-every", "-1"), ">= 0"),
    ]:
        r = run(launcher(*args, str(job)), env=ENV, cwd=tmp_path)
        assert r.returncode == 2 and words in r.stderr, output(r)
    done = run(
        launch("serial", "--checkpoint", "x.ckpt", str(job), "--gens", "2"), env=ENV, cwd=tmp_path
    )
    assert done.returncode == 0, output(done)
    again = run(
        launch("serial", "--checkpoint", "x.ckpt", str(job), "--gens", "2"), env=ENV, cwd=tmp_path
    )
    assert again.returncode == 2 and "exists already" in again.stderr, output(again)
    other = run(
        launch("serial", "--checkpoint", "x.ckpt", "--resume", str(job), "--gens", "2",
               "--seed", "12"),
        env=ENV, cwd=tmp_path,
    )  # fmt: skip
    assert other.returncode == 1, output(other)
    assert "x.ckpt" in other.stderr and "seed 11" in other.stderr and "seed 12" in other.stderr


@pytest.mark.scoop
@pytest.mark.parametrize(("loop", "stop"), [("generational", "3,7"), ("steady", "1,40")])
def test_under_scoop_a_stopped_loop_resumes_bit_identically(
    job: Path, tmp_path: Path, loop: str, stop: str
) -> None:
    """SCOOP: SIGUSR1 to the origin checkpoints and stops the loop; the job exits 75, which
    SCOOP's launcher reports as 140 (it cannot exit 75; the SLURM template requeues on it); the
    same command with ``--resume`` ends as an uninterrupted run."""
    scoop = [sys.executable, "-m", "scoop", "-n", "3", str(job), "--loop", loop]
    stopped = run([*scoop, "--ckpt", "run.ckpt", "--stop", stop], env=ENV, cwd=tmp_path)
    # SIGUSR2 ended SCOOP's launcher: a shell (the batch script) sees 140
    assert stopped.returncode == -signal.SIGUSR2, output(stopped)
    assert "stands for 75" in stopped.stderr, output(stopped)
    assert not digests(stopped.stdout)
    resumed = run([*scoop, "--ckpt", "run.ckpt", "--resume"], env=ENV, cwd=tmp_path)
    assert resumed.returncode == 0, output(resumed)
    assert digests(resumed.stdout) == reference(job, "--loop", loop)


# ---------------------------------------------------------------------------- issue 20
def hold_in_an_evaluation(cmd: list[str], cwd: Path) -> subprocess.Popen[str]:
    """Start ``cmd`` (the job above with ``--action gate``) and return once it holds an
    evaluation (its checkpoint is written and its path held)."""
    proc = subprocess.Popen(
        cmd, env=ENV, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=default_signals,  # noqa: PLW1509 (signal.signal only)
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:  # bounded: the gate opens by itself after 60 s
        if line.startswith("waiting at"):
            return proc
    kill_session(proc.pid)
    pytest.fail(f"the first run did not reach its evaluation: {proc.communicate(timeout=30)}")


def test_two_runs_on_one_checkpoint_path_the_second_is_refused(job: Path, tmp_path: Path) -> None:
    """Issue 20: two runs started together with one ``--checkpoint`` overwrote each other.  The
    second is refused at start (exit 2) naming the first's pid; once the first is killed
    (SIGKILL: its lock dies with it) the path can be resumed, to the uninterrupted result."""
    first = hold_in_an_evaluation(
        launch("serial", "--checkpoint", "same.ckpt", str(job), "--stop", "2,3", "--action",
               "gate"),
        tmp_path,
    )  # fmt: skip
    try:
        second = run(
            launch("local-2", "--checkpoint", "same.ckpt", "--resume", str(job), "--seed", "3"),
            env=ENV, cwd=tmp_path,
        )  # fmt: skip
        assert second.returncode == 2, output(second)
        assert f"pid {first.pid} on " in second.stderr and "same.ckpt" in second.stderr
        assert "in use by another run" in second.stderr and "Traceback" not in second.stderr
        assert not second.stdout, output(second)  # refused before the job ran
        first.kill()  # SIGKILL, between two checkpoints
        first.communicate(timeout=30)
    finally:
        kill_session(first.pid)
        if first.poll() is None:
            first.wait(30)
    (tmp_path / "gate").touch()
    resumed = run(
        launch("local-2", "--checkpoint", "same.ckpt", "--resume", str(job)), env=ENV,
        cwd=tmp_path,
    )  # fmt: skip
    assert resumed.returncode == 0, output(resumed)
    assert digests(resumed.stdout) == reference(job)


@pytest.mark.mpi
def test_under_mpi_a_run_on_a_held_path_is_refused_and_every_rank_stops(
    job: Path, tmp_path: Path
) -> None:
    """Under MPI the lock is taken once MPI has started, before the workers are started: a path
    another run holds is a usage error (exit 2, one line naming the holder's pid), every rank
    released (no hang, nothing left)."""
    first = hold_in_an_evaluation(
        launch("serial", "--checkpoint", "m.ckpt", str(job), "--stop", "1,0", "--action", "gate"),
        tmp_path,
    )
    try:
        second = run(
            launch("mpi-3", "--checkpoint", "m.ckpt", "--resume", str(job)), env=ENV,
            cwd=tmp_path, no_leftovers=True,
        )  # fmt: skip
        assert second.returncode == 2, output(second)
        assert f"pid {first.pid} on " in second.stderr and "Traceback" not in second.stderr
        assert second.stderr.count("evocluster:") == 1, output(second)
    finally:
        kill_session(first.pid)
        first.communicate(timeout=30)


OTHER_JOB = '''\
"""Another GA job: the same algorithm and seed as onemax_builtin.py, 100 x 64, another fitness."""
import evocluster
from evocluster import engine, operators as ops


def zeros(genome):
    return float((~genome).sum())


if __name__ == "__main__":
    engine.generational(
        zeros, lambda rng: ops.random_bits(100, 64, rng), executor=evocluster.get_executor(),
        generations=3, seed=7, crossover=ops.two_point,
        mutate=lambda x, rng: ops.bit_flip(x, rng, p=0.01), elitism=2,
    )
'''
ONEMAX_BUILTIN = str(Path(__file__).resolve().parents[2] / "jobs" / "onemax_builtin.py")


def test_a_checkpoint_of_another_job_is_refused_naming_what_differs(tmp_path: Path) -> None:
    """Issue 20's case: a checkpoint of another GA job (same algorithm and seed, 100 x 64
    genomes, another fitness) was resumed by onemax_builtin.py (200 x 100): exit 0, a wrong
    result.  It is refused, naming the job, fitness and population of each."""
    (tmp_path / "a.py").write_text(OTHER_JOB)
    other = run(launch("serial", "--checkpoint", "it.ckpt", "a.py"), env=ENV, cwd=tmp_path)
    assert other.returncode == 0, output(other)
    header = checkpoint.read_header(tmp_path / "it.ckpt")
    assert (header["job"], header["fitness"]) == ("a.py", "__main__.zeros"), header
    resumed = run(
        launch("serial", "--checkpoint", "it.ckpt", "--resume", ONEMAX_BUILTIN, "--seed", "7"),
        env=ENV, cwd=tmp_path,
    )  # fmt: skip
    assert resumed.returncode == 1, output(resumed)
    assert "resumed generational()" not in resumed.stdout, output(resumed)
    message = next(
        line for line in resumed.stderr.splitlines() if line.startswith("evocluster.checkpoint")
    )
    for words in (
        "it.ckpt", "job a.py", "fitness __main__.zeros", "population 100 x 64 (bool)",
        "job onemax_builtin.py", "fitness __main__.onemax", "population 200 x 100 (bool)",
    ):  # fmt: skip
        assert words in message, message
    assert "elitism" not in message, message  # the same in both: not named
    assert checkpoint.read_header(tmp_path / "it.ckpt") == header  # left as it was


def test_the_same_job_resumes_from_another_directory_and_a_copy_of_it(
    job: Path, tmp_path: Path
) -> None:
    """What identifies a job is its file's name, not where it is: a copy of the project in
    another directory, run from there (and on another backend), resumes its checkpoint."""
    one, two = tmp_path / "one", tmp_path / "two"
    for where in (one, two):
        where.mkdir()
        (where / job.name).write_text(job.read_text())
    stopped = run(
        launch("serial", "--checkpoint", "run.ckpt", job.name, "--stop", "3,2"), env=ENV, cwd=one
    )
    assert stopped.returncode == 75, output(stopped)
    resumed = run(
        launch("local-2", "--checkpoint", "../one/run.ckpt", "--resume", job.name), env=ENV,
        cwd=two,
    )  # fmt: skip
    assert resumed.returncode == 0, output(resumed)
    assert digests(resumed.stdout) == reference(job)


def ga(executor: cf.Executor, **kw: Any) -> engine.Result:
    """A small GA on sphere, every argument overridable."""
    args: dict[str, Any] = {
        "executor": executor, "seed": 3, "log": None, "generations": 6,
        "crossover": functools.partial(ops.blend, alpha=0.3),
        "mutate": functools.partial(ops.gaussian, sigma=0.2, p=0.5), "elitism": 1,
        "weights": (-1.0,),
        "population": functools.partial(ops.random_reals, 12, 4, low=-2.0, high=2.0),
    } | kw  # fmt: skip
    return engine.generational(args.pop("fitness", sphere), args.pop("population"), **args)


def cube(x: np.ndarray) -> float:
    return float(np.sum(np.abs(x) ** 3))


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"fitness": cube}, ["fitness test_engine_checkpoint.sphere",
                             "fitness test_engine_checkpoint.cube"]),
        ({"population": functools.partial(ops.random_reals, 12, 5, low=-2.0, high=2.0)},
         ["population 12 x 4 (float64)", "population 12 x 5 (float64)"]),
        ({"population": functools.partial(ops.random_reals, 20, 4, low=-2.0, high=2.0)},
         ["population 12 x 4", "population 20 x 4"]),
        ({"mutate": functools.partial(ops.polynomial, eta=20.0, low=-2.0, high=2.0)},
         ["mutate evocluster.operators.gaussian", "mutate evocluster.operators.polynomial"]),
        ({"cxpb": 0.5, "elitism": 2}, ["cxpb 0.9", "cxpb 0.5", "elitism 1", "elitism 2"]),
        ({"weights": (1.0,)}, ["weights [-1.0]", "weights [1.0]"]),
    ],
    ids=["fitness", "genome", "size", "operator", "probabilities", "weights"],
)  # fmt: skip
def test_a_resume_with_other_settings_is_refused_naming_them(
    serial: evocluster.Executor, tmp_path: Path, change: dict[str, Any], named: list[str]
) -> None:
    path = tmp_path / "run.ckpt"
    ga(serial, checkpoint=path)
    engine_runs_forget(path)
    with pytest.raises(CheckpointError) as info:
        ga(serial, checkpoint=path, resume=True, **change)
    err = info.value
    assert err.reason == "mismatch" and str(path) in str(err)
    for words in named:
        assert words in str(err), str(err)
    differs = str(err).split(" is generational() of ")[1].split(": resume it")[0]
    assert "seed" not in differs and "job" not in differs, differs  # only what differs
    engine_runs_forget(path)
    again = ga(serial, checkpoint=path, resume=True)  # refused without taking its place
    assert again.state.generation == 6


def test_fewer_generations_than_the_checkpoint_holds_are_refused(
    serial: evocluster.Executor, tmp_path: Path, guarded: list[int]
) -> None:
    """Issue 20: a checkpoint at generation 12 resumed with generations=10 returned 12 without
    a word.  Continuing to more is the feature; asking for fewer names both numbers."""
    path = tmp_path / "run.ckpt"
    finished = ga(serial, checkpoint=path)
    engine_runs_forget(path)
    with pytest.raises(CheckpointError) as info:
        ga(serial, checkpoint=path, resume=True, generations=4)
    assert info.value.reason == "mismatch"
    assert "6 generations" in str(info.value) and "generations=4" in str(info.value)
    engine_runs_forget(path)
    assert ga(serial, checkpoint=path, resume=True).digest() == finished.digest()  # as many
    engine_runs_forget(path)
    # stopped after generation 3 (a signal in generation 4): resumed asking for 2
    stopped = tmp_path / "stopped.ckpt"
    with pytest.raises(Interrupted):
        ga(serial, checkpoint=stopped, fitness=functools.partial(signalling, sphere, (4, 1)))
    assert checkpoint.read_header(stopped)["generation"] == 3
    with pytest.raises(CheckpointError, match=r"3 generations in it.*generations=2"):
        ga(serial, checkpoint=stopped, resume=True, generations=2,
           fitness=functools.partial(signalling, sphere, None))  # fmt: skip
    engine_runs_forget(stopped)
    with pytest.raises(ValueError, match=r"state at generation 6.*generations=5"):
        ga(serial, resume=finished.state, generations=5)
    # the other loops count what they count: steady_state offspring, ask_tell iterations
    steady = tmp_path / "steady.ckpt"
    run_loop("steady_state", serial, checkpoint=steady)  # 60 offspring
    engine_runs_forget(steady)
    with pytest.raises(CheckpointError, match=r"60 evaluations in it.*evaluations=10"):
        engine.steady_state(
            functools.partial(signalling, sphere, None),
            functools.partial(ops.random_reals, 12, 4, low=-2.0, high=2.0),
            executor=serial, seed=3, log=None, evaluations=10, crossover=ops.blend,
            mutate=functools.partial(ops.gaussian, sigma=0.2, p=0.5), weights=(-1.0,),
            deterministic=True, in_flight=5, report_every=6, checkpoint=steady, resume=True,
        )  # fmt: skip
    engine_runs_forget(steady)
    asked = tmp_path / "ask.ckpt"
    run_loop("ask_tell", serial, checkpoint=asked)  # 7 iterations
    engine_runs_forget(asked)
    with pytest.raises(CheckpointError, match=r"7 iterations in it.*iterations=3"):
        engine.ask_tell(
            GlobalRandomSearch([1.5, -1.0, 0.5]), functools.partial(signalling, sphere, None),
            executor=serial, seed=3, log=None, iterations=3, checkpoint=asked, resume=True,
        )  # fmt: skip
    engine_runs_forget(asked)


def test_a_checkpoint_written_before_these_records_still_resumes(
    serial: evocluster.Executor, tmp_path: Path, guarded: list[int]
) -> None:
    """A checkpoint of an older evocluster (no job, fitness or settings in its entries)
    resumes as it did: unchecked, to the uninterrupted result."""
    whole = ga(serial, fitness=functools.partial(signalling, sphere, None))
    path = tmp_path / "old.ckpt"
    with pytest.raises(Interrupted):
        ga(serial, checkpoint=path, fitness=functools.partial(signalling, sphere, (3, 2)))
    header, body = checkpoint.load(path)
    for entry in body["loops"]:
        for name in ("job", "fitness", "settings"):
            entry.pop(name, None)  # (absent from an old one)
    old = {k: v for k, v in header.items() if k in ("generation", "evaluations", "finished")}
    checkpoint.save(path, body, algorithm=header["algorithm"], seed=header["seed"], extra=old)
    resumed = ga(serial, checkpoint=path, resume=True,
                 fitness=functools.partial(signalling, sphere, None))  # fmt: skip
    assert resumed.digest() == whole.digest()
    engine_runs_forget(path)


EARLY = """\
import os, signal, sys
import evocluster
from evocluster import engine, operators as ops

os.kill(os.getpid(), getattr(signal, sys.argv[1]))  # before any loop has its handler
print("the job goes on", flush=True)
if sys.argv[2] == "loop":
    engine.generational(
        lambda g: float(g.sum()), lambda r: ops.random_bits(8, 8, r),
        executor=evocluster.get_executor(), generations=3, seed=1, crossover=ops.uniform,
        mutate=lambda x, r: ops.bit_flip(x, r, p=0.1), log=None,
    )
    print("not reached", flush=True)
"""


@pytest.mark.parametrize("signame", ["SIGUSR1", "SIGTERM"])
def test_a_stop_signal_before_the_first_loop_is_honoured_by_it(
    tmp_path: Path, signame: str
) -> None:
    """A stop signal in the first moments of a ``--checkpoint`` run (before the loop installs
    its handler) ended it with 138 (SIGUSR1) and no message.  The first loop takes it: its
    checkpoint written, exit 75 and the usual line; without a loop, one line says so."""
    (tmp_path / "early.py").write_text(EARLY)
    r = run(launch("local-2", "--checkpoint", "e.ckpt", "early.py", signame, "loop"), env=ENV,
            cwd=tmp_path)  # fmt: skip
    assert r.returncode == 75, output(r)
    assert "the job goes on" in r.stdout and "not reached" not in r.stdout, output(r)
    assert f"{signame}: generational() stopped" in r.stderr and "e.ckpt" in r.stderr, output(r)
    assert checkpoint.read_header(tmp_path / "e.ckpt")["evaluations"] == 0
    r = run(launch("serial", "--checkpoint", "n.ckpt", "early.py", signame, "none"), env=ENV,
            cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, output(r)
    said = [line for line in r.stderr.splitlines() if line.startswith("evocluster:")]
    assert len(said) == 1 and signame in said[0] and "no engine loop" in said[0], output(r)


def test_a_directory_given_as_the_checkpoint_is_named_as_one(
    job: Path, tmp_path: Path, serial: evocluster.Executor
) -> None:
    """``--checkpoint adir`` said "exists already ... remove it"."""
    (tmp_path / "adir").mkdir()
    for extra in ((), ("--resume",)):
        r = run(launch("serial", "--checkpoint", "adir", *extra, str(job)), env=ENV,
                cwd=tmp_path)  # fmt: skip
        assert r.returncode == 2, output(r)
        assert "adir is a directory: give the path of a file" in r.stderr, output(r)
        assert "remove it" not in r.stderr, output(r)
    for resume in (None, True):
        with pytest.raises(CheckpointError, match="is a directory: give the path of a file"):
            run_loop("generational", serial, checkpoint=tmp_path / "adir", resume=resume)
