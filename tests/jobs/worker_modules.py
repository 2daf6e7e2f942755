"""Which master-only modules an MPI worker rank has loaded after start-up and some work (none
should be: each costs every rank milliseconds at start-up).  Prints one JSON line; used by
``tests/test_launcher.py``."""

import json
import sys

import evocluster

MASTER_ONLY = [
    *("ast", "concurrent.futures", "encodings.idna", "evocluster.executor", "hashlib", "hmac"),
    *("logging", "secrets"),
]


def loaded(_: int) -> list[str]:
    return [m for m in MASTER_ONLY if m in sys.modules]


if __name__ == "__main__":
    ex = evocluster.get_executor()
    print(json.dumps({"backend": ex.backend, "workers": list(ex.map(loaded, range(8)))}))
