"""What the fuzz layer's cases are made of, shared by the tests (which generate and check them) and
by the driver job ``tests/fuzz_job.py`` (which runs them on the master and imports this module on
every worker): arguments built from JSON specs, callables of every shape, per-item behaviours,
and a canonical digest to compare results across processes.

Nothing here imports hypothesis: a worker loads this module with the job.

* **Payload specs** are JSON lists, ``[kind, *args]``: ``build(spec)`` makes the object (the same
  object on every call: numpy data comes from a seeded generator).  ``UNPICKLABLE`` kinds can never
  reach a worker (a lock, a generator, an open file); ``SHARED_RNG`` is one
  ``numpy.random.Generator`` referenced by every item of a case (issue 20 item 10).
* **Behaviours** are strings, ``name`` or ``name:argument``, run by :func:`behave` inside the
  fitness before it returns its value: the fitness raises, exits, forks, kills itself, hangs or
  leaks.  ``FAILS`` says which of them fail the evaluation and with which exception types the
  job may see it.
* **Items** are ``(i, behaviour, payload)``; every callable of :data:`SHAPES` (in this module or
  the job) returns ``(tag, payload)`` for a healthy item, so a result shows which callable ran.
* :func:`digest` is a canonical, process-independent fingerprint of any value (cycles, numpy
  arrays of any dtype and layout, classes, functions, floats such as NaN and -0.0).
"""

from __future__ import annotations

import functools
import hashlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------- behaviours
#: behaviour -> exception type names the job may get for it (on a worker; isolation or not).
#: A BaseException of the fitness must reach the job as an evocluster error (issue 20 item 7):
#: its entry is the marker "evocluster" (any EvoclusterError whose chain or message names it).
FAILS: dict[str, tuple[str, ...]] = {
    "raise": ("ValueError",),
    "raise_custom": ("CustomError", "RemoteError"),
    "raise_unpicklable": ("UnpicklableError", "RemoteError"),
    "sys_exit": ("evocluster",),
    "keyboard_interrupt": ("evocluster",),
    "base_custom": ("evocluster",),
    "os_exit": ("EvaluationCrashed",),
    "kill": ("EvaluationCrashed",),
    "sleep_long": ("EvaluationTimeout",),
    "busy_long": ("EvaluationTimeout",),
    "alloc_huge": ("MemoryError", "EvaluationCrashed"),
    "return_unpicklable": ("SerializationError",),
    "flaky": ("ValueError",),  # only on its first attempt: a retry gets the value
}
#: behaviours that return a value of their own instead of ``(tag, payload)``
RETURNS_OWN = frozenset({"huge_int", "return_unpicklable"})
#: behaviours whose evaluation returns the healthy value (whatever else they do on the way)
HEALTHY = (
    "value",
    "sleep_short",
    "print",
    "fork_exit",
    "fork_orphan",
    "fork_return",
    "thread_leak",
    "memory_leak",
    "fd_leak",
    "huge_int",
)

#: behaviours that get a marker file of their own (``name:PATH``; the driver adds the path)
MARKED = frozenset({"flaky", "fork_orphan", "thread_leak"})
#: how long a child or thread left behind by the fitness lives, unless it is ended; when it ends by
#: itself it writes its pid to its marker file: the run waited for it, or let it live on
LEFT_BEHIND_SECONDS = 6.0

_LEAKS: list[Any] = []  # what "memory_leak"/"fd_leak" keep alive for the worker's lifetime


class CustomError(Exception):
    """An exception whose constructor takes two arguments: pickle rebuilds it with one."""

    def __init__(self, what: str, code: int) -> None:
        super().__init__(f"{what} (code {code})")
        self.code = code


class UnpicklableError(Exception):
    """An exception that holds a lock: it cannot travel as itself."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class CustomBaseException(BaseException):
    """A job's own BaseException (not an Exception)."""


def behave(i: int, behaviour: str) -> Any:
    """Do what ``behaviour`` says inside a fitness; return a replacement value, or None for the
    healthy one (``huge_int`` and ``return_unpicklable`` return their own)."""
    name, _, arg = behaviour.partition(":")
    handler = _BEHAVIOURS.get(name)
    if handler is None:
        raise LookupError(f"unknown behaviour {behaviour!r}")
    return handler(i, arg)


def _raise(i: int, arg: str) -> None:
    raise ValueError(f"injected at item {i}")


def _raise_custom(i: int, arg: str) -> None:
    raise CustomError(f"custom at item {i}", 7)


def _raise_unpicklable(i: int, arg: str) -> None:
    raise UnpicklableError(f"unpicklable at item {i}")


