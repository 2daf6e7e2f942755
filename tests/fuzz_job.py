"""The fuzz layer's driver job: runs a batch of generated cases on whatever workers it is launched
with, and writes one JSON line per case (tests/test_fuzz_map.py generates and checks them).

    python -m evocluster --backend serial tests/fuzz_job.py CASES.json OUT.jsonl
    python -m evocluster --backend local --workers 2 tests/fuzz_job.py CASES.json OUT.jsonl
    mpiexec -n 3 python -m evocluster tests/fuzz_job.py CASES.json OUT.jsonl

``CASES.json`` is ``{"markers": DIR, "cases": [...]}`` (see ``run_map_case`` and
``run_engine_case`` for a case's fields; a failing test prints the cases that failed, ready to
paste).  For each case the master first computes the model in-process -- the builtin ``map`` of
a fresh copy of the same callable over the same items, each behaviour replaced by "value" (the
engine: the same loop on ``Executor(backend="serial")``) -- then runs it through evocluster and
writes both, each result as a digest (``fuzz_cases.digest``) or an error as its type, MRO, message
and cause chain.  A ``start`` line precedes each case, so a run that dies names the case that
killed it.  Whatever a case raises, even a ``BaseException``, is recorded and the batch goes on.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
import traceback
from typing import Any

import fuzz_cases as fc
import numpy as np

import evocluster
from evocluster import engine
from evocluster import operators as ops


def main_function(*args: Any) -> Any:
    """A function of the job's ``__main__``, outside the guard: the workers import it."""
    return fc.evaluate("main", args)


def main_redefined(*args: Any) -> Any:
    """The module-level namesake of a function the main guard defines again (issue 20 item 11):
    the job calls the guard's, so the workers must run the guard's too (or refuse)."""
    return fc.evaluate("main_redefined module-level", args)


def engine_fitness(fail: dict[str, str], genome: Any) -> Any:
    """The engine cases' fitness: a number from the genome and this task's own stream; at the task
    keys of ``fail`` (``"g,i"``), what that behaviour says, or a bad return value."""
    key = evocluster.rng._local.current.key  # this evaluation's task key
    behaviour = fail.get(f"{key[0]},{key[1]}")
    value = float(np.sum(np.asarray(genome) ** 2)) + 1e-3 * evocluster.rng().random()
    if behaviour is None:
        return value
    bad = _BAD_RETURNS.get(behaviour)
    if bad is not None:
        return bad
    fc.behave(int(key[1]), behaviour)
    return value


_BAD_RETURNS: dict[str, Any] = {
    "return_nan": float("nan"),
    "return_inf": float("inf"),
    "return_huge_int": 10**400,
    "return_bool": True,
    "return_str": "1.0",
    "return_none": None,
}


def engine_objectives(fail: dict[str, str], genome: Any) -> Any:
    """Two objectives (nsga2): the fitness and its complement."""
    value = engine_fitness(fail, genome)
    if isinstance(value, float) and np.isfinite(value):
        return (value, 10.0 - value)
    return (value, value)


# ---------------------------------------------------------------------------- outcomes
def error_info(e: BaseException) -> dict[str, Any]:
    """An exception as data: its type, MRO, message, and the chain of causes."""
    chain: list[list[str]] = []
    seen: set[int] = set()
    cur = e.__cause__ or e.__context__
    while cur is not None and id(cur) not in seen and len(chain) < 8:
        seen.add(id(cur))
        chain.append([type(cur).__name__, _text(cur)[:300]])
        cur = cur.__cause__ or cur.__context__
    return {
        "type": type(e).__name__,
        "mro": [c.__name__ for c in type(e).__mro__],
        "message": _text(e)[:1500],
        "chain": chain,
        "exception": isinstance(e, Exception),
    }


def _text(e: BaseException) -> str:
    try:
        return str(e)
    except Exception as err:  # its own __str__
        return f"<str() raised {err!r}>"


def outcome(fn: Any) -> dict[str, Any]:
    """``{"v": digest}`` of ``fn()``'s value, or ``{"e": error_info}``: whatever it raised."""
    try:
        return {"v": fc.digest(fn())}
    except BaseException as e:  # a fitness's SystemExit must not end the batch
        return {"e": error_info(e)}


# ---------------------------------------------------------------------------- map cases
def callable_for(shape: str, guard: dict[str, Any]) -> Any:
    """A fresh callable of ``shape`` (the main guard's shapes come from ``guard``)."""
    if shape in guard:
        return guard[shape]
    if shape == "main_function":
        return main_function
    if shape == "main_redefined":
        return guard["main_redefined_guard"]
    return fc.SHAPES[shape][0]()


