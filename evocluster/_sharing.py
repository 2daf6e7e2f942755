"""Large read-only data sent to every worker once per version: :func:`share` on the master,
:func:`shared` in the fitness.

A *version* is what one ``share(name, obj)`` makes: ``obj`` serialised at once (refused there,
naming the share, when it cannot reach the workers), under a token unique to this master.  How
it travels::

    master                                          worker
      share(name, obj) -> Version(name, token, frames)
      map(fn): fn bound to the current versions
        (Bound: fn + (name, token) refs, no data)
      TASK ..., fn payload, shared=(name, token,    install: the version replaces the name's
        frames) only for a version this worker        older one (freed); the callable's refs
        does not hold yet (its Mirror says)           say which version shared(name) returns

* The callable's payload holds only references, so binding a new callable (a
  ``functools.partial`` per generation, ``abs`` after a share) sends the references again, never
  the data.  :class:`~evocluster._serialization.FunctionTable` returns the versions a callable
  refers to with its payload (:func:`needs`), and the pool keeps, for each worker, which version
  of each name it holds (:func:`outgoing`, keyed by the pool's mirror of that worker's function
  cache), as it does for callables: a version crosses the wire once per worker.
* A worker holds one version per name, the last one it was sent (:func:`install`).  A job
  submitted before a new ``share`` of the same name still gets the version it was bound to: it is
  sent again to a worker that moved on (rare: the maps of a DEAP loop never overlap).
* SCOOP's broker hands tasks to whichever worker asks, so the origin cannot know who holds what:
  each version is broadcast once as a SCOOP constant (:func:`scoop_constant`) and tasks carry only
  references; a worker fetches a version it lacks and drops SCOOP's copy once loaded.
* Under isolation the worker hands its child the versions it holds with the callable, under a key
  that changes whenever they do (:func:`for_child`): the child, too, holds one version per name.

* One copy per host (:class:`Segment`): a version whose numpy data (its out-of-band buffers) totals
  :data:`SEGMENT_MIN_BYTES` or more goes to a worker on the master's own host (the local pool,
  MPI ranks on rank 0's host) as a reference to one POSIX shared memory file, ``/dev/shm/``
  :data:`SEGMENT_PREFIX` ``<master pid>-<n>``, that the master writes once, when the first such
  worker needs the version.  Each worker maps it read-only: its numpy arrays are views of that
  memory, read-only, shared by every worker of the host.  The master unlinks the file when the
  version is freed, and at exit (normal end, exception, SIGINT/SIGTERM/SIGHUP: they unwind the
  job; an MPI run whose launcher is about to kill every rank for a dead worker: at once).  A
  master killed outright (SIGKILL) cannot: its cleaner process does (:func:`_start_cleaner`);
  were the cleaner killed too, the next master on that host that writes a segment removes those
  of masters no longer running (:func:`_sweep_stale`).  Workers on other hosts, and data that is
  not in out-of-band buffers (objects that hold no numpy array), keep one copy per worker.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
import pickle
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from . import _serialization as _wire
from .errors import SerializationError

__all__ = [
    "SCOOP_PREFIX",
    "SEGMENT_MIN_BYTES",
    "SEGMENT_PREFIX",
    "Bound",
    "Segment",
    "Version",
    "bind",
    "for_child",
    "install",
    "needs",
    "outgoing",
    "pending_bytes",
    "release_segments",
    "scoop_constant",
    "share",
    "shared",
    "unshare",
    "wants_host",
]

_lock = threading.Lock()  # share() may be called from any master thread
_tokens = itertools.count(1)
_registry: dict[str, Any] = {}  # the master's shared objects, by name (shared() on the master)
_current: dict[str, Version] = {}  # the master's current version of each name
_refs: tuple[tuple[str, bytes], ...] = ()  # the current versions, as the callables refer to them
_bound: dict[int, tuple[Callable[..., Any], Bound]] = {}  # id(fn) -> (fn, fn bound to _current)
_MAX_BOUND = 256

# ---- worker side: the version of each name this process holds (a worker, an isolated child, or
# the serial backend's scheduler thread), and the frames it came in, kept for an isolated child
_held: dict[str, tuple[bytes, Any, Any]] = {}
_installs = 0  # how often _held changed: names what an isolated child must hold (for_child)
_calling = threading.local()  # .refs: the versions of the bound call running on this thread


class Version:
    """One version of one shared object, on the master: its serialised frames, once."""

    __slots__ = ("__weakref__", "frames", "name", "nbytes", "segment", "token")

    def __init__(self, name: str, token: bytes, frames: _wire.Frames) -> None:
        self.name = name
        self.token = token
        self.frames = frames
        self.nbytes = _wire.frames_nbytes(frames)
        # its buffers in shared memory, for workers on this host: not yet (None), or never (False)
        self.segment: Segment | bool | None = None


class Bound:
    """``fn`` with references to the versions of the shared objects it may read; calling it
    makes them the ones :func:`shared` returns on this thread, then calls ``fn``.  Only the
    references travel.  On the master it also refers, weakly, to the versions themselves (the
    jobs that use them hold them; an old bound callable kept somewhere must not)."""

    __slots__ = ("__weakref__", "fn", "refs", "versions")

    def __init__(
        self,
        fn: Callable[..., Any],
        refs: tuple[tuple[str, bytes], ...],
        versions: tuple[Version, ...] = (),
    ) -> None:
        self.fn = fn
        self.refs = refs
        self.versions = tuple(weakref.ref(v) for v in versions)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        previous = getattr(_calling, "refs", None)
        _calling.refs = self.refs
        try:
            return self.fn(*args, **kwargs)
        finally:
            _calling.refs = previous

    def __reduce__(self) -> tuple[Any, ...]:
        if self.versions:  # serialised on the master: the payload needs them on each worker
            versions = [ref() for ref in self.versions]
            if any(v is None for v in versions):
                raise pickle.PicklingError(
                    f"{self!r} refers to a version of a shared object that a later share() "
                    "replaced and nothing uses any more: bind the callable again (map it anew)"
                )
            _wire.note_needs(versions)
        return (Bound, (self.fn, self.refs))

    def __repr__(self) -> str:
        return f"{self.fn!r} (with shared {[name for name, _ in self.refs]})"


def _policy_in_force() -> str:
    """The serialisation policy maps use by default: the launcher's ``--serialization`` under
    the launcher (looked up, not imported: the executor is a layer above), else the
    environment's or the default."""
    launcher = getattr(sys.modules.get("evocluster._executor"), "_launcher", None)
    policy = getattr(launcher, "serialization", None)
    if isinstance(policy, str):
        return policy
    from . import _config as config

    return config.resolve().serialization


