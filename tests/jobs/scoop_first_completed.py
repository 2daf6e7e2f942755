"""Waiting on evocluster's futures under SCOOP: ``python -m scoop -n 3 scoop_first_completed.py``.

``concurrent.futures.wait`` (each ``return_when``), ``as_completed`` and ``result`` /
``exception`` with and without a timeout, on futures of an evocluster executor (and one of a
stdlib thread pool), as a steady-state engine uses them: the first future to settle is returned
first, while the others still run.  The assertions are on which futures are done, not on clocks.
Prints ``CHECK <name>`` after each check, the CPU time the origin used while ``as_completed``
waited about 2 s (``WAIT CPU``), and ``ALL OK`` at the end; any failure raises.
"""

import os
import time
from concurrent.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    ThreadPoolExecutor,
    as_completed,
    wait,
)
from concurrent.futures import TimeoutError as FuturesTimeout  # not the builtin on 3.10

import evocluster


def nap(seconds):
    time.sleep(seconds)
    return seconds


def pid_after(seconds):
    time.sleep(seconds)
    return os.getpid()


def infeasible(x):
    raise ValueError(f"individual {x} is infeasible")


def check(name):
    print("CHECK", name, flush=True)


def raises_timeout(call):
    try:
        call()
    except FuturesTimeout:
        return True
    return False


if __name__ == "__main__":
    ex = evocluster.get_executor()
    assert (ex.backend, ex.n_workers) == ("scoop", 2), (ex.backend, ex.n_workers)
    # until both workers have served: then each has asked SCOOP's broker for its next task, and
    # two tasks submitted together run on different workers (not one behind the other)
    pids = set()
    for _ in range(50):
        pids |= set(evocluster.map(pid_after, [0.05] * 4))
        if len(pids) == 2:
            break
    assert len(pids) == 2, f"only {pids} served"

    slow = ex.submit(nap, 3.0)
    fast = ex.submit(nap, 0.05)
    done, not_done = wait([slow, fast], return_when=FIRST_COMPLETED)
    assert done == {fast} and not_done == {slow}, (done, not_done)
    assert not slow.done() and fast.result() == 0.05
    check("wait FIRST_COMPLETED returns the first settled")

    done, not_done = wait([slow], timeout=0.2)
    assert not done and not_done == {slow}, (done, not_done)
    done, not_done = wait([slow, fast], timeout=0.2, return_when=ALL_COMPLETED)
    assert done == {fast} and not_done == {slow}, (done, not_done)
    done, not_done = wait([slow], timeout=0)
    assert not done and not_done == {slow}, (done, not_done)
    check("wait with a timeout returns what is not done")

    assert raises_timeout(lambda: next(as_completed([slow], timeout=0.2)))
    it = as_completed([fast, slow], timeout=0.2)
    assert next(it) is fast  # already done: yielded at once
    assert raises_timeout(lambda: next(it))
    check("as_completed with a timeout raises TimeoutError")

    assert raises_timeout(lambda: slow.result(timeout=0.1))
    assert raises_timeout(lambda: slow.exception(timeout=0.1))
    assert raises_timeout(lambda: slow.result(timeout=0))
    assert not slow.done()
    check("result and exception honour their timeout")

    assert slow.result() == 3.0 and slow.exception() is None
    check("result without a timeout waits")

    slow = ex.submit(nap, 2.0)
    fast = ex.submit(nap, 0.05)
    it = as_completed([slow, fast])
    first = next(it)
    assert first is fast and not slow.done(), (first, slow)
    cpu = time.process_time()
    assert next(it) is slow and slow.result() == 2.0
    print("WAIT CPU", time.process_time() - cpu, flush=True)  # about 2 s of waiting
    check("as_completed yields the first settled first")

    slow = ex.submit(nap, 3.0)
    bad = ex.submit(infeasible, 7)
    done, not_done = wait([slow, bad], return_when=FIRST_EXCEPTION)
    assert done == {bad} and not_done == {slow}, (done, not_done)
    assert isinstance(bad.exception(), ValueError) and not slow.done()
    check("wait FIRST_EXCEPTION returns at the first exception")

    with ThreadPoolExecutor(1) as threads:
        local = threads.submit(nap, 0.1)
        done, not_done = wait([slow, local], return_when=FIRST_COMPLETED)
        assert done == {local} and not_done == {slow}, (done, not_done)
        assert not slow.done()
        check("wait FIRST_COMPLETED with a thread pool's future")

        done, not_done = wait([slow, bad, local], return_when=ALL_COMPLETED)
        assert done == {slow, bad, local} and not not_done, (done, not_done)
        assert slow.result() == 3.0
        check("wait ALL_COMPLETED waits for all")

    ex.shutdown()
    print("ALL OK", flush=True)
