"""The launcher, with strangers at the master's doorbells: ``python -m evocluster ARGS`` on every
rank, but on the master, the moment its doorbells listen (before it tells any worker where),
``K`` silent TCP connections to their port that never send a byte and stay open until the end
(what a port scanner or a health check may do).  Used by ``tests/test_doorbell.py``::

    mpiexec -n N python doorbell_strangers.py K [--no-bell RANK] JOB [JOB ARGS]

``--no-bell RANK``: worker ``RANK`` never connects its doorbell (as behind a firewall), so that
one doorbell is missing at the end of the set-up.
"""

import socket
import sys

from evocluster import cli
from evocluster.backends import doorbell

strangers: list[socket.socket] = []  # kept open (and referenced) until the process ends


def silent_strangers(k: int) -> None:
    listen = doorbell.Doorbells.__init__

    def init(self: doorbell.Doorbells, *args: object, **kwargs: object) -> None:
        listen(self, *args, **kwargs)
        for _ in range(k):  # queued at the listener ahead of every worker's connection
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", self.port))  # EINPROGRESS: the kernel completes it
            strangers.append(s)

    doorbell.Doorbells.__init__ = init  # type: ignore[method-assign]


def no_bell(rank: int) -> None:
    connect = doorbell.connect

    def maybe(hosts: list[str], port: int, token: bytes, r: int) -> doorbell.Bell:
        return doorbell.Bell(None) if r == rank else connect(hosts, port, token, r)

    doorbell.connect = maybe


if __name__ == "__main__":
    args = sys.argv[1:]
    silent_strangers(int(args.pop(0)))
    if args[0] == "--no-bell":
        no_bell(int(args[1]))
        del args[:2]
    sys.exit(cli.main(args))