def _sys_exit(i: int, arg: str) -> None:
    sys.exit(int(arg or 0))


def _keyboard_interrupt(i: int, arg: str) -> None:
    raise KeyboardInterrupt


def _base_custom(i: int, arg: str) -> None:
    raise CustomBaseException(f"base at item {i}")


def _os_exit(i: int, arg: str) -> None:
    os._exit(int(arg or 3))


def _kill(i: int, arg: str) -> None:
    os.kill(os.getpid(), int(arg or signal.SIGKILL))
    time.sleep(30)  # a signal that does not kill at once (a handler, a mask) must not return


def _sleep(i: int, arg: str) -> None:
    time.sleep(float(arg or 0.02))


def _busy(i: int, arg: str) -> None:
    end = time.monotonic() + float(arg or 30)
    while time.monotonic() < end:  # pure Python, interruptible by the worker's alarm
        sum(range(1000))


def _alloc(i: int, arg: str) -> None:
    blocks = []
    for _ in range(64):  # at most 4 GiB: the memory limit (eval_memory) stops it before that
        blocks.append(bytearray(64 << 20))


def _return_unpicklable(i: int, arg: str) -> Any:
    return threading.Lock()


def _flaky(i: int, arg: str) -> None:
    """Fails the first time this item is evaluated (a marker file at ``arg``), then succeeds."""
    try:
        fd = os.open(arg, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    raise ValueError(f"flaky at item {i} (first attempt)")


def _print(i: int, arg: str) -> None:
    print(f"noise from item {i}", flush=True)
    print(f"noise on stderr from item {i}", file=sys.stderr, flush=True)


def _fork_exit(i: int, arg: str) -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)  # the copy leaves at once (a subprocess-like helper)
    os.waitpid(pid, 0)


def _outlive(marker: str) -> None:
    """Sleep, then say so in ``marker`` (never reached if whoever owns this is ended first)."""
    time.sleep(LEFT_BEHIND_SECONDS)
    if marker:
        with open(marker, "w") as fh:
            fh.write(f"{os.getpid()} {threading.get_native_id()}\n")


def _fork_orphan(i: int, arg: str) -> None:
    """Leaves a child behind that outlives the evaluation (issue 20 item 6)."""
    pid = os.fork()
    if pid == 0:
        try:
            _outlive(arg)
        finally:
            os._exit(0)


def _fork_return(i: int, arg: str) -> None:
    """Forks and returns in both processes: the copy must never answer the master."""
    os.fork()


def _thread_leak(i: int, arg: str) -> None:
    """A non-daemon thread that outlives the evaluation: at exit Python would wait for it."""
    threading.Thread(target=_outlive, args=(arg,), daemon=False).start()


def _memory_leak(i: int, arg: str) -> None:
    _LEAKS.append(bytearray(int(arg or 16 << 20)))


def _fd_leak(i: int, arg: str) -> None:
    _LEAKS.append(open(os.devnull, "rb"))  # noqa: SIM115 - kept open on purpose


def _huge_int(i: int, arg: str) -> Any:
    return 10**400


_BEHAVIOURS: dict[str, Callable[[int, str], Any]] = {
    "value": lambda i, arg: None,
    "raise": _raise,
    "raise_custom": _raise_custom,
    "raise_unpicklable": _raise_unpicklable,
    "sys_exit": _sys_exit,
    "keyboard_interrupt": _keyboard_interrupt,
    "base_custom": _base_custom,
    "os_exit": _os_exit,
    "kill": _kill,
    "sleep_short": _sleep,
    "sleep_long": lambda i, arg: _sleep(i, arg or "30"),
    "busy_long": _busy,
    "alloc_huge": _alloc,
    "return_unpicklable": _return_unpicklable,
    "flaky": _flaky,
    "print": _print,
    "fork_exit": _fork_exit,
    "fork_orphan": _fork_orphan,
    "fork_return": _fork_return,
    "thread_leak": _thread_leak,
    "memory_leak": _memory_leak,
    "fd_leak": _fd_leak,
    "huge_int": _huge_int,
}


def evaluate(tag: str, args: tuple[Any, ...]) -> Any:
    """The body of every fitness of :data:`SHAPES`: ``args`` is ``(item,)`` (a map over items) or
    ``(i, behaviour, payload)`` (several iterables, starmap); returns ``(tag, payload)``."""
    i, behaviour, payload = args[0] if len(args) == 1 else args
    replaced = behave(i, behaviour)
    if replaced is not None:
        return replaced
    return (tag, payload)


