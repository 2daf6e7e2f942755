"""Doorbells: a TCP byte that wakes a waiting MPI worker when work is sent to it.

The unit tests use real sockets in one process; the MPI tests launch real ranks."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time

import pytest
from helpers import (
    FIXTURES,
    OPENMPI_FLAGS,
    OPENMPI_PYTHON,
    clean_env,
    mpi_command,
    output,
    require_mpiexec,
    require_openmpi,
    run,
)

from evocluster._backends import doorbell
from evocluster._backends.base import Backoff

JOB = str(FIXTURES / "jobs" / "doorbells.py")
STRANGERS = str(FIXTURES / "jobs" / "doorbell_strangers.py")
COUNT_JOB = str(FIXTURES / "jobs" / "doorbell_count.py")


_opened: list[doorbell.Bell] = []


def _connect(*args: object) -> doorbell.Bell:
    bell = doorbell.connect(*args)  # type: ignore[arg-type]
    _opened.append(bell)
    return bell


@pytest.fixture(autouse=True)
def _close_opened():
    yield
    while _opened:
        _opened.pop().close()


@pytest.fixture
def bells():
    d = doorbell.Doorbells(2)
    yield d
    d.close()
    while _opened:
        _opened.pop().close()


def _wait_connected(d: doorbell.Doorbells, n: int) -> None:
    deadline = time.monotonic() + 10
    while d.connected < n and time.monotonic() < deadline:
        time.sleep(0.01)
    assert d.connected == n


def test_a_ring_ends_the_wait_of_the_worker_it_is_for(bells: doorbell.Doorbells) -> None:
    hosts, port, token = bells.address()
    one = _connect(hosts, port, token, 1)
    two = _connect(hosts, port, token, 2)
    assert one.connected and two.connected
    _wait_connected(bells, 2)
    assert not one.wait(0.01)  # nothing rang: the wait times out
    threading.Timer(0.2, bells.ring, args=(0,)).start()
    assert one.wait(30.0)  # woken by the ring, long before the timeout (else the test hangs 30 s)
    assert not two.wait(0.01)  # the ring was for worker 0 (rank 1) only
    assert bells.rings == 1
    bells.ring(1)
    bells.ring(1)
    assert two.wait(5.0)  # rings that came while it was busy are all read by one wait
    assert not two.wait(0.01)
    assert bells.rings == 3


def test_a_worker_gives_its_host_and_pid_with_its_doorbell(bells: doorbell.Doorbells) -> None:
    # the master names a worker that dies before its first MPI message is read by them
    hosts, port, token = bells.address()
    assert bells.who(1) is None
    _connect(hosts, port, token, 2)
    _wait_connected(bells, 1)
    assert bells.who(1) == (socket.gethostname(), os.getpid())
    assert bells.who(0) is None


def test_a_connection_without_the_token_or_with_a_bad_rank_is_refused(
    bells: doorbell.Doorbells,
) -> None:
    hosts, port, token = bells.address()
    wrong = _connect(hosts, port, b"x" * len(token), 1)
    out_of_range = _connect(hosts, port, token, 3)
    for bell in (wrong, out_of_range):
        # the master closes it: the worker's wait sees the end, and it falls back to sleeping
        deadline = time.monotonic() + 10
        while bell.connected and time.monotonic() < deadline:
            bell.wait(0.05)
        assert not bell.connected
    assert bells.connected == 0
    bells.ring(0)
    assert bells.rings == 0  # nobody to ring
    good = _connect(hosts, port, token, 1)
    _wait_connected(bells, 1)
    bells.ring(0)
    assert good.wait(5.0)


def _silent(port: int, n: int) -> list[socket.socket]:
    """``n`` connections to ``port`` that never send a byte (connected by the kernel, without
    waiting for the master to accept them)."""
    found = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        found.append(s)
    return found


def _closed_by_master(s: socket.socket, within: float) -> bool:
    """Whether the master closes ``s`` within ``within`` s, having sent nothing on it."""
    s.settimeout(within)
    try:
        data = s.recv(64)
    except TimeoutError:
        return False
    except OSError:  # reset: closed as well
        return True
    assert data == b"", data  # never a byte to a stranger: the token above all
    return True


def test_silent_connections_hold_up_no_worker(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # before the fix, the master read one greeting at a time, 2 s each: 20 silent connections
    # ahead of the workers held them up 40 s, longer than a worker waits to connect, and the
    # workers polled with no word said
    monkeypatch.setattr(doorbell, "HELLO_TIMEOUT", 30.0, raising=False)  # silence lasts
    d = doorbell.Doorbells(2)
    try:
        hosts, port, token = d.address()
        strangers = _silent(port, 20)
        time.sleep(0.2)  # they are all at the listener first
        t = time.monotonic()
        one = _connect(hosts, port, token, 1)
        two = _connect(hosts, port, token, 2)
        assert one.connected and two.connected
        while d.connected < 2 and time.monotonic() - t < 1.5:  # not one stranger's deadline
            time.sleep(0.01)
        assert d.connected == 2, f"{d.connected} of 2 after {time.monotonic() - t:.1f} s"
        # every worker is in: the strangers are closed at once, having been sent nothing
        assert all(_closed_by_master(s, 5.0) for s in strangers)
        d.ring(1)
        assert two.wait(5.0)
    finally:
        d.close()
        for s in strangers:
            s.close()
    assert capfd.readouterr().err == ""  # nothing is missing: not a word


def test_a_stranger_is_closed_at_its_deadline_while_the_others_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(doorbell, "HELLO_TIMEOUT", 0.5, raising=False)
    d = doorbell.Doorbells(2)
    try:
        hosts, port, token = d.address()
        t = time.monotonic()
        (silent,) = _silent(port, 1)
        (slow,) = _silent(port, 1)
        time.sleep(0.05)
        slow.send(token[:5])  # a part of a greeting, and then nothing
        good = _connect(hosts, port, token, 1)
        _wait_connected(d, 1)
        assert good.connected
        assert _closed_by_master(silent, 5.0) and _closed_by_master(slow, 5.0)
        # at their deadline, not before (how long after depends on the machine's load)
        assert time.monotonic() - t >= 0.45
        deadline = time.monotonic() + 5.0  # the master counts a stranger just after closing it
        while d.strangers < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert d.strangers == 2 and d.connected == 1
        late = _connect(hosts, port, token, 2)  # the set-up goes on: a late worker gets its own
        _wait_connected(d, 2)
        d.ring(1)
        assert late.wait(5.0)
    finally:
        d.close()
        silent.close()
        slow.close()


def test_a_missing_doorbell_is_reported_once_at_the_end_of_the_set_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(doorbell, "HELLO_TIMEOUT", 0.2, raising=False)
    monkeypatch.setattr(doorbell, "SETUP_TIMEOUT", 1.0, raising=False)
    warnings: list[str] = []
    # the default is print on stderr (see the test below); on the old code, no report at all
    monkeypatch.setattr(doorbell, "_print_warning", warnings.append, raising=False)
    d = doorbell.Doorbells(3)
    strangers = _silent(d.port, 2)
    try:
        hosts, port, token = d.address()
        _connect(hosts, port, b"x" * len(token), 3)  # a wrong token: a third stranger
        _connect(hosts, port, token, 1)
        _connect(hosts, port, token, 2)
        _wait_connected(d, 2)
        assert warnings == []  # the set-up is not over yet
        deadline = time.monotonic() + 10
        while not warnings and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        d.close()  # reports nothing more: the report was made
        for s in strangers:
            s.close()
    assert len(warnings) == 1, warnings
    (line,) = warnings
    assert "1 of 3 MPI workers have no doorbell" in line, line
    assert "3 connection(s)" in line and "strangers connected" in line, line
    assert "\n" not in line and token.hex() not in line


def test_a_run_shorter_than_the_set_up_reports_at_its_end(
    capfd: pytest.CaptureFixture[str],
) -> None:
    d = doorbell.Doorbells(2)  # the default report: one line on stderr
    hosts, port, token = d.address()
    _connect(hosts, port, token, 2)
    _wait_connected(d, 1)
    d.close()
    lines = capfd.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("evocluster: 1 of 2 MPI workers"), lines
    assert "no connection of theirs reached port" in lines[0], lines
    complete = doorbell.Doorbells(1)
    hosts, port, token = complete.address()
    _connect(hosts, port, token, 1)
    complete.close()  # at once: a greeting on its way at the end still counts
    assert capfd.readouterr().err == ""  # every worker has its doorbell: not a word


def test_the_acceptor_sleeps_while_silent_connections_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(doorbell, "HELLO_TIMEOUT", 30.0, raising=False)
    d = doorbell.Doorbells(4)
    strangers = _silent(d.port, 50)
    try:
        time.sleep(0.2)
        cpu = time.process_time()
        time.sleep(1.0)
        # the process's CPU in that second, the acceptor thread's included: it sleeps in poll()
        assert time.process_time() - cpu < 0.1
    finally:
        d.close()
        for s in strangers:
            s.close()


def test_a_worker_that_cannot_connect_sleeps_instead() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bell = doorbell.connect(["127.0.0.1"], port, b"t" * 16, 1)
    assert not bell.connected
    t = time.monotonic()
    assert not bell.wait(0.05)
    assert time.monotonic() - t >= 0.05  # it slept: never returns early, never spins


def test_a_worker_on_another_host_never_tries_its_own_loopback(bells: doorbell.Doorbells) -> None:
    _, port, token = bells.address()
    # a master whose host name is not this host's: its loopback addresses would be this host's
    # own, where whatever listens on that port is not the master
    elsewhere = _connect(["localhost", "127.0.0.1", "127.0.1.1"], port, token, 1)
    assert not elsewhere.connected
    time.sleep(0.2)
    assert bells.connected == 0
    # the same addresses from the master's own host do reach it
    here = _connect([socket.gethostname(), "127.0.0.1"], port, token, 1)
    assert here.connected
    _wait_connected(bells, 1)


def test_closing_the_doorbells_leaves_the_workers_polling(bells: doorbell.Doorbells) -> None:
    hosts, port, token = bells.address()
    bell = _connect(hosts, port, token, 1)
    _wait_connected(bells, 1)
    bells.close()
    assert not bell.wait(5.0)  # the closed connection ends the wait, not as a ring
    assert not bell.connected


def test_backoff_with_a_latency_caps_short_waits_and_lengthens_long_ones() -> None:
    b = Backoff(2e-5, 0.05, 0.2, latency=0.001)
    b._since -= 0.1  # waited 100 ms: 0.2 x waited would be 20 ms; the latency caps it
    assert b.next() == pytest.approx(0.001, rel=0.01)
    b._since -= 0.9  # waited 1 s, far longer than expected: 1 % of the wait
    assert b.next() == pytest.approx(0.01, rel=0.05)
    b._since -= 99  # and never above the ceiling
    assert b.next() == 0.05
    plain = Backoff(2e-5, 0.05, 0.2)
    plain._since -= 0.1
    assert plain.next() == pytest.approx(0.02, rel=0.05)


@pytest.mark.mpi
@pytest.mark.parametrize("mpi", ["mpich-wheel", "openmpi"])
@pytest.mark.parametrize("setting", ["default", "off"])
def test_mpi_workers_are_rung_when_sent_work(setting: str, mpi: str) -> None:
    env = clean_env(**({"EVOCLUSTER_DOORBELL": "0"} if setting == "off" else {}))
    # with doorbells, the job first waits (polling stats(), 60 s at most) for all 4 to connect
    proc = run(mpi_command(mpi, 5, JOB, "0" if setting == "off" else "4"), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["backend"] == "mpi" and out["n_workers"] == 4
    if setting == "off":  # polling only, same results (the job checks them)
        assert out["doorbells"] == 0 and out["rings"] == 0, out
    else:
        assert out["connected_before"] == 4 and out["doorbells"] == 4, out
        # once every worker is connected, every message sent is followed by a ring
        assert out["delta"]["rings"] == out["delta"]["messages_sent"] > 0, out


def _with_strangers(mpi: str, n: int, *args: str) -> list[str]:
    """``mpiexec -n N python doorbell_strangers.py ARGS`` with the MPICH wheel or Open MPI."""
    if mpi == "openmpi":
        return [require_openmpi(), *OPENMPI_FLAGS, "-n", str(n), str(OPENMPI_PYTHON), *args]
    return [require_mpiexec(), "-n", str(n), sys.executable, *args]


@pytest.mark.mpi
@pytest.mark.parametrize("mpi", ["mpich-wheel", "openmpi"])
@pytest.mark.parametrize("missing", [0, 1])
def test_strangers_at_the_doorbell_port_hold_up_no_worker_and_a_missing_bell_is_said(
    mpi: str, missing: int
) -> None:
    # 16 silent connections to the master's doorbell port, made the moment it listens (ahead of
    # every worker's); with ``missing``, worker rank 3 never connects (as behind a firewall).
    # Before the fix: the workers were held up or polled for good, and nothing was said.
    no_bell = ["--no-bell", "3"] if missing else []
    cmd = _with_strangers(mpi, 5, STRANGERS, "16", *no_bell, COUNT_JOB, str(4 - missing))
    proc = run(cmd, env=clean_env())
    assert proc.returncode == 0, output(proc)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["n_workers"] == 4, out
    # every worker that connects has its doorbell once the first map is done (well before the
    # strangers' deadline: they hold no one up), and each message to it is followed by a ring
    assert out["connected_before"] == out["doorbells"] == 4 - missing, out
    assert out["waited"] < 5, out
    if not missing:
        assert out["rings"] == out["messages_sent"] > 0, out
    else:
        assert 0 < out["rings"] < out["messages_sent"], out
    said = [line for line in proc.stderr.splitlines() if line.startswith("evocluster:")]
    if not missing:
        assert said == [], proc.stderr
    else:  # one line: how many workers poll, and why
        assert len(said) == 1, proc.stderr
        assert "1 of 4 MPI workers have no doorbell and poll" in said[0], said
        assert "strangers connected" in said[0], said


def test_doorbell_setting_is_validated() -> None:
    from evocluster import _config as config
    from evocluster.errors import ConfigurationError

    assert config.resolve(doorbell=False).doorbell is False
    proc_env = {"EVOCLUSTER_DOORBELL": "maybe"}

    old = {k: os.environ.get(k) for k in proc_env}
    os.environ.update(proc_env)
    try:
        with pytest.raises(ConfigurationError, match="EVOCLUSTER_DOORBELL='maybe'"):
            config.resolve()
        os.environ["EVOCLUSTER_DOORBELL"] = "off"
        assert config.resolve().doorbell is False
        os.environ["EVOCLUSTER_DOORBELL"] = "Yes"
        assert config.resolve().doorbell is True
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    with pytest.raises(ConfigurationError, match="RESULT_LATENCY"):
        config.resolve(result_latency=0)
