"""Unit tests of pure logic (no processes): framing, backoff, options, caches, the public API."""

from __future__ import annotations

import importlib
import json
import pickle
import re
import select
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import evocluster
from evocluster import _config as config
from evocluster import _framing, checkpoint, engine, errors, operators, pareto
from evocluster import _protocol as protocol
from evocluster import _serialization as serialization
from evocluster import rng as rng_module
from evocluster._backends import base
from evocluster._calls import FunctionCache
from evocluster.errors import ConfigurationError, RemoteError, RemoteTraceback

#: The public surface of ``import evocluster``, pinned once: adding or removing a name is a
#: decision made here, in the same change.
PUBLIC_API = sorted(
    [
        "BrokenPool",
        "Checkpoint",
        "CheckpointError",
        "ConfigurationError",
        "EvaluationAborted",
        "EvaluationCrashed",
        "EvaluationError",
        "EvaluationFailed",
        "EvaluationTimeout",
        "EvoclusterError",
        "Executor",
        "Failure",
        "JobError",
        "RemoteError",
        "RemoteTraceback",
        "SerializationError",
        "WorkerError",
        "__version__",
        "get_executor",
        "map",
        "rng",
        "run_seed",
        "share",
        "shared",
        "starmap",
    ]
)


def test_public_api_is_pinned() -> None:
    assert sorted(evocluster.__all__) == PUBLIC_API


#: The public modules, pinned: every other module of the package is internal, its name starting
#: with an underscore.  Each public module pins its API with ``__all__``.
PUBLIC_MODULES = [
    "evocluster",
    "evocluster.checkpoint",
    "evocluster.engine",
    "evocluster.errors",
    "evocluster.operators",
    "evocluster.pareto",
    "evocluster.rng",
]
PACKAGE_DIR = Path(evocluster.__file__).resolve().parent