def share(name: str, obj: Any, *, serialization: str | None = None) -> None:
    """Send ``obj`` to every worker, once per worker; a fitness reads it with ``shared(name)``.

    Call it on the master before evaluating (e.g. in the job's ``if __name__ == "__main__":``
    block).  ``obj`` is serialised here, at once, so later changes to it do not travel: share it
    again instead (the new version replaces the old one on the workers, which free it).

    Args:
        name: the name the fitness uses.
        obj: any object the workers can load; numpy arrays travel without extra copies.
        serialization: the policy to serialise ``obj`` with (default: the one maps use by
            default: the launcher's ``--serialization``, else ``EVOCLUSTER_SERIALIZATION``,
            else ``"upgrade"``).

    Raises:
        TypeError: ``name`` is not a string.
        SerializationError: ``obj`` cannot reach the workers under that policy (the message
            names the share and the part of ``obj`` at fault); nothing was shared.
        RuntimeError: called inside a fitness (it would change what that worker alone sees).
        ConfigurationError: an unknown ``serialization`` policy.
    """
    if not isinstance(name, str):
        raise TypeError(f"share() needs a name (str), got {type(name).__name__}")
    _refuse_in_evaluation(f"share({name!r}, ...)")
    if serialization is None:
        policy = _policy_in_force()
    else:
        from . import _config as config

        policy = config.resolve(serialization=serialization).serialization
    label = f"shared object {name!r}"
    try:
        frames = _wire.checked_dumps_args(obj, obj, label, policy)
    except SerializationError as e:
        raise SerializationError(f"evocluster.share({name!r}, ...) refused: {e}") from e
    except Exception as e:  # the object's own pickling code (__reduce__, __getstate__)
        raise SerializationError(
            f"evocluster.share({name!r}, ...) refused: pickling the object raised "
            f"{type(e).__name__}: {e} (its own __reduce__ / __getstate__ failed)"
        ) from e
    global _refs
    with _lock:
        token = f"{os.getpid()}:{next(_tokens)}".encode()
        _registry[name] = obj
        _current[name] = Version(name, token, frames)
        _refs = tuple(sorted((n, v.token) for n, v in _current.items()))
        _bound.clear()


