"""A SCOOP run over several hosts:
``python -m scoop --hostfile HOSTFILE scoop_multihost.py MODE HOSTS [late]``.

HOSTS: the hostfile's hosts, comma-separated, the launching one first.  Modes: ``short`` (one small
map: the job ends before every worker on the other hosts has joined the run), ``every-host`` (maps
until every host has evaluated), ``until-killed`` (the same, then maps for a minute, for a test to
kill SCOOP's launcher meanwhile), ``raise`` (raises after a map: the run ends non-zero).  ``late``:
the workers on the other hosts take :data:`LATE` s longer to import the job (a big data file, a
slow shared file system), so that the run ends before they join it.
"""

import socket
import sys
import time

import scoop

import evocluster  # before the job's own code, which may fail or take long: its guards are in place

LATE = 2.0
HOSTS = sys.argv[2].split(",")

if sys.argv[3:] == ["late"] and not scoop.IS_ORIGIN and socket.gethostname() != HOSTS[0]:
    time.sleep(LATE)


def square(x):
    return x * x


def host_of(_):
    time.sleep(0.02)
    return socket.gethostname()


if __name__ == "__main__":
    mode = sys.argv[1]
    print("RESULT", evocluster.map(square, range(10)), flush=True)
    if mode in ("every-host", "until-killed"):
        seen = set()
        deadline = time.monotonic() + 60
        while not set(HOSTS) <= seen and time.monotonic() < deadline:
            seen |= set(evocluster.map(host_of, range(16)))
        print("HOSTS", ",".join(sorted(seen)), flush=True)
        while mode == "until-killed" and time.monotonic() < deadline:
            evocluster.map(host_of, range(16))
    if mode == "raise":
        raise RuntimeError("the job failed on purpose")
    print("END", flush=True)
