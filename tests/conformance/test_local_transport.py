"""The local process pool's transport: flow control and a safe end.

* A map whose chunks and results each outgrow a socket's buffer completes: the master never blocks
  sending to a worker that is itself blocked sending a result (a map of 1,000,000 cheap items did
  exactly that, and hung).
* After the transport is closed, ``wakeup()`` and ``close()`` do nothing: they never write into a
  closed file descriptor, nor into a file that reuses its number.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from helpers import clean_env, launcher, output, run

import evocluster
from evocluster import _config as config
from evocluster import _jobfile as jobfile
from evocluster import _protocol as protocol
from evocluster._backends.local import ProcessTransport
from evocluster._serialization import dumps

TIMEOUT = 45  # a hang, never slowness: each run below takes about a second

CHEAP_MAP_JOB = """
import evocluster

def inc(x):
    return x + 1

if __name__ == "__main__":
    out = evocluster.map(inc, range({n}))
    print("checksum", len(out), sum(out))
"""

BIG_ITEMS_JOB = """
import numpy as np

import evocluster

ROW = 1 << 17  # float64: 1 MiB per item and per result

def bump(a):
    return a + 1.0

def grow(i):
    return np.full(ROW, float(i))

if __name__ == "__main__":
    n = 200
    items = [np.full(ROW, float(i)) for i in range(n)]
    both = evocluster.map(bump, items)  # 1 MiB in, 1 MiB out
    assert all(r.shape == (ROW,) and r[0] == r[-1] == i + 1 for i, r in enumerate(both))
    out = evocluster.map(grow, range(n))  # a few bytes in, 1 MiB out
    assert all(r.shape == (ROW,) and r[0] == r[-1] == i for i, r in enumerate(out))
    print("checksum", int(sum(r.sum() for r in both)), int(sum(r.sum() for r in out)))
"""


def test_long_map_of_cheap_items_completes(tmp_path: Path) -> None:
    n = 1_000_000
    job = tmp_path / "cheap_map.py"
    job.write_text(CHEAP_MAP_JOB.format(n=n))
    proc = run(launcher("--backend", "local", "--workers", "2", str(job)), timeout=TIMEOUT)
    assert proc.returncode == 0, output(proc)
    assert f"checksum {n} {n * (n + 1) // 2}" in proc.stdout, output(proc)


@pytest.mark.parametrize(
    "prefetch_max_bytes",
    [None, str(1 << 30)],
    ids=["default", "large-chunks-to-busy-workers"],
)
def test_map_of_large_arrays_both_ways_completes(
    tmp_path: Path, prefetch_max_bytes: str | None
) -> None:
    """1 MiB items and results; the second case also queues 1 MiB chunks behind busy workers,
    which then send 1 MiB results while the master still has their next chunk to send."""
    job = tmp_path / "big_items.py"
    job.write_text(BIG_ITEMS_JOB)
    extra = (
        {} if prefetch_max_bytes is None else {"EVOCLUSTER_PREFETCH_MAX_BYTES": prefetch_max_bytes}
    )
    proc = run(
        launcher("--backend", "local", "--workers", "2", str(job)),
        timeout=TIMEOUT,
        env=clean_env(**extra),
    )
    assert proc.returncode == 0, output(proc)
    row, n = 1 << 17, 200
    expect = (row * n * (n + 1) // 2, row * n * (n - 1) // 2)
    assert f"checksum {expect[0]} {expect[1]}" in proc.stdout, output(proc)


def _open_victims(where: Path, n: int = 8) -> tuple[list[Path], list[int]]:
    """``n`` new open files: they take the lowest free descriptor numbers, so most likely those a
    transport just closed (its wake-up pipe among them)."""
    where.mkdir(exist_ok=True)
    paths = [where / f"victim-{i}" for i in range(n)]
    return paths, [os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600) for p in paths]


def _close_and_check(paths: list[Path], fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
    written = {p.name: p.read_bytes() for p in paths if p.stat().st_size}
    assert not written, f"bytes written into files opened after the pool closed: {written}"


def test_wakeup_and_close_after_close_write_nowhere(tmp_path: Path) -> None:
    job, opts, stop = jobfile.spec(None, None, []), config.resolve(), dumps(protocol.stop())
    for trial in range(4):
        transport = ProcessTransport(2, job, opts)
        transport.close(stop)
        paths, fds = _open_victims(tmp_path / f"trial-{trial}")
        try:
            transport.wakeup()  # no wake-up was pending at close: the old code wrote a byte here
            transport.wakeup()
            transport.close(stop)  # a second close: nothing left to release
            transport.send(0, stop)  # nothing to send on
            assert transport.poll(0) == []
        finally:
            _close_and_check(paths, fds)


def _square(x: int) -> int:
    return x * x


def _executor() -> evocluster.Executor:
    ex = evocluster.Executor(backend="local", workers=2)
    assert ex.submit(_square, 3).result(timeout=TIMEOUT) == 9
    return ex


def test_executor_shutdown_twice(tmp_path: Path) -> None:
    ex = _executor()
    ex.shutdown()
    paths, fds = _open_victims(tmp_path)
    try:
        ex.shutdown()
        ex.shutdown(wait=False)
    finally:
        _close_and_check(paths, fds)


def test_executor_shutdown_without_waiting_then_waiting(tmp_path: Path) -> None:
    ex = _executor()
    ex.shutdown(wait=False)
    paths, fds = _open_victims(tmp_path)
    try:
        ex.shutdown()
        ex.shutdown()  # the pool has surely ended by now
    finally:
        _close_and_check(paths, fds)


def test_executor_shutdown_inside_with_block(tmp_path: Path) -> None:
    with _executor() as ex:
        assert list(ex.map(_square, range(5))) == [0, 1, 4, 9, 16]
        ex.shutdown()
        paths, fds = _open_victims(tmp_path)
    _close_and_check(paths, fds)  # (the block's exit called shutdown() again)


def test_submits_racing_shutdown(tmp_path: Path) -> None:
    """Threads submit while the pool shuts down: each submit succeeds or is refused, and the
    wake-ups that come after the transport closed go nowhere."""
    ex = _executor()
    errors: list[BaseException] = []
    go = threading.Event()

    def submitter() -> None:
        go.wait()
        for i in range(2000):
            try:
                ex.submit(_square, i)
            except RuntimeError:  # after shutdown: refused, as it should be
                pass
            except BaseException as e:
                errors.append(e)
                return

    threads = [threading.Thread(target=submitter) for _ in range(3)]
    for t in threads:
        t.start()
    go.set()
    ex.shutdown(cancel_futures=True)
    paths, fds = _open_victims(tmp_path)
    try:
        for t in threads:
            t.join(TIMEOUT)
        ex.shutdown()
    finally:
        _close_and_check(paths, fds)
    assert not errors, errors