def items_for(case: dict[str, Any], markers: str, model: bool) -> list[tuple[Any, ...]]:
    """The case's items, ``(i, behaviour, payload)`` (built afresh: ``model`` replaces every
    behaviour but those returning a value of their own by "value"); payloads alone for callables
    that take no behaviour."""
    shared: dict[str, Any] = {}
    items = []
    specs = [*case["items"], *[["value", ["int", str(k)]] for k in range(case.get("extra", 0))]]
    for i, (given, spec) in enumerate(specs):
        behaviour, name = given, given.partition(":")[0]
        if name in fc.MARKED:  # a marker file of its own, by absolute path (a fitness may chdir)
            behaviour = f"{name}:{os.path.join(markers, str(case['id']))}-{i}"
        if model and name not in fc.RETURNS_OWN:
            behaviour = "value"  # the model: what the callable returns when nothing goes wrong
        items.append((i, behaviour, fc.build(spec, shared)))
    if not fc.SHAPES.get(case["shape"], (None, True, True))[2]:
        return [payload for _, _, payload in items]
    return items


def run_map_case(
    case: dict[str, Any],
    markers: str,
    guard: dict[str, Any],
    make: Any = evocluster.Executor,
) -> dict[str, Any]:
    """A map case: ``api`` (``map``, ``map_multi``: three iterables, ``starmap``, ``emap``:
    ``evocluster.map``, ``submit``), ``shape`` (a callable of ``fuzz_cases.SHAPES`` or the job's),
    ``items`` (``[behaviour, payload spec]``), ``extra`` (healthy items appended), ``chunksize``
    and ``options`` (``Executor`` keywords: serialization, on_error, penalty, eval_timeout,
    isolate, eval_memory), given to ``make`` (``Executor``; a test in its own process passes a
    pool's ``with_policy``)."""
    os.makedirs(markers, exist_ok=True)
    model_fn = callable_for(case["shape"], guard)
    model_items = items_for(case, markers, model=True)
    model = [outcome(functools.partial(_call, model_fn, x, case["api"])) for x in model_items]
    out: dict[str, Any] = {"model": model}
    try:
        ex = make(**case.get("options", {}))
    except BaseException as e:
        out["refused"] = error_info(e)
        return out
    try:
        out.update(_through(ex, case, callable_for(case["shape"], guard), markers))
        out["failures"] = [
            [f.item, f.attempt, f.action, f.error.rsplit(".", 1)[-1]] for f in ex.failures
        ]
    finally:
        ex.shutdown(wait=True)
    return out


def _call(fn: Any, item: Any, api: str) -> Any:
    """What the builtin map would call for ``item`` under ``api``."""
    if api in ("map_multi", "starmap"):
        return fn(*item)
    return fn(item)


def _through(ex: Any, case: dict[str, Any], fn: Any, markers: str) -> dict[str, Any]:
    """Run the case's items through ``ex``; the results (digests) in order, and the error that
    stopped the map, with the index it stopped at."""
    items = items_for(case, markers, model=False)
    api, kw = case["api"], {}
    if case.get("chunksize", "default") != "default":
        kw["chunksize"] = case["chunksize"]
    if api == "submit":
        return {"got": _submitted(ex, fn, items)}
    got: list[dict[str, Any]] = []
    try:
        if api == "map":
            results = ex.map(fn, items, **kw)
        elif api == "map_multi":
            results = ex.map(fn, *zip(*items), **kw) if items else ex.map(fn, [], [], [], **kw)
        elif api == "starmap":
            results = ex.starmap(fn, items, **kw)
        else:  # emap: the default executor's list-returning map
            results = iter(evocluster.map(fn, items, **kw))
        for value in results:
            got.append({"v": fc.digest(value)})
    except BaseException as e:  # evocluster.map returns a list: which item raised is unknown
        return {"got": got, "raised": error_info(e), "at": None if api == "emap" else len(got)}
    return {"got": got}


def _submitted(ex: Any, fn: Any, items: list[Any]) -> list[dict[str, Any]]:
    futures: list[Any] = []
    for x in items:
        try:
            futures.append(ex.submit(fn, x))
        except BaseException as e:  # refused at the call (an argument that cannot travel)
            futures.append(error_info(e))
    return [
        {"e": {**f, "at_call": True}} if isinstance(f, dict) else outcome(f.result) for f in futures
    ]


