"""Fitness functions for tests/test_isolation.py: each misbehaves for some inputs, the way a
simulator does.  Imported by reference in the isolated child (this directory is on the import
path the tests give it)."""

from __future__ import annotations

import ctypes
import os
import time
from typing import Any


def square(x: int) -> int:
    return x * x


def add(x: int, y: int, scale: int = 1) -> int:
    return (x + y) * scale


def pid(_: Any) -> int:
    return os.getpid()


def blob(n: int) -> bytes:
    return b"x" * n


def size(b: bytes) -> int:
    return len(b)


def touches(path: str) -> int:
    """Create the file ``path``: the test sees that this evaluation has begun."""
    with open(path, "w"):
        pass
    return os.getpid()


def raises_on_two(x: int) -> int:
    if x == 2:
        raise ValueError(f"bad individual {x}")
    return x


def exits_on_two(x: int) -> int:
    if x == 2:
        os._exit(3)
    return x


def segfaults_on_two(x: int) -> int:
    if x == 2:
        ctypes.string_at(0)  # reads address 0: SIGSEGV
    return x


def sleeps_on_two(x: int) -> int:
    if x == 2:
        time.sleep(60)
    return x


def stuck_in_c_on_two(x: int) -> int:
    if x == 2:
        # libc's sleep(3): the thread stays in C, where no Python signal handler can run, until
        # it returns
        ctypes.CDLL(None).sleep(60)
    return x


def allocates_on_two(x: int) -> int:
    if x == 2:
        block = bytearray(1 << 30)  # 1 GiB, touched below
        block[:: 1 << 12] = b"\x01" * (len(block) >> 12)
        return len(block)
    return x


def forks_and_waits(x: int) -> tuple[int, int]:
    """Fork; the copy returns (it must be ended at once by the child's loop); the original waits
    for it and returns its exit status: 0 if the loop ended it, and no reply from the copy."""
    child = os.fork()
    if child == 0:
        return (x, -1)  # the copy: never seen by the worker
    _, status = os.waitpid(child, 0)
    return (x, os.waitstatus_to_exitcode(status))


def forks_and_leaves(x: int) -> int:
    """Fork and return in both: the original returns the copy's pid without waiting for it."""
    child = os.fork()
    if child == 0:
        return -1
    return child


def prints(x: int) -> int:
    print(f"printed by the fitness: {x}")
    return x


class Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("not today")


def returns_unpicklable(x: int) -> Any:
    return Unpicklable() if x == 2 else x


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() fails")


def raises_bad_str(x: int) -> int:
    if x == 2:
        raise BadStr()
    return x


def exits_system(x: int) -> int:
    if x == 2:
        raise SystemExit(4)
    return x


def maps_inside(x: int) -> Any:
    import evocluster

    return evocluster.map(square, [x])


def limited(_: Any) -> tuple[int, int]:
    import resource

    return resource.getrlimit(resource.RLIMIT_AS)


def naps(x: int) -> int:
    """10 ms per item; item -1 exits with code 3, item -2 never returns."""
    if x == -1:
        os._exit(3)
    if x == -2:
        time.sleep(60)
    time.sleep(0.01)
    return x


def sleeps_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
