"""The fuzz layer's machinery, shared by ``tests/test_fuzz_*.py``: Hypothesis settings and budgets,
the cache that bounds shrinking in time, the strategies that generate cases, the model of what each
case must give, and the checks made after every launched run.

Budgets (``EVOCLUSTER_FUZZ``)
    unset or ``ci``: each test runs the small number of examples it names for CI (the whole layer
    adds about 3 minutes to the suite on 2 cores, MPI included); ``long``: the larger number each
    test names; a number ``N``: every test runs ``N`` examples.  Budgets are counts, never times:
    every example drawn is run and checked (how many ran does not depend on the machine's load),
    and each test's pytest timeout allows all of them (``fuzz_timeout``).  A test whose examples
    launch runs does not shrink a failure (a launch costs seconds): its report narrows the
    failing batch to the failing cases instead; the tests that run in this process shrink.

Reproducibility (``EVOCLUSTER_FUZZ_SEED``)
    In CI the examples are derandomised (Hypothesis derives them from each test's name): a red CI
    is red again on the same tree, and turns red only when the tree changes, not when the date
    does.  ``EVOCLUSTER_FUZZ=long`` draws new examples on each run (seed printed by Hypothesis on a
    failure); ``EVOCLUSTER_FUZZ_SEED=N`` fixes the seed of any run.  No example database is written
    (nothing in the tree, nothing carried between CI machines): a failure's report holds everything
    needed to replay it -- the failing cases as JSON, and the command that runs them alone.

    EVOCLUSTER_FUZZ=long python -m pytest tests/fuzz/test_fuzz_map.py
    tests/fuzz/test_fuzz_signals.py
    EVOCLUSTER_FUZZ=200 EVOCLUSTER_FUZZ_SEED=7 python -m pytest tests/fuzz/test_fuzz_options.py -n 0
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fuzz_cases as fc
import hypothesis
import pytest
from helpers import FIXTURES, ROOT, clean_env, launcher, mpi_launcher, run
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

# ---------------------------------------------------------------------------- budgets
MODE = os.environ.get("EVOCLUSTER_FUZZ", "").strip().lower() or "ci"
if MODE not in ("ci", "long") and not MODE.isdigit():
    raise ValueError(f"EVOCLUSTER_FUZZ={MODE!r}: use ci, long or a number of examples")
SEED = os.environ.get("EVOCLUSTER_FUZZ_SEED", "").strip() or None

settings.register_profile(
    "evocluster-fuzz",
    deadline=None,  # real processes: an example's time is not the code's
    database=None,
    derandomize=MODE == "ci" and SEED is None,
    suppress_health_check=list(HealthCheck),  # slow, large examples are the point here
    phases=(Phase.explicit, Phase.generate),
    print_blob=True,
)


def examples(ci: int, long: int) -> int:
    """How many examples a test runs under the current budget."""
    if MODE == "ci":
        return ci
    return long if MODE == "long" else int(MODE)


def fuzz(ci: int, long: int, *, shrink: bool = False) -> Callable[[Any], Any]:
    """The settings (and seed) of a fuzz test: ``ci`` examples in CI, ``long`` on demand;
    ``shrink`` for the tests whose examples are cheap (in this process)."""
    phases = (Phase.explicit, Phase.generate, *((Phase.shrink,) if shrink else ()))
    chosen = settings(
        settings.get_profile("evocluster-fuzz"), max_examples=examples(ci, long), phases=phases
    )

    def apply(test: Any) -> Any:
        test = chosen(test)
        return hypothesis.seed(int(SEED))(test) if SEED is not None else test

    return apply


def fuzz_timeout(ci: int, long: int, per_example: float) -> float:
    """The pytest timeout of a test that runs ``examples(ci, long)`` examples of at most
    ``per_example`` seconds each (generous: a slow machine, another suite running beside), plus
    Hypothesis's own work and the longest a last launch may take to be declared hung."""
    return examples(ci, long) * per_example + 150


class Campaign:
    """One test's launched examples.

    Each distinct example runs once: Hypothesis's replays of it (to confirm and report a failure)
    are answered from the cache, so a run whose outcome varies with timing can never be reported
    as "flaky" instead of failing.  ``ran`` counts the examples that were run: a test checks it
    (``finish``), so that a strategy that generates nothing can never pass vacuously."""

    def __init__(self) -> None:
        self.outcomes: dict[str, str | None] = {}

    @property
    def ran(self) -> int:
        return len(self.outcomes)

    def check(self, example: Any, attempt: Callable[[], str | None]) -> None:
        key = json.dumps(example, sort_keys=True, default=repr)
        if key not in self.outcomes:
            try:
                self.outcomes[key] = attempt()
            except pytest.fail.Exception as e:  # helpers.run: a hang, processes left behind
                self.outcomes[key] = str(e)
            except Exception:  # the check's own failure: reported once, never "flaky"
                self.outcomes[key] = traceback.format_exc()
        failure = self.outcomes[key]
        if failure:
            raise AssertionError(failure)

    def finish(self) -> None:
        """After the test's examples: at least one was run."""
        assert self.ran > 0, "no example was run: the strategy generated nothing"