# ---------------------------------------------------------------------------- callables
def module_fitness(*args: Any) -> Any:
    """A module-level function of an importable module: travels by reference."""
    return evaluate("module", args)


def tagged_fitness(tag: str, *args: Any) -> Any:
    """Bound by ``functools.partial(tagged_fitness, tag)``."""
    return evaluate(tag, args)


def rng_fitness(*args: Any, rng: Any) -> Any:
    """Carries a numpy Generator in a partial (issue 20 item 10): returns a draw with the tag."""
    value = evaluate("rng", args)
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "rng":
        return ("rng", float(rng.random()), value[1])
    return value


def make_closure(salt: int) -> Callable[..., Any]:
    def closure(*args: Any) -> Any:
        return evaluate(f"closure{salt}", args)

    return closure


def make_nested() -> Callable[..., Any]:
    def nested(*args: Any) -> Any:
        return evaluate("nested", args)

    return nested


class Scaler:
    """Its bound method, static method and class method are callables of their own shapes."""

    def __init__(self, salt: int) -> None:
        self.salt = salt

    def method(self, *args: Any) -> Any:
        return evaluate(f"method{self.salt}", args)

    @staticmethod
    def static(*args: Any) -> Any:
        return evaluate("static", args)

    @classmethod
    def klass(cls, *args: Any) -> Any:
        return evaluate(f"classmethod {cls.__name__}", args)


class CallableInstance:
    def __init__(self, salt: int) -> None:
        self.salt = salt

    def __call__(self, *args: Any) -> Any:
        return evaluate(f"instance{self.salt}", args)


class Box:
    """A class used as the callable: ``Box(item)`` evaluates and keeps the value."""

    def __init__(self, *args: Any) -> None:
        self.value = evaluate("Box", args)

    def __eq__(self, other: object) -> bool:
        return type(other) is Box and other.value == self.value

    __hash__ = None  # type: ignore[assignment]


#: the callable shapes the strategies draw; the job adds those of its own __main__ (``JOB_SHAPES``)
#: name -> (factory, travels by reference under "strict", takes behaviours)
SHAPES: dict[str, tuple[Callable[[], Any], bool, bool]] = {
    "builtin_repr": (lambda: repr, True, False),
    "builtin_type": (lambda: type, True, False),
    "module_function": (lambda: module_fitness, True, True),
    "partial": (lambda: functools.partial(tagged_fitness, "partial"), True, True),
    "partial_of_lambda": (
        lambda: functools.partial(lambda t, *a: evaluate(t, a), "pl"),
        False,
        True,
    ),
    "lambda": (lambda: lambda *a: evaluate("lambda", a), False, True),
    "closure": (lambda: make_closure(5), False, True),
    "nested": (make_nested, False, True),
    "bound_method": (lambda: Scaler(3).method, True, True),
    "callable_instance": (lambda: CallableInstance(4), True, True),
    "staticmethod": (lambda: Scaler.static, True, True),
    "classmethod": (lambda: Scaler.klass, True, True),
    "class": (lambda: Box, True, True),
    "partial_with_rng": (
        lambda: functools.partial(rng_fitness, rng=np.random.default_rng(1)),
        True,
        True,
    ),
}
#: shapes the job defines in its own __main__ (see tests/fuzz_job.py): by reference or not
JOB_SHAPES: dict[str, bool] = {
    "main_function": True,  # module level of the job, outside the main guard
    "main_guard_function": False,  # defined only under the main guard
    "main_redefined": True,  # a module-level name the main guard redefines (issue 20 item 11)
    "main_guard_class": False,
}


# ---------------------------------------------------------------------------- payloads
#: payload kinds that pickle (and cloudpickle) cannot serialise
UNPICKLABLE = frozenset({"lock", "generator", "file"})
#: payload kinds that hold functions (sent by value under "upgrade"/"cloudpickle" only)
BY_VALUE = frozenset({"lambda"})
#: one Generator shared by every item of a case: items copied to workers draw the same numbers
SHARED_RNG = "shared_rng"


class Reduced:
    """Rebuilt through a custom ``__reduce__``."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:
        return (Reduced, (self.value,))

    def __repr__(self) -> str:
        return f"Reduced({self.value!r})"


class Stateful:
    """Pickled through ``__getstate__``/``__setstate__`` (the state is transformed on the way)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __getstate__(self) -> dict[str, Any]:
        return {"wrapped": [self.value]}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.value = state["wrapped"][0]

    def __repr__(self) -> str:
        return f"Stateful({self.value!r})"


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self, a: Any, b: Any) -> None:
        self.a, self.b = a, b

    def __repr__(self) -> str:
        return f"Slotted({self.a!r}, {self.b!r})"


