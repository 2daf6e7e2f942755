"""The serialisation layer: policies x callables x backends, round trips, counted transfers."""

from __future__ import annotations

import array
import json
import pickle
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from deap import base, creator, gp
from helpers import FIXTURES, JOBS, declare, launcher, output, run
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from evocluster import RemoteError, RemoteTraceback
from evocluster import _serialization as serialization

MATRIX_JOB = FIXTURES / "jobs" / "serialization_matrix.py"
sys.path.insert(0, str(MATRIX_JOB.parent))
from serialization_matrix import REFUSED_BY_STRICT, callables  # noqa: E402

#: where strict mode must say the refused object sits
STRICT_PATHS = {
    "lambda": "fn -> <lambda> defined at serialization_matrix.py:",
    "closure": "fn -> function make_closure.<locals>.shifted defined at serialization_matrix.py:",
    "nested def": "fn -> function callables.<locals>.nested defined at serialization_matrix.py:",
    "partial of lambda": "fn -> functools.partial.func -> <lambda> defined at serialization_matrix",
    "GP ephemeral from lambda": "fn -> <lambda> defined at serialization_matrix.py:",
    "compiled GP tree": "fn -> <lambda> defined at <string>:1",
}
BACKENDS = {"local": (["--backend", "local", "--workers", "2"], None), "mpi": ([], 3)}
_runs: dict[str, dict[str, Any]] = {}
#: one run of the matrix job per backend and pytest process, shared by the backend's tests: they go
#: to one xdist worker (``mpi`` marked)
BACKEND_PARAMS = declare(
    BACKENDS, mpi=["mpi"], marks=lambda b: [pytest.mark.xdist_group(f"matrix-{b}")]
)