def unshare(name: str | None = None) -> None:
    """Forget ``name`` (``None``: everything shared); later tasks no longer refer to it.

    Raises:
        RuntimeError: called inside a fitness.
    """
    _refuse_in_evaluation("unshare()")
    global _refs
    with _lock:
        for key in list(_registry) if name is None else [name]:
            _registry.pop(key, None)
            _current.pop(key, None)
        _refs = tuple(sorted((n, v.token) for n, v in _current.items()))
        _bound.clear()


def _refuse_in_evaluation(call: str) -> None:
    """``share`` inside a fitness would change what one worker (or one isolated child) sees, and
    nothing else: refused.  Read through ``sys.modules``: the worker module is a layer above."""
    calls = sys.modules.get("evocluster._calls")  # the worker's marks
    where = calls.in_evaluation() if calls is not None else None
    if where is not None:
        raise RuntimeError(
            f"evocluster.{call} was called inside a fitness (on {where}): it would change "
            "the data of that worker only; call it on the master, before the map or submit "
            "whose evaluations read it"
        )


def shared(name: str) -> Any:
    """The object shared as ``name`` (call it inside a fitness, or on the master).

    Raises:
        KeyError: nothing is shared under ``name`` for this evaluation; the message says what is.
    """
    refs = getattr(_calling, "refs", None)
    if refs is not None:  # inside a bound call: the versions the callable was bound to
        for ref_name, token in refs:
            if ref_name == name:
                held = _held.get(name)
                if held is None or held[0] != token:
                    raise LookupError(
                        f"internal error: version {token!r} of shared object {name!r} is not "
                        "on this worker (please report)"
                    )
                if isinstance(held[1], _Unloadable):
                    raise SerializationError(held[1].message)
                return held[1]
        known = [ref_name for ref_name, _ in refs]
    else:
        if name in _registry:
            return _registry[name]
        known = sorted(_registry)
    raise KeyError(
        f"nothing is shared as {name!r} (shared: {known or 'nothing'}): call "
        f"evocluster.share({name!r}, obj) on the master before the evaluations that read it"
    )