# ---------------------------------------------------------------------------- engine cases
def run_engine_case(case: dict[str, Any], guard: dict[str, Any]) -> dict[str, Any]:
    """An engine case: ``loop`` (generational, mu_plus_lambda, steady_state, nsga2), ``shape``
    (how the fitness is handed over), ``fail`` (``{"g,i": behaviour or bad return}``), ``seed``,
    ``pop``, ``gens``, ``on_error`` and ``penalty`` (the loop's keywords).  The model is the same
    loop on a serial executor in this process."""
    with evocluster.Executor(backend="serial") as serial:
        model = _loop(case, serial, guard)
    return {"model": model, "got": _loop(case, evocluster.get_executor(), guard)}


def _engine_callable(case: dict[str, Any], guard: dict[str, Any]) -> Any:
    base = engine_objectives if case["loop"] == "nsga2" else engine_fitness
    fail = dict(case.get("fail", {}))
    shape = case["shape"]
    if shape == "lambda":
        return lambda genome: base(fail, genome)
    if shape == "main_guard_function":
        return functools.partial(guard["engine_guard"], base, fail)
    return functools.partial(base, fail)


def _loop(case: dict[str, Any], ex: Any, guard: dict[str, Any]) -> dict[str, Any]:
    fitness = _engine_callable(case, guard)
    pop, gens = int(case["pop"]), int(case["gens"])
    init = functools.partial(ops.random_reals, pop, 4, low=-2.0, high=2.0)
    common: dict[str, Any] = {
        "executor": ex,
        "seed": int(case["seed"]),
        "log": lambda *a, **k: None,
        "crossover": functools.partial(ops.blend, alpha=0.3),
        "mutate": functools.partial(ops.gaussian, sigma=0.3, p=0.5),
        "checkpoint": False,
    }
    for key in ("on_error", "penalty"):
        if case.get(key) is not None:
            common[key] = tuple(case[key]) if isinstance(case[key], list) else case[key]
    loop = case["loop"]
    try:
        if loop == "generational":
            r = engine.generational(fitness, init, generations=gens, elitism=1, **common)
        elif loop == "mu_plus_lambda":
            r = engine.mu_plus_lambda(fitness, init, generations=gens, lambda_=pop, **common)
        elif loop == "steady_state":
            r = engine.steady_state(
                fitness, init, evaluations=pop * (gens + 1), deterministic=True, in_flight=3,
                **common,
            )  # fmt: skip
        else:
            r = engine.nsga2(fitness, init, generations=gens, weights=(-1.0, -1.0), **common)
    except BaseException as e:
        return {"e": error_info(e)}
    return {"v": r.digest(), "evaluations": int(r.state.evaluations), "failed": int(r.failed)}


# ---------------------------------------------------------------------------- the batch
def run_batch(path: str, out_path: str, guard: dict[str, Any]) -> None:
    with open(path) as fh:
        batch = json.load(fh)
    markers = os.path.abspath(batch["markers"])
    os.makedirs(markers, exist_ok=True)
    with open(out_path, "a") as out:
        for case in batch["cases"]:
            out.write(json.dumps({"start": case["id"], "pid": os.getpid()}) + "\n")
            out.flush()
            t0 = time.monotonic()
            try:
                if case.get("kind") == "engine":
                    record = run_engine_case(case, guard)
                else:
                    record = run_map_case(case, markers, guard)
            except BaseException as e:  # the driver's own failure: recorded, never silent
                record = {"driver_error": error_info(e), "tb": traceback.format_exc()[-3000:]}
            record.update(id=case["id"], seconds=round(time.monotonic() - t0, 3), pid=os.getpid())
            out.write(json.dumps(record) + "\n")
            out.flush()
    if markers:  # what a fitness left finishes after this only if the run's end waited for it
        os.makedirs(markers, exist_ok=True)
        with open(os.path.join(markers, "DONE"), "w") as fh:
            fh.write(f"{time.time()}\n")
    print("FUZZ DONE", flush=True)


if __name__ == "__main__":

    def main_guard_function(*args: Any) -> Any:
        """Defined only under the main guard: the workers cannot import it."""
        return fc.evaluate("main guard", args)

    def main_redefined(*args: Any) -> Any:  # the point of the case: a module-level name again
        return fc.evaluate("main_redefined guard", args)

    class GuardBox:
        """A class defined under the main guard, used as the callable."""

        def __init__(self, *args: Any) -> None:
            self.value = fc.evaluate("GuardBox", args)

    def engine_guard(base: Any, fail: dict[str, str], genome: Any) -> Any:
        return base(fail, genome)

    run_batch(
        sys.argv[1],
        sys.argv[2],
        {
            "main_guard_function": main_guard_function,
            "main_redefined_guard": main_redefined,
            "main_guard_class": GuardBox,
            "engine_guard": engine_guard,
        },
    )