def _array(dtype: str, shape: list[int], view: str, seed: int) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(seed)
    base_shape = list(shape)
    if view == "step" and base_shape:
        base_shape[-1] *= 2
    if view == "T":
        base_shape = base_shape[::-1]
    n = int(np.prod(base_shape)) if base_shape else 1
    a = _data(dtype, n, rng).reshape(base_shape)
    if view == "step" and shape:
        a = a[..., ::2]
    elif view == "T":
        a = a.T
    elif view == "F":
        a = np.asfortranarray(a)
    elif view == "neg" and shape:
        a = a[::-1]
    elif view == "swap" and a.dtype.kind in "biufc" and a.dtype.itemsize > 1:
        a = a.astype(a.dtype.newbyteorder())
    elif view == "ro":
        a.flags.writeable = False
    return a


def _data(dtype: str, n: int, rng: np.random.Generator) -> np.ndarray[Any, Any]:
    if dtype == "struct":
        a = np.zeros(n, dtype=[("a", "<i4"), ("b", "<f8")])
        a["a"] = rng.integers(-100, 100, n)
        a["b"] = rng.random(n)
        return a
    if dtype == "O":
        return np.array([int(v) for v in rng.integers(0, 9, n)] + [None], dtype=object)[:n]
    kind = np.dtype(dtype).kind
    if kind == "b":
        return rng.integers(0, 2, n).astype(bool)
    if kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)
    if kind in "fc":
        raw = rng.standard_normal(n) * 1e3
        a = raw.astype(dtype)
        if n:
            a[0] = np.nan  # NaN, inf and -0.0 travel as bytes
        if n > 1:
            a[1] = -np.inf if kind == "f" else complex(np.inf, -0.0)
        return a
    if kind in "US":
        return np.array([f"s{v}" for v in rng.integers(0, 999, n)], dtype=dtype)
    if kind in "mM":
        return rng.integers(-(10**9), 10**9, n).astype(dtype)
    raise ValueError(f"no data for dtype {dtype!r}")


def _generator() -> Any:
    yield 1


def build(spec: list[Any], shared: dict[str, Any] | None = None) -> Any:
    """The object a payload spec describes (see the module docstring); ``shared`` holds the
    objects one case shares between its items."""
    kind, args = spec[0], spec[1:]
    maker = _BUILDERS.get(kind)
    if maker is None:
        raise LookupError(f"unknown payload kind {kind!r}")
    return maker(args, {} if shared is None else shared)


def _recursive(args: list[Any], shared: dict[str, Any]) -> Any:
    cycle: list[Any] = [1, "two"]
    cycle.append(cycle)
    return cycle


def _recursive_dict(args: list[Any], shared: dict[str, Any]) -> Any:
    d: dict[str, Any] = {"a": 1}
    d["self"] = d
    return d


def _shared_rng(args: list[Any], shared: dict[str, Any]) -> Any:
    return shared.setdefault(SHARED_RNG, np.random.default_rng(int(args[0])))


