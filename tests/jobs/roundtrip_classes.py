"""Instances of the job's own classes, returned by a fitness, come home as the same classes.

``python -m evocluster [options] roundtrip_classes.py OUT.json`` (or plain ``python``, or ``python
-m scoop``).  For each kind of class the master maps a fitness that returns instances of it, then
checks, here in the job, that each result is an instance of the very class the master has (``type(r)
is Class``), that ``isinstance`` works and that the value is right.  Writes ``{kind: {"ok": bool,
"detail": str}}`` to OUT.json and prints one ``KIND <kind> ok|FAILED <detail>`` line per kind.

Kinds: classes at the job's module level (a dataclass, a namedtuple, a plain class, an enum),
DEAP ``creator.create`` classes, a class defined under the main guard, classes nested in a function
(a dataclass and an enum, which reach the workers by value inside the arguments; the master's
class keeps its own class attributes and methods as results come home), a closure that returns
instances of a class defined in its enclosing function; under ``strict``, the nested class refused
on the master; and a result that cannot be pickled at all, reported as such.
"""

import dataclasses
import enum
import json
import sys
import threading
import traceback
from collections import namedtuple

from deap import base, creator

import evocluster


@dataclasses.dataclass
class Score:
    value: float
    label: str


Pair = namedtuple("Pair", ["a", "b"])


class Individual:
    """A user's own individual: genes and a fitness, equality by value."""

    __hash__ = None  # mutable, like a list

    def __init__(self, genes, fitness=None):
        self.genes = list(genes)
        self.fitness = fitness

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return (self.genes, self.fitness) == (other.genes, other.fitness)


class Colour(enum.Enum):
    RED = 1
    GREEN = 2
    BLUE = 3


creator.create("RoundTripFitness", base.Fitness, weights=(1.0,))
creator.create("RoundTripIndividual", list, fitness=creator.RoundTripFitness)
# the classes as the master has them now: results must come back as these very objects
CreatorIndividual = creator.RoundTripIndividual
CreatorFitness = creator.RoundTripFitness


def to_score(x):
    return Score(x / 2, f"s{x}")


def to_pair(x):
    return Pair(x, -x)


def to_individual(x):
    return Individual([x, x + 1], fitness=float(x))


def to_colour(x):
    return Colour(x % 3 + 1)


def to_creator_individual(x):
    ind = creator.RoundTripIndividual([x, 2 * x])
    ind.fitness.values = (float(x),)
    return ind


def to_creator_fitness(x):
    fit = creator.RoundTripFitness()
    fit.values = (float(x),)
    return fit


def successor(obj):
    """A new instance of the argument's own class: whatever class the worker received."""
    return obj.next()


def holds_a_lock(x):
    return Score(x, threading.Lock())


def make_fitness(scale):
    """A closure, and the class defined in its enclosing function that it returns instances of."""

    @dataclasses.dataclass
    class Scaled:
        value: float

    def fitness(x):
        return Scaled(scale * x)

    return fitness, Scaled


def nested_classes():
    """Classes nested in a function: pickle cannot send them by reference."""

    @dataclasses.dataclass
    class Gene:
        value: int
        generation = 0  # class-level state, which the master may change

        def next(self):
            return type(self)(self.value + 1)

    class Mood(enum.Enum):
        CALM = 1
        ANGRY = 2

        def next(self):
            return type(self)(self.value % 2 + 1)

    return Gene, Mood


def expect(results, cls, expected):
    """``None`` if each result is an instance of ``cls`` itself equal to ``expected``, else why."""
    for i, (got, want) in enumerate(zip(results, expected, strict=True)):
        if type(got) is not cls:
            return (
                f"[{i}] is a {type(got).__module__}.{type(got).__qualname__} (id {id(type(got))}),"
                f" not the master's {cls.__module__}.{cls.__qualname__} (id {id(cls)})"
            )
        if not isinstance(got, cls):
            return f"[{i}]: isinstance fails"
        if got != want:
            return f"[{i}] is {got!r}, expected {want!r}"
    return None


def check_creator(results):
    why = expect(results, CreatorIndividual, [[x, 2 * x] for x in range(6)])
    if why is None and creator.RoundTripIndividual is not CreatorIndividual:
        why = "deap.creator.RoundTripIndividual was replaced by another class"
    for i, ind in enumerate(results):
        if why is None and type(ind.fitness) is not CreatorFitness:
            why = f"[{i}].fitness is not the master's creator.RoundTripFitness"
        if why is None and ind.fitness.values != (float(i),):
            why = f"[{i}].fitness.values is {ind.fitness.values}"
    return why