# ---------------------------------------------------------------------------- leftovers
#: /dev/shm entries an MPI library leaves when a run does not end through MPI_Finalize (MPICH,
#: Open MPI's vader and PSM, POSIX semaphores)
SHM_PREFIXES = ("mpich_shm_", "vader", "psm", "sem.", "ompi")
#: ... but not Python multiprocessing's semaphores: evocluster creates none, and other tests'
#: (running at the same time on the other xdist worker) would be blamed on this one
SHM_FOREIGN = ("sem.mp-",)


def shm_entries() -> set[str]:
    with contextlib.suppress(OSError):
        return {
            e
            for e in os.listdir("/dev/shm")
            if e.startswith(SHM_PREFIXES) and not e.startswith(SHM_FOREIGN)
        }
    return set()


def _mapped_shm() -> set[str]:
    """The /dev/shm entries some live process maps (a concurrent run's, never a leftover)."""
    found = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as fh:
            for line in fh:
                if "/dev/shm/" in line:
                    found.add(line.rsplit("/dev/shm/", 1)[1].split()[0])
    return found


def shm_left(before: set[str]) -> list[str]:
    """Entries created since ``before`` that no live process maps, 2 s after the run ended (a
    run of another test that is still starting or ending is not blamed on this one)."""
    deadline = time.monotonic() + 2
    new = shm_entries() - before
    while new and time.monotonic() < deadline:
        time.sleep(0.2)
        new = (shm_entries() - before) - _mapped_shm()
    return sorted(new - _mapped_shm())


def tmp_left(checkpoint: Path) -> list[str]:
    """Checkpoint temporaries beside ``checkpoint`` (``.<name>.*.tmp``)."""
    return sorted(p.name for p in checkpoint.parent.glob(f".{checkpoint.name}.*.tmp"))


@functools.lru_cache(maxsize=1)
def _private_shm_works() -> bool:
    """Whether runs can get a /dev/shm of their own (root, and ``unshare`` allowed here)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = [*_UNSHARE, "/dev/shm", "true"]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(probe, capture_output=True, timeout=20, check=False).returncode == 0
    return False


_UNSHARE = ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
_UNSHARE += ['mount --bind "$0" /dev/shm && exec "$@"']


class ShmWatch:
    """What a run leaves in /dev/shm, attributed to it alone.

    Where it can (root, as in CI), the run gets a mount namespace of its own whose /dev/shm is a
    fresh directory on the real /dev/shm (``wrap``): whatever is in it after the run is the run's
    (another test's run at the same time, whose leftovers a listing before and after would blame
    on this one, writes elsewhere).  The MPI library and evocluster see an ordinary tmpfs at
    /dev/shm.  Elsewhere: the entries created during the run that no live process maps."""

    def __init__(self) -> None:
        self.dir: Path | None = None
        self.before: set[str] = set()
        if _private_shm_works():
            self.dir = Path(tempfile.mkdtemp(prefix="evocluster-fuzz-", dir="/dev/shm"))
        else:
            self.before = shm_entries()

    def wrap(self, cmd: list[str]) -> list[str]:
        return cmd if self.dir is None else [*_UNSHARE, str(self.dir), *cmd]

    def left(self) -> list[str]:
        if self.dir is None:
            return shm_left(self.before)
        found = sorted(os.listdir(self.dir))
        shutil.rmtree(self.dir, ignore_errors=True)
        return found


# ---------------------------------------------------------------------------- launching
def command(backend: str, workers: int, *args: str) -> list[str]:
    """``serial``, a local pool of ``workers``, or ``mpiexec -n workers+1``."""
    if backend == "serial":
        return launcher("--backend", "serial", *args)
    if backend == "local":
        return launcher("--backend", "local", "--workers", str(workers), *args)
    return mpi_launcher(workers + 1, *args)


#: The variable that marks every process of one launched run (inherited by mpiexec's ranks,
#: which MPICH's process manager starts in sessions of their own, out of helpers.run's reach).
RUN_TAG = "FUZZ_TEST_RUN_TAG"


def tagged(env: dict[str, str] | None) -> tuple[dict[str, str], str]:
    """``env`` (default: ``helpers.clean_env()``) with a fresh ``RUN_TAG``, and the tag."""
    tag = os.urandom(8).hex()
    return {**(clean_env() if env is None else env), RUN_TAG: tag}, tag


def tagged_processes(tag: str) -> list[int]:
    """The live processes (zombies aside) of the run tagged ``tag``, in any session."""
    marker = f"{RUN_TAG}={tag}".encode()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rpartition(")")[2].split()[0] == "Z":
                    continue
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if marker in fh.read().split(b"\0"):
                    found.append(int(pid))
    return found


def tagged_left(tag: str, grace: float = 10.0) -> list[int]:
    """The processes of run ``tag`` still alive ``grace`` s after it ended: killed, and named."""
    deadline = time.monotonic() + grace
    while (left := tagged_processes(tag)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return left


def launched(
    cmd: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run ``cmd`` (helpers.run: killed if it hangs, fails if it leaves processes in its session);
    return it and what it left: in /dev/shm, and processes of other sessions (MPI ranks)."""
    shm = ShmWatch()
    env, tag = tagged(env)
    try:
        r = run(shm.wrap(cmd), timeout=timeout, cwd=cwd, env=env, no_leftovers=True)
        r.args = cmd
    finally:
        procs = tagged_left(tag)
        left = shm.left()
    problems = [f"left in /dev/shm: {left}"] if left else []
    return r, problems + ([f"processes left behind: {procs}"] if procs else [])