def matrix(backend: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if backend not in _runs:
        args, ranks = BACKENDS[backend]
        out = Path(tmp_path_factory.mktemp(f"matrix-{backend}")) / "out.json"
        r = run(launcher(*args, str(MATRIX_JOB), str(out), mpi=ranks), timeout=300)
        assert r.returncode == 0, output(r)
        _runs[backend] = json.loads(out.read_text())
    return _runs[backend]


@pytest.mark.parametrize("policy", ["upgrade", "strict", "cloudpickle"])
@pytest.mark.parametrize("name", list(callables()))
@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_callable_under_policy(
    backend: str, name: str, policy: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outcome = matrix(backend, tmp_path_factory)[f"{name}/{policy}"]
    if policy == "strict" and name in REFUSED_BY_STRICT:
        assert outcome.get("type") == "SerializationError", outcome
        message = outcome["error"]
        assert STRICT_PATHS[name] in message, message
        assert "cannot be pickled" in message and "Ways out" in message
        assert "'upgrade'" in message  # says how to get it through
    else:
        assert outcome["ok"], outcome


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_gp_ephemeral_from_lambda_inside_arguments(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert matrix(backend, tmp_path_factory)["ephemeral in arguments/upgrade"]["ok"]


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_big_closure_crosses_once_per_worker(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    big = matrix(backend, tmp_path_factory)["big closure"]
    assert big["ok"], big
    assert big["functions_sent"] == big["n_workers"], big
    # 200 tasks: sent per task this would be 200 x 50 MB
    assert big["bytes_sent"] < (big["n_workers"] + 1) * big["array_bytes"], big
    assert big["bytes_sent"] >= big["n_workers"] * big["array_bytes"], big


# ------------------------------------------------------------------ the symbolic-regression job
_symbreg: dict[str, Any] = {}


def symbreg(config: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    if config not in _symbreg:
        args = {
            "serial": (["--backend", "serial"], None),
            "mpi-5": ([], 5),
            "strict": (["--serialization", "strict"], 5),
        }[config]
        out = Path(tmp_path_factory.mktemp(f"symbreg-{config}")) / "summary.json"
        small = ["--ngen", "4", "--pop", "60", "--json", str(out)]
        r = run(launcher(*args[0], str(JOBS / "symbreg.py"), *small, mpi=args[1]), timeout=300)
        _symbreg[config] = (r, json.loads(out.read_text()) if out.exists() else None)
    return _symbreg[config]


@pytest.mark.mpi
@pytest.mark.xdist_group("symbreg")
def test_symbreg_same_result_under_mpi_as_serial(tmp_path_factory: pytest.TempPathFactory) -> None:
    (r1, serial), (r2, mpi) = (
        symbreg("serial", tmp_path_factory),
        symbreg("mpi-5", tmp_path_factory),
    )
    assert r1.returncode == 0 and r2.returncode == 0, output(r1) + output(r2)
    assert mpi["backend"] == "mpi" and mpi["n_workers"] == 4
    assert mpi["population_sha256"] == serial["population_sha256"]
    assert mpi["best_error"] == serial["best_error"] and mpi["best"] == serial["best"]
    assert mpi["functions_sent"] > 100  # every compiled tree crossed as a callable


@pytest.mark.mpi
@pytest.mark.xdist_group("symbreg")
def test_symbreg_strict_fails_on_the_master(tmp_path_factory: pytest.TempPathFactory) -> None:
    r, summary = symbreg("strict", tmp_path_factory)
    assert r.returncode != 0 and summary is None, output(r)
    assert "SerializationError" in r.stderr
    assert "fn -> functools.partial.args[0] -> <lambda> defined at <string>:1" in r.stderr
    assert "gen   0" not in r.stdout  # failed before the first generation was evaluated


# ------------------------------------------------------------------ worker-side failures
WORKER_SIDE = """
import os, sys, tempfile
import evocluster

def fitness(x):
    return x if not isinstance(x, int) or x != 99 else (lambda: 1)

def type_name(x):
    return type(x).__name__

if __name__ == "__main__":
    class OnlyOnMaster:  # upgraded: sent by value, so the workers can use it
        pass
    print("UPGRADED:", evocluster.map(type_name, [OnlyOnMaster()]))
    # a module the master imports after the workers started: they cannot import it
    here = tempfile.mkdtemp()
    with open(os.path.join(here, "masteronly.py"), "w") as fh:
        fh.write("class Gene:\\n    pass\\n")
    sys.path.insert(0, here)
    import masteronly
    try:
        evocluster.map(fitness, [1, masteronly.Gene()])
    except evocluster.SerializationError as e:
        print("ARGS:", e)
    try:
        evocluster.map(fitness, [1, 99])
    except evocluster.SerializationError as e:
        print("RESULT:", e)
    print("AFTER:", evocluster.map(fitness, [1, 2]))
"""


@pytest.mark.parametrize("ranks", [None, pytest.param(3, marks=pytest.mark.mpi)])
def test_worker_side_failures_are_explained_and_harmless(tmp_path: Path, ranks: int | None) -> None:
    job = tmp_path / "job.py"
    job.write_text(WORKER_SIDE)
    args = [] if ranks else ["--backend", "local", "--workers", "2"]
    r = run(launcher(*args, str(job), mpi=ranks), cwd=tmp_path)
    assert r.returncode == 0, output(r)
    lines = {line.split(":", 1)[0]: line for line in r.stdout.splitlines() if ":" in line}
    assert lines["UPGRADED"] == "UPGRADED: ['OnlyOnMaster']", output(r)
    assert "cannot load the task's arguments" in lines["ARGS"], output(r)
    assert "module 'masteronly' cannot be imported on this worker" in lines["ARGS"]
    assert "which cannot be pickled" in lines["RESULT"], output(r)
    assert lines["AFTER"] == "AFTER: [1, 2]"  # the executor is still usable


# ------------------------------------------------------------------ round trips (in process)
creator.create("SerFitness", base.Fitness, weights=(1.0, -1.0))
creator.create("ListInd", list, fitness=creator.SerFitness)
creator.create("ArrayInd", array.array, typecode="d", fitness=creator.SerFitness)
creator.create("NumpyInd", np.ndarray, fitness=creator.SerFitness)
PSET = gp.PrimitiveSet("SER", 1)
PSET.addPrimitive(max, 2)
PSET.addPrimitive(abs, 1)
PSET.addTerminal(3)


def round_trip(obj: Any, policy: str = "upgrade") -> Any:
    frames = serialization.dumps_args(obj, policy)
    # DEAP 1.4 unpickles a creator class by re-creating it in deap.creator: on a worker that is
    # harmless, in this process it would replace the classes the test still uses, so keep them
    saved = dict(vars(creator))
    try:
        # what a transport does: every frame arrives in a fresh buffer
        return serialization.loads([bytearray(memoryview(f).cast("B")) for f in frames])
    finally:
        vars(creator).update(saved)


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(), st.binary()
)
nested = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=5), inner, max_size=5),
    ),
    max_leaves=30,
)
arrays = hnp.arrays(
    dtype=st.sampled_from([np.float64, np.float32, np.int8, np.int64, np.uint16, np.bool_]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=7),
)


