"""A function and a class defined at module level, then again under the main guard.

The workers import the job: under ``fitness`` and ``Point`` they find the module-level ones.
``python -m evocluster shadowed.py ORDER POLICY OUT.json``; ORDER ``old-first`` maps the
module-level ``fitness`` before the main guard redefines it, ``new-first`` only after.  Writes
``{"OLD" | "NEW" | "CLASS": {"values": [...]} | {"refused": message}}``.
"""

import json
import sys

import evocluster


def fitness(x):
    return x + 1


class Point:
    def __init__(self, x):
        self.x = x

    def value(self):
        return self.x


def value_of(point):
    return point.value()


if __name__ == "__main__":
    order, policy, path = sys.argv[1:4]
    out = {}

    def attempt(what, fn, items):
        try:
            out[what] = {"values": evocluster.map(fn, items, serialization=policy)}
        except evocluster.SerializationError as e:
            out[what] = {"refused": str(e)}

    module_fitness = fitness
    if order == "old-first":
        attempt("OLD", fitness, [1, 2, 3])

    def fitness(x):  # the module-level name again, under the main guard
        return -x

    class Point:  # likewise
        def __init__(self, x):
            self.x = x

        def value(self):
            return 100 * self.x

    attempt("NEW", fitness, [1, 2, 3])
    if order == "new-first":
        attempt("OLD", module_fitness, [1, 2, 3])
    attempt("CLASS", value_of, [Point(1), Point(2)])
    with open(path, "w") as fh:
        json.dump(out, fh)