def shown_command(cmd: list[str]) -> str:
    """``cmd`` as a user types it from the repository's root."""
    words = []
    for arg in cmd:
        word = arg
        if arg == sys.executable:
            word = "python"
        elif os.path.isabs(arg) and os.path.basename(arg).startswith("mpiexec"):
            word = os.path.basename(arg)
        elif arg.startswith(str(ROOT) + os.sep):
            word = os.path.relpath(arg, ROOT)
        words.append(shlex.quote(word))
    return " ".join(words)


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.splitlines()[-lines:])


def run_text(r: subprocess.CompletedProcess[str]) -> str:
    return (
        f"exit code {r.returncode}\n--- stdout (end)\n{tail(r.stdout)}\n"
        f"--- stderr (end)\n{tail(r.stderr)}"
    )


# ---------------------------------------------------------------------------- strategies
_NUMERIC = ["?", "i1", "u2", "i4", "i8", "u8", "f2", "f4", "f8", "c8", "c16"]
DTYPES = [*_NUMERIC, "U5", "S3", "M8[s]", "m8[ms]", "struct", "O"]
VIEWS = ["c", "F", "T", "step", "neg", "swap", "ro"]


@st.composite
def arrays(draw: Any) -> list[Any]:
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(st.lists(st.integers(0, 4), min_size=0, max_size=3))
    return ["nd", dtype, shape, draw(st.sampled_from(VIEWS)), draw(st.integers(0, 2**16))]


def leaves() -> st.SearchStrategy[list[Any]]:
    return st.one_of(
        st.just(["none"]),
        st.booleans().map(lambda b: ["bool", b]),
        st.one_of(st.integers(), st.sampled_from([2**63, -(2**63) - 1, 10**100])).map(
            lambda i: ["int", str(i)]
        ),
        st.floats().map(lambda f: ["float", f.hex()]),
        st.tuples(st.floats(), st.floats()).map(lambda c: ["complex", str(c[0]), str(c[1])]),
        st.one_of(st.text(max_size=12), st.just("\ud800 lone surrogate")).map(lambda s: ["str", s]),
        st.binary(max_size=16).map(lambda b: ["bytes", b.hex()]),
        st.binary(max_size=8).map(lambda b: ["bytearray", b.hex()]),
        st.lists(st.integers(-5, 5), max_size=4).map(lambda s: ["set", s]),
        st.lists(st.integers(-5, 5), max_size=4).map(lambda s: ["frozenset", s]),
        arrays(),
        st.sampled_from(
            [["recursive"], ["recursive_dict"], ["class"], ["exception", "3"], ["rng", "5"]]
        ),
    )


#: objects most callables never see: each drawn about once in 25 payloads
RARE = [
    ["lock"],
    ["generator"],
    ["file"],
    ["lambda", "2"],
    ["bad_exception", "4"],
    [fc.SHARED_RNG, "9"],
    ["big_bytes", str(6 << 20)],
    ["big_array", str(1 << 19)],
]


def payloads() -> st.SearchStrategy[list[Any]]:
    leaf = st.integers(0, 24).flatmap(lambda k: st.sampled_from(RARE) if k == 0 else leaves())
    keys = st.one_of(
        st.text(max_size=4).map(lambda s: ["str", s]),
        st.integers(-9, 9).map(lambda i: ["int", str(i)]),
    )
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4).map(lambda v: ["list", v]),
            st.lists(inner, max_size=4).map(lambda v: ["tuple", v]),
            st.lists(st.tuples(keys, inner).map(list), max_size=3).map(lambda v: ["dict", v]),
            inner.map(lambda v: ["reduce", v]),
            inner.map(lambda v: ["state", v]),
            st.tuples(inner, inner).map(lambda v: ["slots", v[0], v[1]]),
        ),
        max_leaves=6,
    )


#: eval_timeout values by what they must do: "tiny" may time healthy items out, "ok" may not,
#: "refuse" must be refused, "huge" (no timer holds it) refused or run as without a limit
TIMEOUTS: dict[str, list[float]] = {
    "tiny": [1e-6, 1e-3, 0.05, 0.3],
    "ok": [2.0, 5.0, 1e5],
    "refuse": [0.0, -1.0, math.nan, -math.inf],
    "huge": [1e9, math.inf, 1e10, 1e300],
}
SERIALIZATION_BAD = ["pickle", "", "Strict"]
ON_ERROR_OK = ["raise", "penalize", "retry:0", "retry:1", "retry:2"]
ON_ERROR_BAD = ["retry:", "retry:-1", "retry:x", "Raise", "retry:1.5", " penalize"]
PENALTIES: list[Any] = [None, -1, 0.0, -1e9, [-1e9, 1e9], "failed", math.nan, -math.inf]
MEMORY_OK = ["512M", "2G"]
MEMORY_BAD = ["1K", "abc", "0", "-5M"]


def timeout_class(value: Any) -> str | None:
    for name, values in TIMEOUTS.items():
        if any(
            value == v or (math.isnan(v) and isinstance(value, float) and math.isnan(value))
            for v in values
        ):
            return name
    return None


