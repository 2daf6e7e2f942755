"""``eval_timeout`` at its limits.  A value no timer can hold is refused wherever it is given; the
largest accepted one (``config.EVAL_TIMEOUT_MAX``) works on every timer that counts it.

f035c23 accepted ``--eval-timeout inf`` (or ``1e300``): every worker died of OverflowError in
``setitimer``; locally the pool broke under ~60 lines of tracebacks, and under MPI the run hung
until killed.  The limits measured (Python 3.11, Linux x86-64): ``signal.setitimer`` and
``threading`` waits hold up to 2**63 ns (9.2e9 s), an isolated worker's ``poll()`` whole
milliseconds in a C int (2**31 - 1 ms, 24.8 days); the maximum, 1e6 s, is under all of them.
"""

from __future__ import annotations

import math
import select
import signal
import socket

import pytest
from helpers import FIXTURES, clean_env, launcher, mpi_launcher, output, run

import evocluster
from evocluster import _config as config
from evocluster.errors import ConfigurationError

JOBS = FIXTURES / "jobs"
#: Just past the documented maximum, and far past any timer's limit
TOO_LARGE = ["inf", "1e300", "nan", "1000001"]


def double(x: int) -> int:
    return 2 * x


# ------------------------------------------------------------------ refused where it is given
@pytest.mark.parametrize("value", [math.inf, 1e300, math.nan, 1_000_001.0])
def test_executor_refuses_an_eval_timeout_no_timer_holds(value: float) -> None:
    with pytest.raises(ConfigurationError, match=r"eval_timeout must be > 0 and at most 1000000"):
        evocluster.Executor(backend="serial", eval_timeout=value)
    with (
        evocluster.Executor(backend="serial") as ex,
        pytest.raises(ConfigurationError, match="eval_timeout"),
    ):
        ex.with_policy(eval_timeout=value)


@pytest.mark.parametrize("value", ["inf", "1e300", "nan", "1e7"])
def test_environment_refuses_an_eval_timeout_no_timer_holds(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVOCLUSTER_EVAL_TIMEOUT", value)
    with pytest.raises(ConfigurationError, match="eval_timeout must be > 0 and at most"):
        config.resolve()


@pytest.mark.parametrize(
    "value", [True, "5", 1 + 2j, pytest.param(10**400, id="10**400")], ids=repr
)
def test_an_eval_timeout_that_is_no_number_of_seconds_is_refused(value: object) -> None:
    with pytest.raises(ConfigurationError, match="eval_timeout"):
        config.check(config.Options(eval_timeout=value))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "how", ["option", "environment", pytest.param("mpi-n3", marks=pytest.mark.mpi)]
)
@pytest.mark.parametrize("value", TOO_LARGE)
def test_eval_timeout_no_timer_holds_is_a_one_line_usage_error(how: str, value: str) -> None:
    job = str(JOBS / "exit_plain_mpi.py")
    env = None
    if how == "option":
        cmd = launcher("--eval-timeout", value, job)
    elif how == "environment":
        cmd, env = launcher(job), clean_env(EVOCLUSTER_EVAL_TIMEOUT=value)
    else:  # f035c23 hung here until killed
        cmd = mpi_launcher(3, "--eval-timeout", value, job)
    r = run(cmd, timeout=60, env=env, no_leftovers=True)
    assert r.returncode == 2, output(r)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, output(r)
    said = "evocluster: eval_timeout must be > 0 and at most 1000000 seconds"
    assert lines[0].startswith(said), output(r)
    assert "RESULTS" not in r.stdout, output(r)


# ------------------------------------------------------------------ the maximum holds everywhere
def test_the_maximum_is_under_every_timers_limit() -> None:
    """What the documented maximum rests on, measured here: each call takes it (or its whole
    milliseconds), and fails just past the limit that makes it the tightest."""
    longest = config.EVAL_TIMEOUT_MAX
    a, b = socket.socketpair()
    with a, b:
        b.send(b"x")  # readable: each poll returns at once, if it takes its timeout at all
        poller = select.poll()
        poller.register(a, select.POLLIN)
        assert poller.poll(math.ceil(longest * 1000))  # an isolated worker's wait
        with pytest.raises(OverflowError):
            poller.poll(2**31)  # 24.8 days: the poll() limit is the tightest
    before = signal.getsignal(signal.SIGALRM)
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    try:
        signal.setitimer(signal.ITIMER_REAL, longest)  # the in-process alarm's
        with pytest.raises(OverflowError):
            signal.setitimer(signal.ITIMER_REAL, math.inf)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)


@pytest.mark.parametrize(
    "options",
    [
        {"backend": "serial"},
        {"backend": "local", "workers": 1},
        {"backend": "local", "workers": 1, "isolate": True},
    ],
    ids=["serial-alarm", "local-alarm", "local-isolated"],
)
def test_the_largest_eval_timeout_evaluates_normally(options: dict[str, object]) -> None:
    with evocluster.Executor(eval_timeout=config.EVAL_TIMEOUT_MAX, **options) as ex:  # type: ignore[arg-type]
        assert list(ex.map(double, range(20))) == [2 * x for x in range(20)]
        assert ex.failures == []


@pytest.mark.mpi
def test_the_largest_eval_timeout_evaluates_normally_under_mpi() -> None:
    cmd = mpi_launcher(3, "--eval-timeout", f"{config.EVAL_TIMEOUT_MAX:.0f}")
    r = run([*cmd, str(JOBS / "exit_plain_mpi.py")], timeout=90, no_leftovers=True)
    assert r.returncode == 0, output(r)
    assert "RESULTS [1, 2]" in r.stdout, output(r)
    assert "evocluster:" not in r.stderr, output(r)
