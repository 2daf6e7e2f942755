"""Property-based fuzzing of options at and past their limits: every ``Executor`` keyword, every
``EVOCLUSTER_*`` variable and every launcher flag either works (the executor maps as the builtin
``map`` does, the launched job exits 0 with the right result) or is refused clearly (a
``ConfigurationError``/``ValueError``/``TypeError`` naming the option; from the launcher, exit 2
with a short message naming the flag or variable), never a traceback, a hang or a wrong result.

The keyword and variable layer runs in this process (an example costs milliseconds; a local pool
is started only when the example asks for one); the launcher layer launches one run per example
(serial and local; a few under ``mpiexec -n 3``).  Budgets, seeds and how to run longer:
``tests/fuzz/fuzz_support.py``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fuzz_support import (
    Campaign,
    command,
    fuzz,
    fuzz_timeout,
    launched,
    run_text,
    shown_command,
)
from helpers import clean_env
from hypothesis import given
from hypothesis import strategies as st

import evocluster


# ---------------------------------------------------------------------------- what is sane
def _finite_positive(v: Any) -> bool:
    return type(v) in (int, float) and math.isfinite(v) and v > 0


def _count(v: Any) -> bool:
    return type(v) is int and v >= 1


def _fraction(v: Any) -> bool:
    return _finite_positive(v) and v <= 1


#: keyword -> (values to try, whether a value is one every run must accept and work with)
KEYWORDS: dict[str, tuple[list[Any], Callable[[Any], bool]]] = {
    "workers": ([1, 2, 0, -1, 2.5, True, "2"], _count),
    "prefetch": (
        [1, 2, 64, 65, 10**9, 0, -1, 2.5, math.nan, True, "2"],
        lambda v: _count(v) and v <= 64,
    ),
    "prefetch_max_bytes": ([1, 1 << 20, 0, -1, 2.5], _count),
    "prefetch_spread": (
        [0.3, 0.0, 1e9, math.nan, -1.0, math.inf],
        lambda v: _finite_positive(v) or v == 0.0,
    ),
    "chunk_target": ([1e-6, 0.1, 10.0, 0.0, -1.0, math.nan, math.inf], _finite_positive),
    "chunk_min": ([1e-6, 0.01, 0.0, math.nan, math.inf], _finite_positive),
    "chunk_max_bytes": ([1, 1 << 20, 0, -1, 2**70], _count),
    "poll_min": ([1e-6, 2e-5, 0.0, math.nan, -1.0], _finite_positive),
    "poll_max": ([0.01, 0.25, 0.0, math.nan, math.inf], _finite_positive),
    "master_poll_max": ([0.01, 0.05, 0.0, math.nan, math.inf], _finite_positive),
    "poll_fraction": ([0.2, 1.0, 0.0, 2.0, math.nan], _fraction),
    "result_latency": ([0.05, 1.0, 0.0, 2.0, math.nan], _fraction),
    "doorbell": ([True, False, "maybe", 2], lambda v: type(v) is bool),
    "on_error": (["raise", "penalize", "retry:1", "retry:", "Raise", "retry:-1"], lambda v: False),
    "penalty": ([-1, (-1e9, 1e9), math.nan, "failed"], lambda v: True),
    "eval_timeout": ([2.0, 1e5, 0.0, -1.0, math.nan, math.inf, 1e300], lambda v: v in (2.0, 1e5)),
    "isolate": ([True, False, "yes", 2], lambda v: type(v) is bool),
    "eval_memory": (
        ["512M", "2G", 1 << 30, "1K", "abc", -5],
        lambda v: v in ("512M", "2G", 1 << 30),
    ),
    "serialization": (
        ["upgrade", "strict", "cloudpickle", "pickle", ""],
        lambda v: v in ("upgrade", "strict", "cloudpickle"),
    ),
    "force_workers": ([True, False, "no"], lambda v: type(v) is bool),
    "no_such_option": ([1], lambda v: False),
}


#: the variable of each option (the launcher's and Executor's names: docs/configuration.md)
ENV = {name: f"EVOCLUSTER_{name.upper()}" for name in KEYWORDS if name != "no_such_option"}


def sane(name: str, value: Any, given: dict[str, Any], via: str = "keywords") -> bool:
    """Whether every run must accept ``name=value`` (in the context of the other options)."""
    if name == "penalty" and via == "environment":
        return not isinstance(value, str)  # a variable holds a literal: 'failed', quoted
    if name == "on_error":
        return value in ("raise", "retry:1") or (
            value == "penalize" and given.get("penalty") is not None
        )
    return KEYWORDS[name][1](value)


@st.composite
def keyword_sets(draw: Any) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(sorted(KEYWORDS)), max_size=4, unique=True))
    return {n: draw(st.sampled_from(KEYWORDS[n][0])) for n in names}


def _names(name: str) -> tuple[str, ...]:
    env = ENV.get(name)
    return (name, name.replace("_", "-"), *((env,) if env else ()))


def _problem(given: dict[str, Any], build: Callable[[], Any], via: str) -> str | None:
    """Build an executor from ``given``; the problem, if it was not refused clearly when it had
    to be, or does not map as the builtin map does when it was accepted."""
    insane = [n for n, v in given.items() if not sane(n, v, given, via)]
    try:
        ex = build()
    except (evocluster.ConfigurationError, ValueError, TypeError) as e:
        named = [n for n in given if any(w in str(e) for w in _names(n))]
        if not insane or not named:
            naming = named or "none of them"
            return f"{via} {given}: refused with {type(e).__name__}: {e} (naming {naming})"
        return None
    except Exception as e:
        return f"{via} {given}: {type(e).__name__}: {e} (not a clear refusal)"
    try:
        got = list(ex.map(abs, range(-6, 6), timeout=60))
        if got != list(map(abs, range(-6, 6))):
            return f"{via} {given}: accepted, then mapped {got}"
    except evocluster.ConfigurationError as e:  # refused at the call (penalize without penalty)
        if not any(w in str(e) for n in insane for w in _names(n)):
            return f"{via} {given}: accepted, then the map raised ConfigurationError: {e}"
    except Exception as e:
        return f"{via} {given}: accepted, then the map raised {type(e).__name__}: {e}"
    finally:
        ex.shutdown(wait=False, cancel_futures=True)
    return None


@pytest.mark.slow
@pytest.mark.timeout(fuzz_timeout(80, 1000, 1))
@pytest.mark.parametrize("via", ["keywords", "environment"])
def test_options_at_their_limits_work_or_are_refused_naming_them(
    via: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ENV.values():
        monkeypatch.delenv(var, raising=False)

    @fuzz(ci=80, long=1000, shrink=True)
    @given(given=keyword_sets(), backend=st.sampled_from(["serial"] * 3 + ["local"]))
    def check(given: dict[str, Any], backend: str) -> None:
        if via == "environment":
            given = {n: v for n, v in given.items() if n in ENV}
        with monkeypatch.context() as m:
            if via == "environment":
                for name, value in given.items():
                    m.setenv(ENV[name], str(value))
                kwargs: dict[str, Any] = {}
            else:
                kwargs = dict(given)
            kwargs.setdefault("backend", backend)
            problem = _problem(given, lambda: evocluster.Executor(**kwargs), via)
        assert problem is None, problem

    check()


# ---------------------------------------------------------------------------- the launcher
JOB = """\
import sys

