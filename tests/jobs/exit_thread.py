"""A fitness that starts a thread (not a daemon) that never ends; the job then returns.

Prints the results, then ``WORKER EXIT CODES`` of its own pool's worker processes once that pool
is shut down (plain ``python exit_thread.py own``), or just returns (``default``: the launcher's
or the default pool)."""

import sys
import threading

import evocluster


def with_thread(x: int) -> int:
    threading.Thread(target=threading.Event().wait, name="never-ends").start()
    return x * x


if __name__ == "__main__":
    if sys.argv[1:] == ["own"]:
        ex = evocluster.Executor(backend="local", workers=1)
        print("RESULTS", list(ex.map(with_thread, range(3))), flush=True)
        ex.shutdown()
        # the worker processes' exit statuses (no public attribute tells them)
        codes = [p.returncode for p in ex._pool.transport._procs]
        print("WORKER EXIT CODES", codes, flush=True)
    else:
        print("RESULTS", evocluster.map(with_thread, range(3)), flush=True)