_BUILDERS: dict[str, Callable[[list[Any], dict[str, Any]], Any]] = {
    "none": lambda a, s: None,
    "bool": lambda a, s: bool(a[0]),
    "int": lambda a, s: int(a[0]),
    "float": lambda a, s: float.fromhex(a[0]),
    "complex": lambda a, s: complex(float(a[0]), float(a[1])),
    "str": lambda a, s: str(a[0]),
    "bytes": lambda a, s: bytes.fromhex(a[0]),
    "bytearray": lambda a, s: bytearray.fromhex(a[0]),
    "list": lambda a, s: [build(x, s) for x in a[0]],
    "tuple": lambda a, s: tuple(build(x, s) for x in a[0]),
    "dict": lambda a, s: {build(k, s): build(v, s) for k, v in a[0]},
    "set": lambda a, s: {int(x) for x in a[0]},
    "frozenset": lambda a, s: frozenset(int(x) for x in a[0]),
    "nd": lambda a, s: _array(a[0], a[1], a[2], a[3]),
    "big_bytes": lambda a, s: bytes(range(256)) * (int(a[0]) // 256),
    "big_array": lambda a, s: np.arange(int(a[0]), dtype=np.float64),
    "reduce": lambda a, s: Reduced(build(a[0], s)),
    "state": lambda a, s: Stateful(build(a[0], s)),
    "slots": lambda a, s: Slotted(build(a[0], s), build(a[1], s)),
    "recursive": _recursive,
    "recursive_dict": _recursive_dict,
    "class": lambda a, s: Reduced,
    "exception": lambda a, s: ValueError("an argument", int(a[0])),
    # pickled as CustomError(message): its constructor wants two arguments, so a worker (or the
    # master, for a result) cannot rebuild it
    "bad_exception": lambda a, s: CustomError("an argument", int(a[0])),
    "rng": lambda a, s: np.random.default_rng(int(a[0])),
    SHARED_RNG: _shared_rng,
    "lambda": lambda a, s: lambda x: x + int(a[0]),
    "lock": lambda a, s: threading.Lock(),
    "generator": lambda a, s: _generator(),
    "file": lambda a, s: open(os.devnull, "rb"),  # noqa: SIM115 - an argument that cannot travel
}


def kinds(spec: list[Any]) -> set[str]:
    """Every payload kind a spec contains, nested ones included."""
    found: set[str] = set()

    def walk(x: Any) -> None:
        if isinstance(x, list):
            if x and isinstance(x[0], str) and x[0] in _BUILDERS:
                found.add(x[0])
            for y in x:
                walk(y)

    walk(spec)
    return found


# ---------------------------------------------------------------------------- digests
def canon(x: Any, stack: tuple[int, ...] = ()) -> Any:
    """A JSON-able description of ``x`` that is equal for equal values in any process.  A cycle
    is described by how far up the container it points to."""
    if id(x) in stack:
        return ["cycle", len(stack) - stack.index(id(x))]
    inner = (*stack, id(x))
    for kinds_, describe in _CANON:
        if isinstance(x, kinds_):
            return describe(x, inner)
    if isinstance(x, type):
        return ["type", x.__module__, x.__qualname__]
    if callable(x) and hasattr(x, "__code__"):
        return ["function", x.__qualname__, x.__code__.co_code.hex()]
    state = _state(x)
    if state is None:
        return ["opaque", type(x).__module__, type(x).__qualname__]
    return ["object", type(x).__module__, type(x).__qualname__, canon(state, inner)]


def _state(x: Any) -> Any:
    if isinstance(x, BaseException):
        return list(x.args)
    if hasattr(x, "__dict__") and not isinstance(x, type):
        return dict(sorted(vars(x).items()))
    slots = getattr(type(x), "__slots__", None)
    if slots:
        return {s: getattr(x, s, None) for s in slots}
    return None


def _nd(a: np.ndarray[Any, Any], stack: tuple[int, ...]) -> Any:
    if a.dtype.hasobject:
        return ["nd", "O", list(a.shape), canon(a.tolist(), stack)]
    data = np.ascontiguousarray(a).tobytes()
    return ["nd", a.dtype.str, str(a.dtype.descr), list(a.shape), _sha(data)]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


_CANON: list[tuple[Any, Callable[[Any, tuple[int, ...]], Any]]] = [
    (bool, lambda x, s: ["bool", x]),
    (int, lambda x, s: ["int", str(x) if x.bit_length() < 4000 else _sha(repr(x).encode())]),
    (float, lambda x, s: ["float", x.hex()]),
    (complex, lambda x, s: ["complex", x.real.hex(), x.imag.hex()]),
    (str, lambda x, s: ["str", _sha(x.encode("utf-8", "surrogatepass"))]),
    ((bytes, bytearray), lambda x, s: [type(x).__name__, _sha(bytes(x))]),
    (type(None), lambda x, s: ["none"]),
    (np.ndarray, _nd),
    (np.generic, lambda x, s: ["npscalar", x.dtype.str, _sha(np.asarray(x).tobytes())]),
    (np.random.Generator, lambda x, s: ["Generator", canon(x.bit_generator.state, s)]),
    ((list, tuple), lambda x, s: [type(x).__name__, [canon(e, s) for e in x]]),
    (dict, lambda x, s: ["dict", [[canon(k, s), canon(v, s)] for k, v in x.items()]]),
    ((set, frozenset), lambda x, s: [type(x).__name__, sorted(repr(canon(e, s)) for e in x)]),
]


def digest(x: Any) -> str:
    """A short fingerprint of :func:`canon` (equal values, equal digests, in every process)."""
    return _sha(repr(canon(x)).encode())


def describe(x: Any, limit: int = 160) -> str:
    """A short, safe text of ``x`` for messages (its repr may be huge or raise)."""
    try:
        text = repr(x)
    except Exception as e:  # a payload's own __repr__
        text = f"<unrepresentable {type(x).__name__}: {e!r}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
