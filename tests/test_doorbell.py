"""Doorbells: a TCP byte that wakes a waiting MPI worker when work is sent to it.

The unit tests use real sockets in one process; the MPI tests launch real ranks."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from helpers import TESTS, clean_env, mpi_command, run

from evocluster.backends import doorbell
from evocluster.backends.base import Backoff

JOB = str(TESTS / "jobs" / "doorbells.py")


_opened: list[doorbell.Bell] = []


def _connect(*args: object) -> doorbell.Bell:
    bell = doorbell.connect(*args)  # type: ignore[arg-type]
    _opened.append(bell)
    return bell


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


def test_doorbell_setting_is_validated() -> None:
    from evocluster import config
    from evocluster.errors import ConfigurationError

    assert config.resolve(doorbell=False).doorbell is False
    proc_env = {"EVOCLUSTER_DOORBELL": "maybe"}
    import os

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