@st.composite
def options(draw: Any) -> dict[str, Any]:
    """``Executor`` keywords, mostly valid, some at or past their limits."""
    opts: dict[str, Any] = {}
    if draw(st.integers(0, 3)) == 0:
        opts["serialization"] = draw(
            st.sampled_from([*fc_policies(), *SERIALIZATION_BAD[:1]] * 3 + SERIALIZATION_BAD)
        )
    if draw(st.booleans()):
        opts["on_error"] = draw(st.sampled_from(ON_ERROR_OK * 4 + ON_ERROR_BAD))
        opts["penalty"] = draw(st.sampled_from(PENALTIES))
    if draw(st.integers(0, 2)) == 0:
        kind = draw(st.sampled_from(["tiny", "ok", "ok", "refuse", "huge"]))
        opts["eval_timeout"] = draw(st.sampled_from(TIMEOUTS[kind]))
    if draw(st.integers(0, 4)) == 0:
        opts["isolate"] = True
    if draw(st.integers(0, 9)) == 0:
        opts["eval_memory"] = draw(st.sampled_from(MEMORY_OK * 2 + MEMORY_BAD))
    return opts


def fc_policies() -> list[str]:
    return ["upgrade", "strict", "cloudpickle"]


def isolated(opts: dict[str, Any]) -> bool:
    return bool(opts.get("isolate")) or opts.get("eval_memory") in MEMORY_OK


def behaviours(backend: str, opts: dict[str, Any]) -> st.SearchStrategy[str]:
    """What a fitness may do on this backend with these options without ending the run by
    design (a worker killed without isolation is test_fuzz_signals' business)."""
    common = ["value"] * 8 + ["sleep_short", "print", "huge_int", "fd_leak", "memory_leak"]
    common += ["raise", "raise", "raise_custom", "raise_unpicklable", "flaky", "flaky"]
    common += ["sys_exit", "sys_exit:3", "keyboard_interrupt", "base_custom", "return_unpicklable"]
    common += ["fork_exit", "fork_return"]
    rare = ["sleep_short"]
    child = isolated(opts) or (backend == "serial" and "eval_timeout" in opts)
    if backend != "serial" or child:
        # what a fitness leaves running is ended with the worker (or child) that evaluated it;
        # serially, inline, the fitness runs in the job's own process: what it leaves there is
        # the job's, as under the builtin map (the interpreter waits for its threads at exit)
        rare += ["fork_orphan", "thread_leak"]
    if backend != "serial" or child:
        common.append("os_exit:7")
    if isolated(opts):
        common += ["kill:9", "kill:11", "kill:6"]
    if opts.get("eval_memory") in MEMORY_OK:
        common.append("alloc_huge")
    if opts.get("eval_timeout") in (0.05, 0.3, 2.0):
        common += ["sleep_long", "busy_long"]
    return st.integers(0, 29).flatmap(
        lambda k: st.sampled_from(rare) if k == 0 else st.sampled_from(common)
    )


ALL_SHAPES = [*fc.SHAPES, *fc.JOB_SHAPES]
REPR_VARIES = {"rng", fc.SHARED_RNG, "lambda", "set", "frozenset"}
APIS = ["map", "map_multi", "starmap", "emap", "submit"]
CHUNKSIZES: list[Any] = ["default"] * 6 + [None, 1, 2, 7, 10**9, 0, -1, 2.5, True, "2"]


def takes_behaviour(shape: str) -> bool:
    return fc.SHAPES[shape][2] if shape in fc.SHAPES else True


def by_reference(shape: str) -> bool:
    return fc.SHAPES[shape][1] if shape in fc.SHAPES else fc.JOB_SHAPES[shape]


@st.composite
def map_cases(draw: Any, backend: str) -> dict[str, Any]:
    shape = draw(st.sampled_from(ALL_SHAPES))
    plain = not takes_behaviour(shape)
    api = draw(st.sampled_from(["map", "emap", "submit"] if plain else APIS))
    opts = {} if api == "emap" else draw(options())
    beh = st.just("value") if plain else behaviours(backend, opts)
    chunksize = "none" if api == "submit" else draw(st.sampled_from(CHUNKSIZES))
    pay = payloads()
    if shape == "builtin_repr":  # reprs that hold an address, or a set's order (which depends on
        # the order its members were inserted in), differ between processes
        pay = pay.filter(lambda p: not fc.kinds(p) & REPR_VARIES)
    items = draw(st.lists(st.tuples(beh, pay).map(list), max_size=6))
    case = {"kind": "map", "api": api, "shape": shape, "items": items, "options": opts}
    case["extra"] = draw(st.sampled_from([0] * 8 + [3, 40, 300, 1500]))
    if api != "submit":
        case["chunksize"] = chunksize
    return case


ENGINE_FAILS = ["raise", "sys_exit", "keyboard_interrupt", "return_nan", "return_inf"]
ENGINE_FAILS += ["return_huge_int", "return_bool", "return_str", "return_none"]


