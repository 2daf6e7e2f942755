"""A random generator carried by the callable or the arguments, under every policy.

Writes ``{"<shape>/<policy>": {"refused": message} | {"values": [...]}}`` to the JSON file named
on the command line; ``"seeded/<policy>"`` is the fix, ``evocluster.rng()`` seeded per task.
"""

import functools
import json
import random
import sys

import numpy as np

import evocluster

RNG = np.random.default_rng(5)  # each worker that imports the job makes its own copy of it


def draw(a, rng):
    return rng.random() + a


def draw_from(a, source):
    return source() + a


def draw_global(a):
    return RNG.random() + a


def draw_default(a, rng=random.Random(4)):
    return rng.random() + a


class Model:
    def __init__(self):
        self.rng = np.random.default_rng(3)

    def fitness(self, a):
        return self.rng.random() + a


def seeded(a):
    return evocluster.rng().random() + a


if __name__ == "__main__":
    generator = np.random.default_rng(1)
    one = [(a,) for a in range(10)]
    shapes = {
        "partial": (functools.partial(draw, rng=np.random.default_rng(1)), one),
        "closure": (lambda a: generator.random() + a, one),
        "global": (draw_global, one),
        "default": (draw_default, one),
        "method": (Model().fitness, one),
        "random.random": (functools.partial(draw_from, source=random.random), one),
        "argument": (draw, [(a, np.random.RandomState(a)) for a in range(10)]),
        "seeded": (functools.partial(evocluster.rng.call, seeded, 7), [(a, a) for a in range(10)]),
    }
    out = {}
    for policy in ("upgrade", "strict", "cloudpickle"):
        for name, (fn, items) in shapes.items():
            try:
                values = evocluster.starmap(fn, items, serialization=policy)
                values = [v[0] if isinstance(v, tuple) else v for v in values]
                out[f"{name}/{policy}"] = {"values": values}
            except evocluster.SerializationError as e:
                out[f"{name}/{policy}"] = {"refused": str(e)}
    with open(sys.argv[1], "w") as fh:
        json.dump(out, fh, indent=1)