def _modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def test_internal_modules_are_private() -> None:
    """A module is public only if PUBLIC_MODULES names it (or it lies inside the engine's
    package, whose loops are reached through ``evocluster.engine``); any other is ``_named``."""
    public = [
        m
        for m in _modules()
        if not any(part.startswith("_") for part in m.split(".")[1:])
        and not m.startswith("evocluster.engine.")
    ]
    assert sorted(public) == sorted(PUBLIC_MODULES)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_each_public_module_pins_its_api(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported, f"{name} has no __all__"
    assert len(set(exported)) == len(exported), f"{name}.__all__ names something twice"


#: every name a public module exports
PUBLIC_NAMES = [
    pytest.param(module, name, id=f"{module.__name__}.{name}")
    for module in (evocluster, operators, pareto, checkpoint, engine, errors, rng_module)
    for name in module.__all__
]


@pytest.mark.parametrize(("module", "name"), PUBLIC_NAMES)
def test_every_public_name_resolves_and_is_documented(module: ModuleType, name: str) -> None:
    obj = getattr(module, name)  # an __all__ entry that names nothing fails here
    if name == "__version__":
        assert isinstance(obj, str) and re.fullmatch(r"\d+\.\d+\.\d+\S*", obj), obj
        return
    # a class's own docstring, not one inherited from its base
    doc = vars(obj).get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    assert doc and doc.strip(), f"{module.__name__}.{name} has no docstring"


def test_the_installed_version_is_the_package_s() -> None:
    """pyproject.toml reads the version from evocluster/_version.py: one place to write it."""
    import importlib.metadata

    assert importlib.metadata.version("evocluster") == evocluster.__version__


def test_import_does_not_start_mpi() -> None:
    code = (
        "import sys, evocluster; assert 'mpi4py' not in sys.modules; "
        "assert 'numpy' not in sys.modules, 'workers would import numpy at start-up'; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize("head_size", [0, 10, base.INLINE_MAX, base.INLINE_MAX + 1])
def test_envelope_round_trip(head_size: int) -> None:
    head = bytes(range(256)) * (head_size // 256) + b"x" * (head_size % 256)
    frames = [head, memoryview(b"abc"), bytearray(0), np.arange(5).data]
    env, parts = base.encode_envelope(frames)
    inline, sizes = base.decode_envelope(env)
    assert (inline is not None) == (head_size <= base.INLINE_MAX)
    assert sizes == [p.nbytes for p in parts]
    rebuilt = base.assemble(inline, [bytes(p) for p in parts])
    assert [bytes(f) for f in rebuilt] == [bytes(memoryview(f).cast("B")) for f in frames]


def _framed(messages: list[list[Any]], blocking: bool) -> list[list[bytes]]:
    """``messages`` through a socket pair: :func:`_framing.send` in a thread, a
    :class:`_framing.Reader` on the other end (blocking ``recv``, or non-blocking ``fill`` and
    ``next`` as the local master reads)."""
    a, b = socket.socketpair()
    a.settimeout(30)  # a test that fails, never one that hangs
    b.settimeout(30)

    def write() -> None:
        for m in messages:
            _framing.send(a, m)
        a.close()

    writer = threading.Thread(target=write)
    writer.start()
    reader = _framing.Reader(b)
    got: list[list[bytes]] = []
    try:
        while True:
            if blocking:
                frames = reader.recv()
                if frames is None:
                    break
                got.append([bytes(f) for f in frames])
                continue
            while (frames := reader.next()) is not None:
                got.append([bytes(f) for f in frames])
            if not reader.fill(socket.MSG_DONTWAIT) and reader.eof:
                break
            select.select([b], [], [], 1.0)
    finally:
        writer.join()
        b.close()
    return got


@pytest.mark.parametrize("blocking", [True, False])
def test_framing_round_trip(blocking: bool) -> None:
    """Many small messages (several per read), empty frames, a frame far larger than the receive
    buffer (read straight into its own), more frames than one sendmsg takes, a header larger
    than the receive buffer."""
    big = np.arange(3 * _framing.RECV_SIZE, dtype=np.uint8).data
    messages: list[list[Any]] = [[b"x" * i, b"", b"yy"] for i in range(200)]
    messages += [[b"head", big, b"tail"], [b""], [b"a"] * (_framing.IOV_MAX + 3)]
    messages += [[b"z"] * (_framing.RECV_SIZE // 8 + 10), [bytearray(b"last")]]
    got = _framed(messages, blocking)
    assert got == [[bytes(memoryview(f).cast("B")) for f in m] for m in messages]


def test_framing_frames_are_writable_and_their_own() -> None:
    a, b = socket.socketpair()
    with a, b:
        _framing.send(a, [b"abc", b"def"])
        _framing.send(a, [b"ghi"])
        reader = _framing.Reader(b)
        first = reader.recv()
        second = reader.recv()
        assert first is not None and second is not None
        first[0][0] = ord("A")  # writable (numpy arrays loaded from it are)
        assert [bytes(f) for f in first + second] == [b"Abc", b"def", b"ghi"]


def test_framing_refuses_a_stream_that_is_not_messages() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"\xff\xff\xff\xff" + b"\0" * 8)
        reader = _framing.Reader(b)
        reader.fill()
        with pytest.raises(_framing.ProtocolError):
            reader.next()


def test_pieces_cover_a_part_without_gaps() -> None:
    assert base.pieces(0) == [(0, 0)]
    assert base.pieces(10) == [(0, 10)]
    n = 2 * base.PIECE + 5
    cut = base.pieces(n)
    assert cut == [(0, base.PIECE), (base.PIECE, 2 * base.PIECE), (2 * base.PIECE, n)]
    assert all(b - a <= base.PIECE < 2**31 for a, b in cut)


def test_backoff_sleeps_a_fraction_of_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(base.time, "monotonic", lambda: now[0])
    b = base.Backoff(0.001, 0.5, 0.1)
    assert b.next() == 0.001  # just started: the floor
    now[0] += 2.0
    assert b.next() == pytest.approx(0.2)  # 10 % of the 2 s waited
    now[0] += 20.0
    assert b.next() == 0.5  # the ceiling
    b.reset()
    assert b.next() == 0.001


def test_options_precedence_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    assert config.resolve().backend == "auto"
    monkeypatch.setenv("EVOCLUSTER_BACKEND", "serial")
    monkeypatch.setenv("EVOCLUSTER_WORKERS", "3")
    assert config.resolve().backend == "serial"
    assert config.resolve(backend="local").backend == "local"  # keyword beats environment
    assert config.resolve().workers == 3
    monkeypatch.setenv("EVOCLUSTER_WORKERS", "three")
    with pytest.raises(ConfigurationError, match="EVOCLUSTER_WORKERS='three'"):
        config.resolve()
    monkeypatch.delenv("EVOCLUSTER_WORKERS")
    with pytest.raises(ConfigurationError, match="backend must be one of"):
        config.resolve(backend="yarn")
    with pytest.raises(ConfigurationError, match="workers must be a whole number >= 1"):
        config.resolve(workers=0)
    # not whole numbers: they failed later, naming nothing (workers=True lost a local pool)
    for bad in ("2", 2.5, True):
        with pytest.raises(ConfigurationError, match="workers must be a whole number"):
            config.resolve(workers=bad)
    # a queue per level: EVOCLUSTER_PREFETCH=1000000000 made the master allocate until killed
    for bad in (0, 65, 10**9, 2.5, "2"):
        with pytest.raises(ConfigurationError, match="prefetch must be a whole number from 1"):
            config.resolve(prefetch=bad)
    assert config.resolve(prefetch=config.PREFETCH_MAX).prefetch == config.PREFETCH_MAX
    with pytest.raises(ConfigurationError, match="unknown option"):
        config.resolve(colour="blue")


def test_function_cache_is_bounded_lru() -> None:
    c = FunctionCache(maxsize=2)
    c.put(b"a", 1)
    c.put(b"b", 2)
    assert c.touch(b"a")  # a is now the most recent
    c.put(b"c", 3)  # evicts b
    assert not c.touch(b"b") and c.touch(b"a") and c.touch(b"c")


def square(x: int) -> int:
    return x * x


def test_function_table_serialises_each_callable_once() -> None:
    table = serialization.FunctionTable()
    key1, payload1 = table.lookup(square)
    key2, payload2 = table.lookup(square)
    assert key1 == key2 and payload1 is payload2  # cached by identity
    assert table.lookup(abs)[0] != key1
    assert serialization.loads(payload1) is square


def test_numpy_travels_out_of_band() -> None:
    a = np.arange(1 << 16, dtype=np.float64)
    frames = serialization.dumps({"a": a})
    assert len(frames) == 2 and memoryview(frames[1]).nbytes == a.nbytes
    assert len(frames[0]) < 1000  # the data is not in the pickle stream
    back = serialization.loads([frames[0], bytearray(frames[1])])
    assert np.array_equal(back["a"], a)


class Awkward(Exception):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}/{b}")


def test_exceptions_come_home_or_as_stand_in() -> None:
    try:
        raise KeyError("gene")
    except KeyError as e:
        info = serialization.pack_exception(e, "worker 1")
    exc = serialization.unpack_exception(pickle.loads(pickle.dumps(info)))
    assert isinstance(exc, KeyError) and isinstance(exc.__cause__, RemoteTraceback)
    assert "worker 1" in str(exc.__cause__) and "KeyError" in str(exc.__cause__)
    info = serialization.pack_exception(Awkward(1, 2), "worker 2")
    exc = serialization.unpack_exception(info)
    assert isinstance(exc, RemoteError) and exc.message == "1/2"
    assert exc.type_name.endswith("Awkward")


_SERVE_SCRIPT = r"""
import json, os, sys
from evocluster import _jobfile as jobfile, _protocol as protocol
from evocluster._backends.base import Channel
from evocluster._serialization import dumps, loads
from evocluster._worker import serve

class ListChannel(Channel):  # in memory: the master's records in, the worker's out
    rank, size, host = 1, 2, "here"
    def __init__(self, records):
        self.inbox = [dumps(r) for r in records]
        self.sent = []
        self.imported_before_init = None
    def recv(self):
        if self.imported_before_init is None:
            self.imported_before_init = os.path.exists(LOG)
        return self.inbox.pop(0)
    def send(self, frames):
        self.sent.append(loads(frames)[0])

LOG = sys.argv[3]  # read now: importing a job sets sys.argv
early, sent = (jobfile.spec(p, None, []) for p in sys.argv[1:3])
ch = ListChannel([protocol.init(sent, {}), protocol.stop()])
code = serve(ch, early)
print(json.dumps({"code": code, "sent": ch.sent, "early": ch.imported_before_init}))
"""


@pytest.mark.parametrize("same", [True, False])
def test_worker_imports_its_own_job_early_and_the_master_s_if_it_differs(
    tmp_path: Path, same: bool
) -> None:
    """A worker imports the job its command line names before INIT comes (in parallel with the
    master's start-up), once; if INIT names another job, it imports that one and reports READY."""
    log = tmp_path / "imports.log"
    jobs = []
    for name in ("a", "b"):
        job = tmp_path / f"{name}.py"
        job.write_text(f"with open({str(log)!r}, 'a') as fh:\n    fh.write({name!r} + '\\n')\n")
        jobs.append(str(job))
    early, sent = (jobs[0], jobs[0]) if same else (jobs[0], jobs[1])
    proc = subprocess.run(
        [sys.executable, "-c", _SERVE_SCRIPT, early, sent, str(log)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"code": 0, "sent": [protocol.READY, protocol.BYE], "early": True}, out
    assert log.read_text().split() == (["a"] if same else ["a", "b"])


class _CountsPickling:
    """Counts how often the master pickles it (the count itself does not travel)."""

    pickled = 0

    def __reduce__(self) -> tuple[type, tuple[()]]:
        type(self).pickled += 1
        return (_Plain, ())


class _Plain:
    pass


def _kind(x: object) -> str:
    return type(x).__name__


def test_submit_pickles_its_arguments_once() -> None:
    """``submit`` serialises the arguments once: that pickle is both the early check and what
    the worker receives (a snapshot taken at submit time)."""
    with evocluster.Executor(backend="local", workers=1) as ex:
        arg = _CountsPickling()
        assert ex.submit(_kind, arg).result(timeout=60) == "_Plain"
        assert _CountsPickling.pickled == 1


def test_on_error_has_one_reading_for_the_executor_and_the_engine() -> None:
    """``retry:N`` was parsed twice (config.py and the engine); both now ask config.retries_of,
    through the one FailurePolicy, so a value one accepts the other accepts, with the same N."""
    from evocluster._failures import FailurePolicy
    from evocluster.engine.policy import policy_of

    cases = {"raise": 0, "penalize": 0, "retry:0": 0, "retry:3": 3, "retry:12": 12}
    bad = ["retry:", "retry:-1", "retry:x", "Raise", "retry:\u0663", "", 3, None]
    for value, n in cases.items():
        assert config.retries_of(value) == n
        # the executor's policy (from its resolved options) and the engine's: one model
        assert FailurePolicy.of(config.resolve(on_error=value).on_error).retries == n
        if value != "raise":
            assert policy_of(value, -1.0, np.array([1.0]), None).retries == n
    for value in bad:
        assert config.retries_of(value) is None
        if value is None:  # None given to either: not given (the default, or the executor's)
            continue
        with pytest.raises(ConfigurationError, match="on_error must be"):
            config.resolve(on_error=value)
        with pytest.raises(ValueError, match="on_error must be"):
            policy_of(value, None, np.array([1.0]), None)