@st.composite
def engine_cases(draw: Any) -> dict[str, Any]:
    loop = draw(st.sampled_from(["generational", "mu_plus_lambda", "steady_state", "nsga2"]))
    pop, gens = draw(st.integers(4, 8)), draw(st.integers(1, 3))
    keys = st.tuples(st.integers(0, gens), st.integers(0, pop - 1)).map(lambda k: f"{k[0]},{k[1]}")
    fail = draw(st.dictionaries(keys, st.sampled_from(ENGINE_FAILS), max_size=2))
    on_error = draw(st.sampled_from([None, None, "raise", "penalize", "retry:1"]))
    penalty = draw(st.sampled_from([None, -1e9, 1e9, [1e9, 1e9]]))
    return {
        "kind": "engine",
        "loop": loop,
        "shape": draw(st.sampled_from(["module", "lambda", "main_guard_function"])),
        "fail": fail,
        "seed": draw(st.integers(0, 2**16)),
        "pop": pop,
        "gens": gens,
        "on_error": on_error,
        "penalty": penalty,
    }


@st.composite
def batches(draw: Any, backend: str, size: tuple[int, int]) -> dict[str, Any]:
    """A batch for one launch: cases (about one engine case in eight) and the worker count."""
    case = st.integers(0, 7).flatmap(lambda k: engine_cases() if k == 0 else map_cases(backend))
    cases = draw(st.lists(case, min_size=size[0], max_size=size[1]))
    workers = 1 if backend == "serial" else draw(st.integers(1, 3))
    return {"workers": workers, "cases": [{**c, "id": i} for i, c in enumerate(cases)]}


# ---------------------------------------------------------------------------- the model
SER_TYPES = ("SerializationError",)
#: an evocluster error that refuses what cannot work (never BrokenPool: that is a lost pool)
REFUSAL = "refusal"
#: a BaseException of the fitness, carried as an evocluster error naming it
WRAPPED = "evocluster"
BASE_NAMES = {
    "sys_exit": "SystemExit",
    "keyboard_interrupt": "KeyboardInterrupt",
    "base_custom": "CustomBaseException",
}


def type_matches(err: dict[str, Any], allowed: tuple[str, ...], behaviour: str = "") -> bool:
    """Whether the error the job got is one of ``allowed`` (names in its MRO, or the markers)."""
    mro = err["mro"]
    for name in allowed:
        if name == WRAPPED:
            original = BASE_NAMES.get(behaviour.partition(":")[0], "")
            named = original in err["message"] or any(original == c[0] for c in err["chain"])
            if "EvoclusterError" in mro and "BrokenPool" not in mro and named:
                return True
        elif name == REFUSAL:
            if "EvoclusterError" in mro and "BrokenPool" not in mro and "WorkerError" not in mro:
                return True
        elif name in mro:
            return True
    return False


class Allowed:
    """What one item may end as: model values or the penalty (digests), errors of given types
    (what its failure becomes under the policy), or a refusal of its arguments at dispatch."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.values: set[str] = set()
        self.errors: tuple[str, ...] = ()
        self.fails: tuple[str, ...] = ()  # what its evaluation fails with, before the policy
        self.certain = False  # it always fails (else it may)
        self.refusable = False  # its arguments may be refused at dispatch (never a policy's)

    def admits(self, got: dict[str, Any]) -> bool:
        if "v" in got:
            return got["v"] in self.values
        err = got["e"]
        return type_matches(err, self.errors, self.behaviour) or (
            self.refusable and type_matches(err, (REFUSAL,))
        )

    def text(self) -> str:
        parts = [f"value {v}" for v in sorted(self.values)] + [f"error {t}" for t in self.errors]
        if self.refusable:
            parts.append("a refusal of its arguments (an EvoclusterError)")
        return " or ".join(parts) or "nothing"


class Policy:
    """A case's failure policy, as the model applies it."""

    def __init__(self, opts: dict[str, Any]) -> None:
        self.name = opts.get("on_error", "raise")
        n = self.name[6:] if self.name.startswith("retry:") else ""
        self.retries = int(n) if n.isdigit() else 0  # (a bad N is refused: option_problem)
        self.penalty = opts.get("penalty")
        self.penalizes = self.name == "penalize" or (
            self.name.startswith("retry:") and self.penalty is not None
        )

    def apply(self, a: Allowed, model: str) -> None:
        """What ``a``'s evaluation (its ``fails``, ``certain``) may end as under this policy."""
        if not a.fails or not a.certain:
            a.values.add(model)
        if a.fails and self.penalizes:
            a.values.add(fc.digest(self.penalty))
        elif a.fails:
            a.errors = a.fails