@settings(max_examples=60, deadline=None)
@given(nested, st.sampled_from(["upgrade", "strict", "cloudpickle"]))
def test_nested_containers_round_trip(obj: Any, policy: str) -> None:
    assert round_trip(obj, policy) == obj


@settings(max_examples=60, deadline=None)
@given(arrays, st.booleans())
def test_numpy_arrays_round_trip(a: np.ndarray, transpose: bool) -> None:
    a = a.T if transpose else a  # Fortran order and other layouts
    back = round_trip({"a": a, "rows": list(np.atleast_1d(a))})
    assert back["a"].dtype == a.dtype and back["a"].shape == a.shape
    assert back["a"].tobytes() == a.tobytes()  # bit for bit (NaN included)
    rows = zip(back["rows"], np.atleast_1d(a), strict=True)
    assert all(x.tobytes() == y.tobytes() for x, y in rows)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=20))
def test_deap_individuals_round_trip(genes: list[float]) -> None:
    for ind in (
        creator.ListInd(genes),
        creator.ArrayInd(genes),
        creator.NumpyInd(genes),
    ):
        ind.fitness.values = (genes[0], len(genes))
        back = round_trip([ind])[0]
        assert type(back).__name__ == type(ind).__name__ and list(back) == list(ind)
        assert isinstance(back, type(ind).__mro__[1])  # list, array.array, numpy.ndarray
        assert back.fitness.values == ind.fitness.values and back.fitness.valid
        assert back.fitness.weights == (1.0, -1.0)


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=2**31))
def test_gp_trees_round_trip(seed: int) -> None:
    import random

    random.seed(seed)
    tree = gp.PrimitiveTree(gp.genHalfAndHalf(PSET, min_=1, max_=4))
    back = round_trip(tree)
    assert str(back) == str(tree)
    fn, fn_back = gp.compile(tree, PSET), gp.compile(back, PSET)
    assert fn(-5) == fn_back(-5)


def test_exception_with_unpicklable_attribute_comes_home_as_a_stand_in() -> None:
    exc = ValueError("bad individual")
    exc.lock = threading.Lock()  # type: ignore[attr-defined]
    info = serialization.pack_exception(exc, "worker rank 1 of 2 on host h")
    back = serialization.unpack_exception(pickle.loads(pickle.dumps(info)))
    assert isinstance(back, RemoteError) and back.type_name == "builtins.ValueError"
    assert back.message == "bad individual" and isinstance(back.__cause__, RemoteTraceback)


def test_function_table_is_bounded() -> None:
    table = serialization.FunctionTable(maxsize=16)
    fns = [eval(f"lambda x: x + {i}") for i in range(100)]  # distinct closures
    keys = {table.lookup(f)[0] for f in fns}
    assert len(keys) == 100 and len(table._by_id) == 16


RNG_IN_MAIN = """
import functools
import evocluster
from evocluster import engine  # binds evocluster.rng to the (callable) module

def draw(x):
    return x + evocluster.rng().random()

if __name__ == "__main__":
    with evocluster.Executor(backend="local", workers=2) as ex:
        run = functools.partial(evocluster.rng.call, draw, 7)
        values = [v for v, _ in ex.map(run, range(6), range(6))]
    print([int(v) for v in values])
    print(values == [evocluster.rng.call(draw, 7, i, i)[0] for i in range(6)])
"""


def test_a_fitness_of_main_that_uses_evocluster_rng_is_sent_by_value(tmp_path: Path) -> None:
    """``python -c``, a notebook: the fitness travels by value (cloudpickle), with the
    submodules it names; ``evocluster.rng`` is a callable module, which pickles by name."""
    r = run([sys.executable, "-c", RNG_IN_MAIN], cwd=tmp_path)
    assert r.returncode == 0, output(r)
    assert r.stdout.split() == ["[0,", "1,", "2,", "3,", "4,", "5]", "True"], output(r)
