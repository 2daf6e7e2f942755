"""Send a message larger than 2 GiB to a worker and get it back (MPI counts are 32-bit ints)."""

import sys

import numpy as np

import evocluster


def echo(a: np.ndarray) -> np.ndarray:
    return a


def fingerprint(a: np.ndarray) -> tuple[int, int, int]:
    return a.nbytes, int(a[::4099].sum(dtype=np.int64)), int(a[-1000:].sum(dtype=np.int64))


if __name__ == "__main__":
    n = (2 << 30) + (3 << 20) + 7  # 2 GiB + 3 MiB + 7 bytes
    big = np.zeros(n, dtype=np.uint8)
    big[::4099] = np.arange(len(big[::4099])) % 251  # a pattern that shows misplaced pieces
    big[-1000:] = np.arange(1000) % 256
    expect = fingerprint(big)
    ex = evocluster.get_executor()
    assert ex.submit(fingerprint, big).result() == expect  # master -> worker
    back = ex.submit(echo, big).result()  # and worker -> master
    assert back.nbytes == n and fingerprint(back) == expect
    assert np.array_equal(back[-5000:], big[-5000:])
    print("big message ok", n, ex.backend, file=sys.stderr)
