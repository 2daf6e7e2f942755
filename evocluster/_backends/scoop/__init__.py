"""The SCOOP backend: ``python -m scoop [-n N] job.py`` runs the same job as ``mpiexec``.

The only package that imports ``scoop`` (and ``zmq``, which SCOOP uses); :mod:`evocluster._backends`
loads it only when this process is part of a SCOOP run, and ``evocluster/__init__`` starts its
guards then (:func:`start_guards`).  SCOOP starts N processes: the *origin* runs the job as
``__main__``, the N-1 others import the job (as a module, so its ``if __name__ == "__main__":``
block does not run) and evaluate.  evocluster dispatches through ``scoop.futures`` and covers what
SCOOP 0.7.2.0 does not::

    origin (main thread, root greenlet)                          SCOOP worker process
    -----------------------------------                          --------------------
    submit()/map() -> Job -> queue                              _evaluate(sealed):
      chunk (adaptive size) -> seal (HMAC) -> futures.submit --->  verify, only then load;
                                              (via the broker)     Worker.run: each item in
    Future.result(), wait(), map iterator                          its own try; seal result
      waiting drives SCOOP: _ScoopPool.drive()                             |
      zmq poll (blocks, no spinning) -> updateQueue <--- direct reply -----+
      open (verify HMAC, run token, chunk id) -> settle map slots / Futures

One job per module, each with its part of the story:

    pool.py      the origin's pool (:func:`shared_pool`): dispatch, collect, the waits that
                 drive SCOOP; the origin never evaluates; scheduling; payloads; no TCP backend
    futures.py   the futures of ``submit``, whose waits drive SCOOP from the main thread, and
                 the CPython versions whose ``concurrent.futures`` internals they were checked on
    worker.py    the worker side: verify, evaluate, seal (:func:`_evaluate`); one task in reserve
    watch.py     the origin's watch for dead workers (ZMQ monitors, and processes on its host);
                 the watches for a lost launcher, origin or (on the other hosts) broker
    guard.py     the exit guard: a failed run exits non-zero (:func:`start_guards`); a worker
                 that cannot import the job reports it
    proc.py      processes: their labels, and all of the backend's reading of ``/proc`` (or ``ps``)

* **Signing.**  SCOOP's broker listens on all interfaces and its workers unpickle whatever arrives.
  evocluster seals every task, result and broadcast callable it sends with HMAC-SHA256
  (:mod:`evocluster._signing`; the key never crosses SCOOP's sockets) and verifies before
  unpickling.
  A task that does not verify is refused, logged on the worker's stderr and answered with a
  :class:`~evocluster.errors.WorkerError`; a result that does not verify fails its items with a
  ``WorkerError``.  Results also echo a per-run token and the chunk id, so a recorded result cannot
  be replayed into another chunk.  What this does not cover: SCOOP's own messages (its futures,
  constants and control frames) are still unauthenticated pickles -- run SCOOP on a trusted network.
"""

from __future__ import annotations

from .guard import start_guards
from .pool import INLINE_MAX, shared_pool

# reached by the tests, which send forged tasks and answers (tests/fixtures/jobs/scoop_forged.py)
from .pool import open_result as open_result
from .worker import _evaluate as _evaluate

__all__ = ["INLINE_MAX", "shared_pool", "start_guards"]
