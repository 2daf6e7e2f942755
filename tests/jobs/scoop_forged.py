"""Forged payloads sent straight to evocluster's worker-side function through ``scoop.futures``.

``python -m scoop -n 2 scoop_forged.py OUT.json MARKER``: each forged task, had a worker unpickled
it, would create the directory MARKER.  Writes what each task's answer says.
"""

import json
import os
import pickle
import sys

import scoop
from scoop import _control, futures

import evocluster
from evocluster import signing
from evocluster.backends import scoop as backend


class Evil:
    """Unpickling this runs ``os.mkdir(path)``: the proof that a payload was loaded."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def square(x):
    return x * x


if __name__ == "__main__":
    out, marker = sys.argv[1], sys.argv[2]
    assert evocluster.map(square, range(8)) == [x * x for x in range(8)]  # the pool works
    key = signing.load_key()
    evil = pickle.dumps(((Evil(marker),), None, None, None))
    other_key = b"k" * 40
    forged = {
        "unsigned": (b"", [evil]),
        "zero tag": (bytes(signing.TAG_SIZE), [evil]),
        "other key": (signing.sign(other_key, [evil]), [evil]),
        "tag of other frames": (signing.sign(key, [b"harmless"]), [evil]),
        "not sealed": evil,
    }
    tasks = {name: futures.submit(backend._evaluate, blob) for name, blob in forged.items()}
    _control.execQueue.flush()  # to the broker: the origin itself never evaluates
    futures.wait(list(tasks.values()), timeout=60)
    report = {"origin": os.getpid(), "size": scoop.SIZE}
    for name, f in tasks.items():
        entry = {"done": f._ended()}
        if f._ended():
            label, record = backend.open_result(key, b"", -1, f.resultValue)
            (info,) = record[3].values()  # the refusal: one error for the whole chunk
            exc = evocluster.serialization.unpack_exception(info)
            entry.update(type=type(exc).__name__, message=str(exc), label=label)
        report[name] = entry
    report["marker exists"] = os.path.exists(marker)
    report["after"] = evocluster.map(square, range(4))  # still usable
    with open(out, "w") as fh:
        json.dump(report, fh, indent=1)
