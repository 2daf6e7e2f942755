"""The origin's watch for dead workers, which SCOOP does not notice.

* **Worker loss.**  A worker that dies (a signal, the OOM killer, ``os._exit``) never answers, and
  SCOOP does not notice.  The origin watches a ZMQ monitor on its sockets (a worker's connection to
  the origin closes when its process dies, on any host) and, on its own host, the worker processes
  themselves; the pool is then broken and every pending evaluation raises
  :class:`~evocluster.errors.BrokenPool`.  SCOOP's own "a worker exited unexpectedly" shutdown ends
  the same way, and so does a worker whose import of the job fails after it imported evocluster
  (it posts a failure report that the broker relays to the origin:
  :mod:`~evocluster.backends.scoop.guard`).

The pool polls its sockets through :meth:`_Watch.poll` and asks :meth:`_Watch.lost` after each
poll; the processes are read through :mod:`~evocluster.backends.scoop.proc`.
"""

from __future__ import annotations

import os
import time
from typing import Any

from . import proc


class _Watch:
    """Notices dead workers, which SCOOP does not.

    * A ZMQ monitor on the origin's direct socket: each worker connects to it when it receives its
      first task from the origin, and the connection closes when the worker's process dies, on any
      host.  The same on the socket to the broker (the broker dies with the launcher).
    * On the origin's host, the worker processes themselves (SCOOP starts them as siblings of the
      origin): one that exited, or is a zombie, is lost -- including one that died before it ever
      received a task, which no socket reveals.  They are looked at every ``check_every`` s at
      most.
    """

    def __init__(self, comm: Any, check_every: float) -> None:
        import zmq  # SCOOP's default (ZMQ) backend brings it

        self._monitors = [
            comm.direct_socket.get_monitor_socket(zmq.EVENT_DISCONNECTED),
            comm.socket.get_monitor_socket(zmq.EVENT_DISCONNECTED),
        ]
        self._poller = zmq.Poller()
        for s in (comm.socket, comm.direct_socket, comm.infoSocket, *self._monitors):
            self._poller.register(s, zmq.POLLIN)
        self._parent = os.getppid()  # SCOOP's launch process, which started the local workers
        self._siblings: set[int] = set()
        self._check_every = check_every
        self._next_check = 0.0

    def poll(self, timeout: float) -> dict[Any, int]:
        """Block up to ``timeout`` s, in zmq, until any of the origin's sockets has a message."""
        return dict(self._poller.poll(int(timeout * 1000)))

    def lost(self, ready: dict[Any, int], labels: dict[int, str]) -> str | None:
        """Why a worker is lost, if one is (``ready``: what :meth:`poll` returned; ``labels``:
        pid -> label of the local workers that answered)."""
        for i, monitor in enumerate(self._monitors):
            if monitor in ready:
                from zmq.utils.monitor import recv_monitor_message

                recv_monitor_message(monitor)
                dead = self._dead_siblings(labels)
                if dead:
                    return dead
                if i == 0:
                    return (
                        "a SCOOP worker was lost: its connection to the origin closed (the process "
                        "died: killed, out of memory, or a crash)"
                    )
                return "the SCOOP broker was lost (its connection to the origin closed)"
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self._check_every
            return self._dead_siblings(labels)
        return None

    def _dead_siblings(self, labels: dict[int, str]) -> str | None:
        if os.getppid() != self._parent:  # re-parented: its children are not ours to watch
            return "SCOOP's launch process, which started the workers on this host, is gone"
        self._siblings |= proc.children(self._parent) - {os.getpid()}
        for pid in sorted(self._siblings):
            if not proc.alive(pid):
                name = labels.get(pid, proc.label("worker", pid))
                return f"{name} was lost: its process exited during the run"
        return None