def option_problem(case: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``(musts, mays)``: the options the case must be refused for (a refusal names one of them,
    whichever evocluster checks first), and those it may be refused for (refused, or run as the
    model says)."""
    opts = case.get("options", {})
    chunk = case.get("chunksize", "default")
    timeout = timeout_class(opts.get("eval_timeout"))
    checks = [
        ("serialization", opts.get("serialization", "upgrade") not in fc_policies()),
        ("on_error", opts.get("on_error", "raise") not in ON_ERROR_OK),
        ("eval_memory", opts.get("eval_memory") in MEMORY_BAD),
        ("eval_timeout", timeout == "refuse"),
        ("penalty", opts.get("on_error") == "penalize" and opts.get("penalty") is None),
        ("chunksize", isinstance(chunk, str) and chunk != "default"),
        ("chunksize", type(chunk) is int and chunk < 1),
    ]
    musts = [name for name, bad in checks if bad]
    mays = []
    if timeout == "huge":
        mays.append("eval_timeout")  # years, or more than a timer holds: refused, or no limit
    if isinstance(chunk, float) or chunk is True:
        mays.append("chunksize")
    return musts, mays


def refusal_ok(err: dict[str, Any], option: str) -> bool:
    """A clear refusal of ``option``: a configuration, value or type error that names it."""
    if not err:
        return False
    kinds = ("ConfigurationError", "ValueError", "TypeError")
    names = (option, option.replace("_", "-"), option.replace("_", " "))
    return any(k in err["mro"] for k in kinds) and any(n in err["message"] for n in names)


def specs_of(case: dict[str, Any]) -> list[list[Any]]:
    """The case's ``[behaviour, payload spec]`` per item, the healthy extra items included."""
    return [*case["items"], *[["value", ["int", str(k)]] for k in range(case.get("extra", 0))]]


def item_fails(name: str, kinds: set[str], opts: dict[str, Any], plain: bool) -> tuple[str, ...]:
    """What an item's evaluation may fail with (policy aside)."""
    fails = fc.FAILS.get(name, ())
    # what returns the payload (flaky too: its retry does)
    returned = (
        not plain and (name not in fc.FAILS or name == "flaky") and name not in fc.RETURNS_OWN
    )
    if "lambda" in kinds and returned and opts.get("serialization") != "strict":
        fails = (*fails, *SER_TYPES)  # sent by value, but a result holding it cannot return
    if "bad_exception" in kinds:
        fails = (*fails, *SER_TYPES)  # pickled, but nobody can rebuild it
    if name == "flaky" and Policy(opts).retries > 0 and len(fails) == 1:
        fails = ()  # its retry succeeds
    if timeout_class(opts.get("eval_timeout")) == "tiny":
        fails = (*fails, "EvaluationTimeout")
    return fails


def allowed_items(case: dict[str, Any], model: list[dict[str, Any]]) -> list[Allowed]:
    """What each item may end as, from its behaviour, payload, callable, options and policy."""
    opts = case.get("options", {})
    policy = Policy(opts)
    strict = opts.get("serialization") == "strict"
    plain = not takes_behaviour(case["shape"])
    out = []
    for (behaviour, spec), m in zip(specs_of(case), model, strict=True):
        a = Allowed("value" if plain else behaviour.partition(":")[0])
        kinds = fc.kinds(spec)
        a.fails = item_fails(a.behaviour, kinds, opts, plain)
        a.certain = bool(a.fails) and a.fails != ("EvaluationTimeout",)
        policy.apply(a, m.get("v", "<the model raised>"))
        a.refusable = bool(kinds & (fc.UNPICKLABLE | {"rng", fc.SHARED_RNG})) or (
            strict and bool(kinds & fc.BY_VALUE)
        )
        out.append(a)
    return out


def callable_refusal(case: dict[str, Any]) -> str | None:
    """Whether the callable itself must (``"must"``) or may (``"may"``) be refused at the call."""
    strict = case.get("options", {}).get("serialization") == "strict"
    if strict and not by_reference(case["shape"]):
        return "must"
    if case["shape"] in ("partial_with_rng", "main_redefined"):
        return "may"  # issue 20 items 10 and 11: the model's result, or a refusal
    return None


# ---------------------------------------------------------------------------- the checks
def check_map_case(case: dict[str, Any], rec: dict[str, Any]) -> list[str]:
    """Problems of one map case: what the job got against what the model allows."""
    musts, mays = option_problem(case)
    if "refused" in rec:
        if any(refusal_ok(rec["refused"], o) for o in [*musts, *mays]):
            return []
        had_to = f"refuse one of {musts}" if musts else "accept"
        return [f"Executor() refused ({_err(rec['refused'])}); it had to {had_to}"]
    first = _error_at_call(case, rec)
    allowed = allowed_items(case, rec["model"])
    # the callable or an argument refused at the call: as clear as an option's refusal
    refused = first is not None and (
        _callable_refused(case, first)
        or (any(a.refusable for a in allowed) and type_matches(first, (REFUSAL,)))
    )
    if musts:
        if not specs_of(case) or refused or any(refusal_ok(first or {}, o) for o in musts):
            return []
        return [f"one of {musts} must be refused, naming it: got {_got_text(rec)}"]
    if first is not None and (
        any(refusal_ok(first, o) for o in mays) or _callable_refused(case, first)
    ):
        return []
    if callable_refusal(case) == "must" and specs_of(case):
        return [f"the callable must be refused under strict: got {_got_text(rec)}"]
    if case["api"] == "submit":
        return _check_submitted(rec, allowed)
    return _check_ordered(case, rec, allowed)


def _callable_refused(case: dict[str, Any], err: dict[str, Any]) -> bool:
    return callable_refusal(case) is not None and type_matches(err, (REFUSAL,))


def _error_at_call(case: dict[str, Any], rec: dict[str, Any]) -> dict[str, Any] | None:
    """The error of a map that raised before its first result, or of a submit refused for every
    item: a refusal of the call, maybe."""
    if case["api"] != "submit":
        early = "raised" in rec and not rec.get("got") and rec.get("at") in (0, None)
        return rec["raised"] if early else None
    got = rec.get("got", [])
    if got and all("e" in g and g["e"].get("at_call") for g in got):
        return dict(got[0]["e"])
    return None


def _check_ordered(case: dict[str, Any], rec: dict[str, Any], allowed: list[Allowed]) -> list[str]:
    got, raised, at = rec.get("got", []), rec.get("raised"), rec.get("at")
    if len(got) > len(allowed):
        return [f"{len(got)} results for {len(allowed)} items"]
    for k, g in enumerate(got):
        if not allowed[k].admits(g):
            return [
                f"item {k} ({allowed[k].behaviour}): got {_one(g)}; allowed {allowed[k].text()}"
            ]
    if raised is None:
        if len(got) != len(allowed):
            return [f"the map ended after {len(got)} of {len(allowed)} results, without an error"]
        return _check_records(case, rec, allowed)
    if at is None:  # evocluster.map returns a list: which item raised is not known
        return _check_first_failure(raised, allowed)
    if at >= len(allowed):
        return [f"the map raised after its last result: {_err(raised)}"]
    # a refusal of a later item's arguments may come as soon as the map starts (a chunk that
    # cannot be sent fails all its items, those ahead of the unsendable one included)
    refusal = any(a.refusable for a in allowed[at:]) and type_matches(raised, (REFUSAL,))
    if not (allowed[at].admits({"e": raised}) or refusal):
        a = allowed[at]
        return [f"item {at} ({a.behaviour}): raised {_err(raised)}; allowed {a.text()}"]
    return []


def _check_first_failure(raised: dict[str, Any], allowed: list[Allowed]) -> list[str]:
    """An error of a map returning a list: the first item that can fail may raise it, and the
    refusal of any item's arguments may come first (found as its chunk is sent, before the items
    ahead of it are evaluated: a chunk that cannot be sent fails all its items)."""
    if any(a.refusable for a in allowed) and type_matches(raised, (REFUSAL,)):
        return []
    for a in allowed:
        if a.admits({"e": raised}):
            return []
        if not a.values:
            break  # this item cannot succeed: the error had to be its own
    return [f"the map raised {_err(raised)}, which no item before the first failing one admits"]


def _check_submitted(rec: dict[str, Any], allowed: list[Allowed]) -> list[str]:
    got = rec.get("got", [])
    if len(got) != len(allowed):
        return [f"{len(got)} futures for {len(allowed)} items"]
    for k, (g, a) in enumerate(zip(got, allowed, strict=True)):
        if not a.admits(g):
            return [f"future {k} ({a.behaviour}): got {_one(g)}; allowed {a.text()}"]
    return []


def _check_records(case: dict[str, Any], rec: dict[str, Any], allowed: list[Allowed]) -> list[str]:
    """A completed map's failure records: exactly the items that failed, as often as the policy
    evaluates them, ending as the policy says (only where the model is exact)."""
    opts = case.get("options", {})
    if timeout_class(opts.get("eval_timeout")) == "tiny":
        return []
    policy = Policy(opts)
    actions: dict[int, list[str]] = {}
    for item, _attempt, action, _error in rec.get("failures", []):
        actions.setdefault(item, []).append(action)
    problems = []
    for k, a in enumerate(allowed):
        want = _records_wanted(a, policy)
        if want is not None and actions.get(k, []) != want:
            problems.append(
                f"item {k} ({a.behaviour}): failure records {actions.get(k, [])}, expected {want}"
            )
    return problems[:3]


def _records_wanted(a: Allowed, policy: Policy) -> list[str] | None:
    if a.behaviour == "flaky" and policy.retries > 0 and not a.fails:
        return ["retried"]
    if not a.fails:
        return []
    if a.certain and policy.penalizes:
        return ["retried"] * policy.retries + ["penalized"]
    return None


def check_engine_case(case: dict[str, Any], rec: dict[str, Any]) -> list[str]:
    """The loop on the launched backend against the same loop on a serial executor; an error
    must be an evocluster error (EvaluationError naming the task, ConfigurationError)."""
    model, got = rec["model"], rec["got"]
    problems = []
    if "e" in model and not _clear_engine_error(model["e"]):
        problems.append(f"serially the loop raised a bare {_err(model['e'])}")
    if ("v" in model) != ("v" in got):
        problems.append(f"serial gave {_one(model)}; this backend {_one(got)}")
    elif "v" in model and model != got:
        problems.append(f"serial ended with {model}; this backend with {got}")
    elif "e" in model and model["e"]["type"] != got["e"]["type"]:
        problems.append(f"serial raised {_err(model['e'])}; this backend {_err(got['e'])}")
    return problems


def _clear_engine_error(err: dict[str, Any]) -> bool:
    """An evocluster error, or a refusal of the loop's own keywords (a penalty of the wrong
    arity is a ValueError naming ``penalty``)."""
    return "EvoclusterError" in err["mro"] or any(
        refusal_ok(err, k) for k in ("penalty", "on_error")
    )


def _err(e: dict[str, Any]) -> str:
    chain = "".join(f" <- {c[0]}" for c in e.get("chain", [])[:2])
    return f"{e['type']}: {e['message'][:300]}{chain}"


def _one(g: dict[str, Any]) -> str:
    return f"value {g['v']}" if "v" in g else f"error {_err(g['e'])}"


def _got_text(rec: dict[str, Any]) -> str:
    if "raised" in rec:
        return f"{len(rec.get('got', []))} results, then {_err(rec['raised'])}"
    return f"{len(rec.get('got', []))} results"


# ---------------------------------------------------------------------------- batches
MAP_JOB = FIXTURES / "fuzz_job.py"


def batch_timeout(batch: dict[str, Any]) -> float:
    """Seconds a batch may take before it counts as hung (generous: a hang, not a slow run)."""
    return min(90.0, 30.0 + 2.0 * len(batch["cases"]))


def read_records(path: Path) -> tuple[dict[int, dict[str, Any]], list[int]]:
    """The driver's records by case id, and the ids of the cases it started."""
    records: dict[int, dict[str, Any]] = {}
    started: list[int] = []
    with contextlib.suppress(FileNotFoundError), open(path) as fh:
        for line in fh:
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if "start" in rec:
                    started.append(rec["start"])
                else:
                    records[rec["id"]] = rec
    return records, started


def case_problems(case: dict[str, Any], rec: dict[str, Any] | None) -> list[str]:
    if rec is None:
        return []
    if "driver_error" in rec:
        return [f"the driver failed: {_err(rec['driver_error'])}\n{rec.get('tb', '')}"]
    if case.get("kind") == "engine":
        return check_engine_case(case, rec)
    return check_map_case(case, rec)


def run_problems(
    r: subprocess.CompletedProcess[str],
    cases: list[dict[str, Any]],
    records: dict[int, dict[str, Any]],
    started: list[int],
) -> list[str]:
    """What is wrong with the run as a whole: its exit, cases it never finished, tracebacks."""
    problems = []
    if r.returncode != 0 or "FUZZ DONE" not in r.stdout:
        problems.append(f"the run exited with {r.returncode} (expected 0 and FUZZ DONE)")
    unfinished = [c["id"] for c in cases if c["id"] not in records]
    if unfinished:
        during = started[-1] if started and started[-1] not in records else None
        problems.append(
            f"cases without a result: {unfinished} (the run ended during case {during})"
        )
    if "Traceback (most recent call last)" in r.stderr:
        problems.append("a traceback on stderr (a bare internal error?)")
    return problems


def left_behind(markers: Path, stderr: str) -> list[str]:
    """Children and threads left by a fitness that lived out their time (their marker file holds
    their pid) after the job's last case (``markers/DONE``): the run's end waited for them, or
    left them running; unless stderr names them.  One that lived out its time while the job was
    still running cases is not left behind: its worker was alive and serving (a batch's later
    cases can take longer than LEFT_BEHIND_SECONDS)."""
    found = []
    done_file = markers / "DONE"
    done = float(done_file.read_text()) if done_file.exists() else 0.0
    for path in sorted(markers.glob("*-*")) if markers.exists() else ():
        text = path.read_text().split()
        if text and text[0] not in stderr and path.stat().st_mtime >= done:
            found.append(
                f"case {path.name.replace('-', ' item ')}: what the fitness left behind (pid "
                f"{text[0]}) lived its {fc.LEFT_BEHIND_SECONDS:g} s, and no line names it (issue "
                "20 item 6: ended with its worker, or named in one line, never waited for)"
            )
    return found


def run_batch(backend: str, batch: dict[str, Any], where: Path) -> tuple[str | None, list[int]]:
    """Launch one batch and check it: the text of its problems (None if none), and the ids of
    the cases that failed."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "cases.json").write_text(
        json.dumps({"markers": str(where / "markers"), "cases": batch["cases"]})
    )
    cmd = command(backend, batch["workers"], str(MAP_JOB), "cases.json", "out.jsonl")
    r, problems = launched(cmd, cwd=where, timeout=batch_timeout(batch))
    records, started = read_records(where / "out.jsonl")
    problems += run_problems(r, batch["cases"], records, started)
    problems += left_behind(where / "markers", r.stderr)
    failing = []
    for case in batch["cases"]:
        found = case_problems(case, records.get(case["id"]))
        if found:
            failing.append(case["id"])
            problems += [f"case {case['id']} ({_label(case)}): {p}" for p in found]
    if not problems:
        return None, []
    return report(backend, batch, cmd, problems, r, failing), failing


def _label(case: dict[str, Any]) -> str:
    if case.get("kind") == "engine":
        return f"engine {case['loop']}, {case['shape']}, fail {case['fail']}"
    chunk = case.get("chunksize", "default")
    return f"{case['api']} of {case['shape']}, options {case.get('options')}" + (
        f", chunksize {chunk!r}" if chunk != "default" else ""
    )


def report(
    backend: str,
    batch: dict[str, Any],
    cmd: list[str],
    problems: list[str],
    r: subprocess.CompletedProcess[str],
    failing: list[int],
) -> str:
    """A failure's report: the problems, the failing cases as JSON, the command that runs them."""
    chosen = [c for c in batch["cases"] if c["id"] in failing] or batch["cases"]
    shown = shown_command(cmd)
    cases = json.dumps({"markers": "markers", "cases": chosen})
    return (
        f"{backend} ({batch['workers']} worker(s)), {len(batch['cases'])} cases:\n  "
        + "\n  ".join(problems[:12])
        + f"\n{run_text(r)}\n--- to reproduce, write cases.json and run (from the repository):\n"
        + f"{shown}\ncases.json: {cases[:6000]}"
    )