import evocluster


def square(x):
    return x * x


if __name__ == "__main__":
    got = evocluster.map(square, range(12))
    print("RESULT", "ok" if got == [x * x for x in range(12)] else f"wrong {got}", flush=True)
"""

#: flag -> values (None: a flag without a value); each run draws a few
FLAGS: dict[str, list[Any]] = {
    "--backend": ["auto", "local", "serial", "mpi", "scoop", "bogus"],
    "--workers": ["1", "2", "9", "0", "-1", "abc", "1.5"],
    "--force-workers": [None],
    "--serialization": ["upgrade", "strict", "cloudpickle", "pickle"],
    "--on-error": ["raise", "penalize", "retry:1", "retry:", "Raise"],
    "--penalty": ["-1", "(-1e9, 1e9)", "inf", "nan", "(", "__import__('os')", ""],
    "--eval-timeout": ["2", "1e5", "1e-6", "0", "-1", "nan", "inf", "1e300", "abc"],
    "--isolate": [None],
    "--eval-memory": ["512M", "2G", "1K", "abc", "0", "-5M"],
    "--checkpoint-every": ["0", "5", "-1", "nan", "abc"],
    "--checkpoint-every-generations": ["1", "0", "-1", "abc"],
    "--resume": [None],
    "--no-such-flag": [None],
}
#: variables of the environment -> values
VARIABLES: dict[str, list[str]] = {
    "EVOCLUSTER_WORKERS": ["2", "0", "x"],
    "EVOCLUSTER_ON_ERROR": ["penalize", "retry:x"],
    "EVOCLUSTER_PENALTY": ["-1", "("],
    "EVOCLUSTER_EVAL_TIMEOUT": ["5", "0", "inf", "nan"],
    "EVOCLUSTER_ISOLATE": ["1", "maybe"],
    "EVOCLUSTER_PREFETCH": ["1", "0", "1e3", "65", "1000000000"],
    "EVOCLUSTER_CHUNK_TARGET": ["0.05", "0", "nan", "inf"],
    "EVOCLUSTER_CHUNK_MAX_BYTES": ["1", "0"],
    "EVOCLUSTER_RESULT_LATENCY": ["0.5", "nan", "2"],
    "EVOCLUSTER_POLL_MAX": ["0.1", "inf", "nan"],
    "EVOCLUSTER_DOORBELL": ["0", "maybe"],
    "EVOCLUSTER_SERIALIZATION": ["strict", "bogus"],
    "EVOCLUSTER_BACKEND": ["serial", "bogus"],
}
#: values every run accepts and works with (anything else may be refused)
SANE_FLAGS = {
    "--backend": {"auto", "local", "serial"},
    "--workers": {"1", "2", "9"},
    "--serialization": {"upgrade", "strict", "cloudpickle"},
    "--on-error": {"raise", "retry:1"},
    "--penalty": {"-1", "(-1e9, 1e9)", "inf", "nan"},
    "--eval-timeout": {"2", "1e5"},
    "--eval-memory": {"512M", "2G"},
    # --checkpoint-every*, --resume: never sane here, they need --checkpoint PATH (not drawn)
}
SANE_VARIABLES = {
    "EVOCLUSTER_WORKERS": {"2"},
    "EVOCLUSTER_PENALTY": {"-1"},
    "EVOCLUSTER_EVAL_TIMEOUT": {"5"},
    "EVOCLUSTER_ISOLATE": {"1"},
    "EVOCLUSTER_PREFETCH": {"1"},
    "EVOCLUSTER_CHUNK_TARGET": {"0.05"},
    "EVOCLUSTER_CHUNK_MAX_BYTES": {"1"},
    "EVOCLUSTER_RESULT_LATENCY": {"0.5"},
    "EVOCLUSTER_POLL_MAX": {"0.1"},
    "EVOCLUSTER_DOORBELL": {"0"},
    "EVOCLUSTER_SERIALIZATION": {"strict"},
    "EVOCLUSTER_BACKEND": {"serial"},
}


@st.composite
def command_lines(draw: Any) -> dict[str, Any]:
    flags = draw(st.lists(st.sampled_from(sorted(FLAGS)), max_size=3, unique=True))
    variables = draw(st.lists(st.sampled_from(sorted(VARIABLES)), max_size=2, unique=True))
    return {
        "flags": [[f, draw(st.sampled_from(FLAGS[f]))] for f in flags],
        "env": {v: draw(st.sampled_from(VARIABLES[v])) for v in variables},
    }


def _argv(example: dict[str, Any]) -> list[str]:
    argv = []
    for flag, value in example["flags"]:
        argv += [flag] if value is None else [f"{flag}={value}"]
    return argv


def _unusual(example: dict[str, Any], mpi: bool) -> list[str]:
    """The flags and variables of ``example`` that a run may refuse (or must: decided by the
    outcome, which must then be a clear usage error naming one of them)."""
    found = []
    for flag, value in example["flags"]:
        sane_value = flag in SANE_FLAGS and value in SANE_FLAGS[flag]
        # under mpiexec, a backend other than MPI's may be refused
        if sane_value and not (mpi and flag == "--backend" and value in ("local", "serial")):
            continue
        if flag in ("--force-workers", "--isolate"):
            continue
        found.append(flag)
    for var, value in example["env"].items():
        if value not in SANE_VARIABLES.get(var, ()) or (mpi and var == "EVOCLUSTER_BACKEND"):
            found.append(var)
    if _penalize_without_penalty(example):
        found.append("--penalty")
    return found


def _penalize_without_penalty(example: dict[str, Any]) -> bool:
    """``--on-error penalize`` (or its variable) without ``--penalty`` (or its variable): the
    launcher accepts it (an engine loop has a default penalty), ``evocluster.map`` refuses it."""
    flags, env = dict(example["flags"]), example["env"]
    penalize = (flags.get("--on-error") or env.get("EVOCLUSTER_ON_ERROR")) == "penalize"
    return penalize and "--penalty" not in flags and "EVOCLUSTER_PENALTY" not in env


def _spellings(option: str) -> tuple[str, ...]:
    """How a message may name a flag (``--eval-timeout``, ``eval_timeout``) or a variable
    (``EVOCLUSTER_WORKERS``, or the option it sets: ``workers``)."""
    if option.startswith("EVOCLUSTER_"):
        return (option, option.removeprefix("EVOCLUSTER_").lower())
    return (option, option.lstrip("-").replace("-", "_"))


def launcher_problem(example: dict[str, Any], r: Any, mpi: bool) -> str | None:
    """Exit 0 with the right result; or exit 2 (1 for a job the options made fail, such as a
    timeout of a microsecond) with a short message naming one of the unusual options."""
    unusual = _unusual(example, mpi)
    err = r.stderr
    if "Traceback (most recent call last)" in err and r.returncode != 1:
        return "a traceback on stderr"
    tiny = ["--eval-timeout", "1e-6"] in example["flags"]
    if r.returncode == 0:
        # a timeout of a microsecond: every evaluation may time out, and be penalized
        return None if "RESULT ok" in r.stdout or tiny else "exit 0 without the right result"
    if not unusual:
        return f"exit {r.returncode}, but every option was one every run accepts"
    named = [u for u in unusual if any(w in err for w in _spellings(u))]
    lines = [line for line in err.splitlines() if line.strip()]
    if r.returncode == 2 and named and len(lines) <= 3:
        return None
    if r.returncode == 1 and "EvaluationTimeout" in err and tiny:
        return None  # a timeout of a microsecond: every evaluation times out, the job raises
    if r.returncode == 1 and _penalize_without_penalty(example):
        # refused by the job's first map, naming what to give
        last = "\n".join(lines[-3:])
        return None if "ConfigurationError" in last and "penalty" in last else "unclear exit 1"
    return (
        f"exit {r.returncode}: not a short usage error naming one of {unusual} ({len(lines)} lines)"
    )


def _launch_check(example: dict[str, Any], where: Path, backend: str) -> str | None:
    where.mkdir(parents=True, exist_ok=True)
    (where / "job.py").write_text(JOB)
    mpi = backend == "mpi"
    cmd = command(backend, 2, *_argv(example), "job.py") if mpi else [
        sys.executable, "-m", "evocluster", *_argv(example), "job.py"
    ]  # fmt: skip
    env = clean_env(**example["env"])
    r, problems = launched(cmd, cwd=where, timeout=60, env=env)
    problem = launcher_problem(example, r, mpi)
    if problem or problems:
        shown = " ".join(f"{k}={v}" for k, v in example["env"].items())
        return (
            f"{problem or ''} {problems or ''}\n{shown} {shown_command(cmd)}\n{run_text(r)}"
        ).strip()
    return None


@pytest.mark.slow
@pytest.mark.timeout(fuzz_timeout(14, 200, 30))
@pytest.mark.parametrize(
    ("backend", "ci"), [("local", 14), pytest.param("mpi", 5, marks=pytest.mark.mpi)]
)
def test_launcher_flags_and_variables_work_or_are_a_usage_error(
    backend: str, ci: int, tmp_path: Path
) -> None:
    campaign = Campaign()
    n = iter(range(10**6))

    @fuzz(ci=ci, long=200)
    @given(example=command_lines())
    def check(example: dict[str, Any]) -> None:
        campaign.check(example, lambda: _launch_check(example, tmp_path / f"ex{next(n)}", backend))

    check()
    campaign.finish()


def test_the_sanity_table_knows_every_variable() -> None:
    """Every variable the launcher's fuzzing sets is one evocluster reads."""
    assert set(VARIABLES) <= set(ENV.values()) | {"EVOCLUSTER_BACKEND"}, set(VARIABLES)