def bind(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` bound to the current versions (the same object for the same ``fn`` until the next
    :func:`share`, so that it is serialised once); ``fn`` itself while nothing is shared."""
    refs = _refs
    if not refs or isinstance(fn, Bound):
        return fn
    with _lock:
        entry = _bound.get(id(fn))
        if entry is not None and entry[0] is fn and entry[1].refs is _refs:
            return entry[1]
        bound = Bound(fn, _refs, tuple(_current[n] for n, _ in _refs))
        if len(_bound) >= _MAX_BOUND:
            _bound.clear()
        _bound[id(fn)] = (fn, bound)
        return bound


# ------------------------------------------------------------------ master: what a task carries
def needs(payload: Any) -> tuple[Version, ...]:
    """The versions a callable's payload refers to (from ``FunctionTable.lookup``)."""
    found: tuple[Version, ...] = getattr(payload, "needs", ())
    return found


# each worker's versions, by name, as the master knows them: keyed by the pool's mirror of that
# worker's function cache, which lives as long as the pool does
_mirrors: weakref.WeakKeyDictionary[Any, dict[str, bytes]] = weakref.WeakKeyDictionary()


def pending_bytes(mirror: Any, payload: Any, near: bool = False) -> int:
    """Bytes of the versions ``payload`` needs that the worker ``mirror`` stands for lacks
    (``mirror``: any object that stands for one worker, as long as it lives); ``near``: the
    worker runs on the master's host (a version in shared memory costs its stream only)."""
    held = _mirrors.get(mirror, {})
    return sum(
        memoryview(v.frames[0]).nbytes if near and _segment_of(v) is not None else v.nbytes
        for v in needs(payload)
        if held.get(v.name) != v.token
    )


def wants_host(mirror: Any, payload: Any) -> bool:
    """Whether ``payload`` needs a version the worker lacks that would reach it in shared memory
    if it runs on the master's host: where it runs must be known first."""
    held = _mirrors.get(mirror, {})
    return any(
        held.get(v.name) != v.token and _segment_size(v) >= SEGMENT_MIN_BYTES
        for v in needs(payload)
    )


def outgoing(
    mirror: Any, payload: Any, near: bool = False
) -> tuple[tuple[str, bytes, Any], ...] | None:
    """What a task with ``payload`` carries to the worker ``mirror`` stands for: each version it
    needs and the worker lacks, as ``(name, token, frames)`` (``near``: the worker runs on the
    master's host; a large version's frames are then a :class:`Segment`); None when nothing.
    From here on, the worker holds them."""
    versions = needs(payload)
    if not versions:
        return None
    held = _mirrors.setdefault(mirror, {})
    out = []
    for v in versions:
        if held.get(v.name) != v.token:
            held[v.name] = v.token
            segment = _segment_of(v) if near else None
            out.append((v.name, v.token, segment or _wire.nest(v.frames)))
    return tuple(out) or None


# ------------------------------------------------------------------ one copy per host
#: A version whose out-of-band buffers total this many bytes or more reaches the workers on the
#: master's host through one shared memory file (:class:`Segment`).
SEGMENT_MIN_BYTES = 1 << 20
#: How those files are named in ``/dev/shm``: ``SEGMENT_PREFIX<master pid>-<n>``.
SEGMENT_PREFIX = "evocluster-shared-"
_SHM = "/dev/shm"
_ALIGN = 64  # each buffer starts on a cache line (numpy wants at least its item size)
_segment_numbers = itertools.count(1)
_swept = False


class Segment:
    """A version's out-of-band buffers in one shared memory file, by reference: its pickle
    stream, the file's name and where each buffer lies in it.  Loading maps the file read-only:
    numpy arrays are views of it (read-only), the same pages in every process of the host."""

    __slots__ = ("name", "spans", "stream")

    def __init__(self, name: str, stream: bytes, spans: tuple[tuple[int, int], ...]) -> None:
        self.name, self.stream, self.spans = name, stream, spans

    def __reduce__(self) -> tuple[Any, ...]:
        return (Segment, (self.name, self.stream, self.spans))

    def load(self) -> Any:
        """The version's object, its buffers mapped from the file (which must still exist)."""
        fd = os.open(os.path.join(_SHM, self.name), os.O_RDONLY)
        try:
            mapped = mmap.mmap(fd, os.fstat(fd).st_size, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        view = memoryview(mapped)  # each array keeps the mapping alive while it lives
        return pickle.loads(self.stream, buffers=[view[a : a + n] for a, n in self.spans])


def _buffers(v: Version) -> list[memoryview]:
    return [
        b.raw() if isinstance(b, pickle.PickleBuffer) else memoryview(b).cast("B")
        for b in v.frames[1:]
    ]


def _segment_size(v: Version) -> int:
    return v.nbytes - memoryview(v.frames[0]).nbytes


def _segment_of(v: Version) -> Segment | None:
    """``v``'s segment, written now if it has none yet; None for a version too small for one,
    or when it cannot be written (then the version travels to each worker, as elsewhere)."""
    if v.segment is None:
        v.segment = False
        if _segment_size(v) >= SEGMENT_MIN_BYTES and os.path.isdir(_SHM):
            try:
                v.segment = _write_segment(v)
            except (OSError, ValueError, BufferError) as e:  # /dev/shm full, a strided buffer
                print(
                    f"evocluster: shared object {v.name!r} goes to each worker: no shared "
                    f"memory for it ({type(e).__name__}: {e})",
                    file=sys.stderr,
                )
    return v.segment if isinstance(v.segment, Segment) else None


def _write_segment(v: Version) -> Segment:
    global _swept
    if not _swept:
        _swept = True
        _sweep_stale()
        _start_cleaner()
    name = f"{SEGMENT_PREFIX}{os.getpid()}-{next(_segment_numbers)}"
    path = os.path.join(_SHM, name)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    # unlinked when the version is freed, or at exit, by this process only (a forked child
    # inherits the finalizer); or at once when the run is about to be killed (release_segments)
    done = weakref.finalize(v, _unlink, path, os.getpid())
    _written[:] = [d for d in _written if d.alive] + [done]
    spans = []
    try:
        offset = 0
        for buffer in _buffers(v):
            offset = -(-offset // _ALIGN) * _ALIGN
            spans.append((offset, buffer.nbytes))
            written = 0
            while written < buffer.nbytes:
                written += os.pwrite(fd, buffer[written:], offset + written)
            offset += buffer.nbytes
    except BaseException:
        done()
        raise
    finally:
        os.close(fd)
    return Segment(name, bytes(v.frames[0]), tuple(spans))


_written: list[weakref.finalize[Any, Any]] = []  # this master's segments, unlinked when called


def release_segments() -> None:
    """Unlink every segment this master wrote, now: its run is about to end by a kill (an MPI
    launcher that ends the job when a rank dies kills the master too, before its exit
    handlers run).  Workers that map one keep it until they end."""
    for done in list(_written):
        done()


def _unlink(path: str, owner: int) -> None:
    if os.getpid() == owner:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


# what the cleaner runs: wait for the master's end (end of file on its stdin, a pipe whose other
# end only the master holds), then remove what is left of its segments
_CLEANER = """
import os, signal, sys
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
sys.stdin.buffer.read()
for name in os.listdir(sys.argv[2]):
    if name.startswith(sys.argv[1]):
        try:
            os.unlink(os.path.join(sys.argv[2], name))
        except OSError:
            pass
"""
_cleaner: tuple[int, Any] | None = None  # (the pipe's end the master holds, the process)


def _start_cleaner() -> None:
    """Start a small process, in a session of its own, that removes this master's segments when
    the master has ended, however: also when it was killed outright (SIGKILL, an MPI launcher
    ending the job for a dead rank) and its exit handlers never ran.  The master holds the
    write end of its stdin (never written, not inherited): the master's end is its end of
    file.  Not started where it cannot be (then only :func:`_sweep_stale` of a later run)."""
    global _cleaner
    import subprocess

    read, write = os.pipe()
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _CLEANER, f"{SEGMENT_PREFIX}{os.getpid()}-", _SHM],
            stdin=read,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # not in the job's process group: a kill of it spares this
        )
    except OSError:
        os.close(write)
        return
    finally:
        os.close(read)
    _cleaner = (write, process)


def _sweep_stale() -> None:
    """Remove the segments of masters on this host that ended without removing theirs (killed
    outright): named after a pid no process has now."""
    try:
        names = os.listdir(_SHM)
    except OSError:
        return
    for name in names:
        if not name.startswith(SEGMENT_PREFIX):
            continue
        pid = name[len(SEGMENT_PREFIX) :].partition("-")[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(_SHM, name))
        except OSError:  # alive, someone else's
            pass


#: How the SCOOP constants that carry shared versions are named (:func:`scoop_constant`).
SCOOP_PREFIX = "evocluster_shared_"


def scoop_constant(version_name: str, token: bytes) -> str:
    """The name of the SCOOP constant a version of ``version_name`` is broadcast as."""
    return f"{SCOOP_PREFIX}{token.hex()}_{version_name.encode().hex()}"


# ------------------------------------------------------------------ worker: installing versions
def install(
    entries: Sequence[tuple[str, bytes, Any]] | None,
    fetch: Callable[[str, bytes], Any] | None = None,
    keep_frames: bool = False,
) -> None:
    """Hold the versions a task carries: each replaces the older version of its name, which is
    freed first (one version in memory at a time).  An entry without frames (SCOOP) is fetched
    with ``fetch(name, token)`` unless already held.  ``keep_frames``: keep the frames too, for
    an isolated child (numpy data is shared with the loaded object, not copied).

    Raises:
        SerializationError: a version cannot be loaded here (its name and the reason).
    """
    global _installs
    for name, token, sent in entries or ():
        held = _held.get(name)
        if held is not None and held[0] == token:
            if keep_frames and held[2] is None and sent is not None:
                _held[name] = (token, held[1], sent)
            continue
        _held.pop(name, None)
        del held
        _installs += 1
        frames = sent
        if frames is None:
            if fetch is None:
                raise LookupError(f"internal error: no way to fetch shared object {name!r}")
            frames = fetch(name, token)
        try:
            obj = frames.load() if isinstance(frames, Segment) else _wire.loads(frames)
        except BaseException as e:  # the object's own unpickling code, SystemExit included
            what = f"the shared object {name!r}"
            message = _wire.explain_load_error(e, what)
            # held as its failure: the master will not send this version here again
            _held[name] = (token, _Unloadable(message), None)
            raise SerializationError(message) from e
        # a segment is a reference: kept, an isolated child maps it too (never a copy)
        _held[name] = (token, obj, frames if keep_frames or isinstance(frames, Segment) else None)


class _Unloadable:
    """A version this worker could not load: :func:`shared` raises why."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def _load_for_child(fn_frames: Any, versions: tuple[tuple[str, bytes, Any], ...]) -> Any:
    """Receiving side of :func:`for_child`, in an isolated child (module level: pickle finds it
    by reference): hold the versions (each loaded once), then load the callable.  A version
    that does not load here is held as its failure, which :func:`shared` raises if the fitness
    reads it: the worker hands over every version it holds, and one the master has unshared
    since may be gone from shared memory (its segment unlinked)."""
    for version in versions:
        with contextlib.suppress(SerializationError):
            install((version,))
    return _wire.loads(fn_frames)


_child_payloads: OrderedDict[tuple[bytes, int], list[Any]] = OrderedDict()


def for_child(fn_key: bytes, fn_frames: Any) -> tuple[bytes, Any]:
    """The key and frames to hand an isolated child for the callable ``fn_key`` (the frames are
    sent only to a child that has not had that key): while anything is shared, ``fn_frames``
    with the versions this worker holds (the task installed those the callable refers to), under
    a key that names this worker's versions too.  The child then holds what the worker holds
    when it evaluates a chunk: the chunks go to it in order, and whenever the worker's versions
    change the next chunk's key is new, so its frames install them (once per version and
    callable: the child keeps one version per name, as the worker does)."""
    if not _held or fn_frames is None:
        return fn_key, fn_frames
    key = (fn_key, _installs)
    found = _child_payloads.get(key)
    if found is None:
        versions = []
        for name, (token, obj, kept) in list(_held.items()):
            frames = kept
            if frames is None:  # came with a task that was not isolated: serialised once more
                frames = _wire.dumps_args(obj, "upgrade")
                _held[name] = (token, obj, frames)
            versions.append(
                (name, token, frames if isinstance(frames, Segment) else _wire.nest(frames))
            )
        found = _wire.dumps(_Carried(_wire.nest(list(fn_frames)), tuple(versions)))
        _child_payloads[key] = found
        while len(_child_payloads) > 8:
            _child_payloads.popitem(last=False)
    return fn_key + b"@%d" % _installs, found


class _Carried:
    """A callable and the versions it may read, on their way to an isolated child."""

    __slots__ = ("fn_frames", "versions")

    def __init__(self, fn_frames: Any, versions: tuple[tuple[str, bytes, Any], ...]) -> None:
        self.fn_frames, self.versions = fn_frames, versions

    def __reduce__(self) -> tuple[Any, ...]:
        return (_load_for_child, (self.fn_frames, self.versions))