def keeps_its_state(cls, items):
    """``None`` if a class that has travelled both ways keeps, on the master, the class attribute
    the master sets and its own methods as results come home again, else why not."""
    evocluster.map(successor, items)
    cls.generation = 99
    method = vars(cls)["next"]
    back = evocluster.map(successor, items)
    if cls.generation != 99:
        return f"the master's {cls.__qualname__}.generation was reset to {cls.generation}"
    if vars(cls)["next"] is not method:
        return f"the master's {cls.__qualname__}.next was replaced by a copy"
    return expect(back, cls, [item.next() for item in items])


def refused(fn, items, says, policy="upgrade"):
    """``None`` if mapping ``fn`` raises SerializationError saying ``says``, else why not."""
    try:
        evocluster.map(fn, items, serialization=policy)
    except evocluster.SerializationError as e:
        return None if says in str(e) else f"SerializationError without {says!r}: {e}"
    return "no SerializationError"


if __name__ == "__main__":

    @dataclasses.dataclass
    class Guarded:
        """Bound under the main guard: the workers do not have it, so it travels by value."""

        value: int

        def next(self):
            return type(self)(self.value * 10)

    Gene, Mood = nested_classes()
    scaled_fitness, Scaled = make_fitness(3)
    xs = list(range(6))
    cases = {
        "dataclass": lambda: expect(
            evocluster.map(to_score, xs), Score, [Score(x / 2, f"s{x}") for x in xs]
        ),
        "namedtuple": lambda: expect(evocluster.map(to_pair, xs), Pair, [Pair(x, -x) for x in xs]),
        "plain class": lambda: expect(
            evocluster.map(to_individual, xs),
            Individual,
            [Individual([x, x + 1], float(x)) for x in xs],
        ),
        "enum": lambda: expect(
            evocluster.map(to_colour, xs), Colour, [Colour(x % 3 + 1) for x in xs]
        ),
        "creator individual": lambda: check_creator(evocluster.map(to_creator_individual, xs)),
        "creator fitness": lambda: expect(
            evocluster.map(to_creator_fitness, xs),
            CreatorFitness,
            [to_creator_fitness(x) for x in xs],
        ),
        "class under the main guard": lambda: expect(
            evocluster.map(successor, [Guarded(x) for x in xs]),
            Guarded,
            [Guarded(x * 10) for x in xs],
        ),
        "nested dataclass": lambda: expect(
            evocluster.map(successor, [Gene(x) for x in xs]), Gene, [Gene(x + 1) for x in xs]
        ),
        "nested class keeps its state": lambda: keeps_its_state(Gene, [Gene(x) for x in xs]),
        "nested enum": lambda: expect(
            evocluster.map(successor, [Mood.CALM, Mood.ANGRY]),
            Mood,
            [Mood.ANGRY, Mood.CALM],
        ),
        "closure": lambda: expect(
            evocluster.map(scaled_fitness, xs), Scaled, [Scaled(3 * x) for x in xs]
        ),
        # strict: the nested class cannot travel by reference, so the master refuses it, naming it
        "strict nested": lambda: refused(
            successor, [Gene(1)], "nested_classes.<locals>.Gene object cannot be pickled", "strict"
        ),
        # a result that cannot be pickled at all (a lock inside) is reported as such...
        "unpicklable result": lambda: (
            refused(holds_a_lock, [1], "which cannot be pickled (TypeError: cannot pickle")
            # ...and the pool still works
            or (None if evocluster.map(abs, [-1, 2]) == [1, 2] else "the pool no longer works")
        ),
    }
    out = {}
    for kind, check in cases.items():
        try:
            why = check()
        except Exception as e:
            why = "".join(traceback.format_exception_only(type(e), e)).strip()
        out[kind] = {"ok": why is None, "detail": why or ""}

    ex = evocluster.get_executor()
    out["backend"] = {"ok": True, "detail": f"{ex.backend} {ex.n_workers}"}
    for kind, outcome in out.items():
        print("KIND", kind, "ok" if outcome["ok"] else f"FAILED {outcome['detail']}", flush=True)
    with open(sys.argv[1], "w") as fh:
        json.dump(out, fh, indent=1)
