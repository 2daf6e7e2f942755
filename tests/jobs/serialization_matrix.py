"""Every kind of callable users hand to map, under every serialisation policy, on this backend.

Writes ``{"<callable>/<policy>": {"ok": bool, "result" | "error": ...}}`` to the JSON file named on
the command line, plus the counters of a closure over a 50 MB array mapped over many tasks.
"""

import functools
import json
import math
import operator
import random
import sys

import numpy as np
from deap import gp

import evocluster


def module_level(x):
    return x + 1


class Scaler:
    def __init__(self, k):
        self.k = k

    def scale(self, x):
        return self.k * x


def make_closure(offset):
    def shifted(x):
        return x + offset

    return shifted


def make_big_closure(big):
    return lambda i: float(big[i]) + i


def ephemeral_value():
    return 7


pset = gp.PrimitiveSet("MATRIX", 1)
pset.addPrimitive(operator.add, 2)
pset.addPrimitive(operator.mul, 2)
pset.addEphemeralConstant("matrix_eph", lambda: random.randint(2, 2))  # an ephemeral from a lambda
pset.renameArguments(ARG0="x")


def callables():
    def nested(x):  # defined in the main guard's call tree: not importable on workers
        return x * 10

    tree = gp.PrimitiveTree.from_string("add(mul(x, x), 3)", pset)
    return {
        "module function": (math.factorial, [1, 1, 2, 6]),
        "__main__ function": (module_level, [1, 2, 3, 4]),
        "lambda": (lambda x: x - 1, [-1, 0, 1, 2]),
        "closure": (make_closure(100), [100, 101, 102, 103]),
        "nested def": (nested, [0, 10, 20, 30]),
        "partial of lambda": (functools.partial(lambda a, x: a * x, 3), [0, 3, 6, 9]),
        "bound method": (Scaler(5).scale, [0, 5, 10, 15]),
        "GP ephemeral from lambda": (
            lambda _: pset.mapping["matrix_eph"]().value,
            [2, 2, 2, 2],
        ),
        "compiled GP tree": (gp.compile(tree, pset), [3, 4, 7, 12]),
    }


# what cannot travel by reference: strict must refuse it on the master, naming it
REFUSED_BY_STRICT = {
    "lambda",
    "closure",
    "nested def",
    "partial of lambda",
    "GP ephemeral from lambda",
    "compiled GP tree",
}


if __name__ == "__main__":
    out = {}
    ex = evocluster.get_executor()
    for policy in ("upgrade", "strict", "cloudpickle"):
        for name, (fn, expect) in callables().items():
            key = f"{name}/{policy}"
            try:
                result = evocluster.map(fn, range(4), serialization=policy)
                out[key] = {"ok": result == expect, "result": repr(result)}
            except evocluster.SerializationError as e:
                out[key] = {"ok": False, "error": str(e), "type": "SerializationError"}
            except Exception as e:  # any other failure is a failure of the test
                out[key] = {"ok": False, "error": repr(e), "type": type(e).__name__}
    # an argument that carries a GP ephemeral built from a lambda (DEAP pickles its function)
    individual = gp.PrimitiveTree(
        [pset.mapping["add"], pset.mapping["matrix_eph"](), pset.mapping["x"]]
    )
    out["ephemeral in arguments/upgrade"] = {"ok": evocluster.map(len, [individual]) == [3]}
    # a 50 MB closure, mapped over 200 tasks: it must cross once per worker, not once per task
    big = np.random.default_rng(5).random(50 * 2**20 // 8)
    fn = make_big_closure(big)
    before = ex.stats()
    values = evocluster.map(fn, range(200))
    after = ex.stats()
    out["big closure"] = {
        "ok": values == [float(big[i]) + i for i in range(200)],
        "functions_sent": after["functions_sent"] - before["functions_sent"],
        "bytes_sent": after["bytes_sent"] - before["bytes_sent"],
        "messages_sent": after["messages_sent"] - before["messages_sent"],
        "n_workers": ex.n_workers,
        "array_bytes": big.nbytes,
    }
    with open(sys.argv[1], "w") as fh:
        json.dump(out, fh, indent=1)
