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
  of masters no longer running (:func:`_sweep_stale`).  On each other host (MPI) the first idle
  worker that needs the version is sent it whole (:class:`HostCopy`) and writes that host's
  segment, named after its own pid; the others are sent the :class:`Segment` and map it once
  written.  That worker removes it (when it installs a newer version of the name, at exit, or
  its cleaner when it is killed).  Data that is not in out-of-band buffers (objects that hold
  no numpy array), and SCOOP's workers, keep one copy per worker.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import mmap
import os
import pickle
import socket
import sys
import threading
import time
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
    "HostCopy",
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
    "segment_of",
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

    __slots__ = ("__weakref__", "frames", "name", "nbytes", "remote", "segment", "token")

    def __init__(self, name: str, token: bytes, frames: _wire.Frames) -> None:
        self.name = name
        self.token = token
        self.frames = frames
        self.nbytes = _wire.frames_nbytes(frames)
        # its buffers in shared memory, for workers on this host: not yet (None), or never (False)
        self.segment: Segment | bool | None = None
        # on each other host, the segment one of its workers writes (:class:`HostCopy`)
        self.remote: dict[str, Segment] = {}


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


def pending_bytes(mirror: Any, payload: Any, near: bool = False, host: str = "") -> int:
    """Bytes of the versions ``payload`` needs that the worker ``mirror`` stands for lacks
    (``mirror``: any object that stands for one worker, as long as it lives); ``near``: the
    worker runs on the master's host (a version in shared memory costs its stream only);
    ``host``: where it runs, if known (a version already copied to that host costs as much)."""
    held = _mirrors.get(mirror, {})
    return sum(
        memoryview(v.frames[0]).nbytes
        if (near and _segment_of(v) is not None) or host in v.remote
        else v.nbytes
        for v in needs(payload)
        if held.get(v.name) != v.token
    )


def wants_host(mirror: Any, payload: Any) -> bool:
    """Whether ``payload`` needs a version the worker lacks that would reach it in shared memory
    (one copy per host): where it runs must be known first."""
    held = _mirrors.get(mirror, {})
    return any(
        held.get(v.name) != v.token and _segment_size(v) >= SEGMENT_MIN_BYTES
        for v in needs(payload)
    )


# the version of each name whose copy on its host a worker wrote, by the worker's mirror: when
# the worker moves on to another version of that name it removes the copy (:func:`install`)
_writers: weakref.WeakKeyDictionary[Any, dict[str, tuple[str, weakref.ref[Version]]]] = (
    weakref.WeakKeyDictionary()
)


def outgoing(
    mirror: Any,
    payload: Any,
    near: bool = False,
    host: str = "",
    writer: int | None = None,
) -> tuple[tuple[str, bytes, Any], ...] | None:
    """What a task with ``payload`` carries to the worker ``mirror`` stands for: each version it
    needs and the worker lacks, as ``(name, token, frames)``; None when nothing.  From here on,
    the worker holds them.  A large version goes by shared memory where it can:

    * ``near`` (the worker runs on the master's host): a :class:`Segment` the master wrote;
    * ``host`` (another host, where the worker runs): the :class:`Segment` one worker of that
      host wrote, if one did; else, if ``writer`` (this worker's pid, given when it is idle: it
      reads the task at once), a :class:`HostCopy` that makes it the one that writes it, and
      the host's other workers get the segment from now on (they wait for it to be written);
      else the frames, one copy for this worker.
    """
    versions = needs(payload)
    if not versions:
        return None
    held = _mirrors.setdefault(mirror, {})
    out = []
    for v in versions:
        if held.get(v.name) == v.token:
            continue
        held[v.name] = v.token
        _moved_on(mirror, v)
        if near:
            sent: Any = _segment_of(v)
        elif host and host in v.remote:
            sent = v.remote[host]
        elif host and writer is not None and _segment_size(v) >= SEGMENT_MIN_BYTES:
            segment = Segment(
                f"{SEGMENT_PREFIX}{writer}-{v.token.hex()}", bytes(v.frames[0]), _layout(v)
            )
            v.remote[host] = segment
            _writers.setdefault(mirror, {})[v.name] = (host, weakref.ref(v))
            sent = HostCopy(segment, _wire.nest(v.frames[1:]))
        else:
            sent = None
        out.append((v.name, v.token, sent or _wire.nest(v.frames)))
    return tuple(out) or None


def _moved_on(mirror: Any, v: Version) -> None:
    """The worker ``mirror`` stands for is sent ``v``: if it wrote its host's copy of an older
    version of that name, it removes that copy when it installs ``v``: no other worker of its
    host is sent that copy from now on (they get the older version whole, if ever)."""
    wrote = _writers.get(mirror, {}).pop(v.name, None)
    if wrote is not None:
        host, ref = wrote
        older = ref()
        if older is not None and older is not v:
            older.remote.pop(host, None)


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

    __slots__ = ("host", "name", "spans", "stream")

    def __init__(
        self, name: str, stream: bytes, spans: tuple[tuple[int, int], ...], host: str = ""
    ) -> None:
        self.name, self.stream, self.spans, self.host = name, stream, spans, host

    def __reduce__(self) -> tuple[Any, ...]:
        return (Segment, (self.name, self.stream, self.spans, self.host))

    def on(self, host: str) -> Segment:
        """The same, saying the host whose ``/dev/shm`` holds it (checked by :meth:`load`: a
        broadcast reference, SCOOP's, may reach a worker elsewhere)."""
        return Segment(self.name, self.stream, self.spans, host)

    def load(self) -> Any:
        """The version's object, its buffers mapped from the file: it must exist or be about to
        (another worker of this host writes it: :class:`HostCopy`).

        Raises:
            FileNotFoundError: the file is on another host (:meth:`on`), or never appeared.
        """
        here = socket.gethostname()
        if self.host and self.host != here:
            raise FileNotFoundError(
                f"its copy is in shared memory on host {self.host}, and this worker runs on "
                f"{here}: a shared object goes by shared memory only to workers on the master's "
                "host under SCOOP (start SCOOP's workers there, or share a smaller object)"
            )
        fd = _open_when_written(os.path.join(_SHM, self.name))
        try:
            mapped = mmap.mmap(fd, os.fstat(fd).st_size, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        view = memoryview(mapped)  # each array keeps the mapping alive while it lives
        return pickle.loads(self.stream, buffers=[view[a : a + n] for a, n in self.spans])


class HostCopy:
    """A version's buffers with the :class:`Segment` to write them into: the worker it is sent
    to writes its host's copy (a temporary name, renamed when complete, so that the host's other
    workers, sent the segment alone, map only a whole copy), then maps it like them.  It
    removes the copy when it moves on to another version of that name, and at exit; its cleaner
    process when it is killed (as the master's own, :func:`_start_cleaner`)."""

    __slots__ = ("buffers", "segment")

    def __init__(self, segment: Segment, buffers: Sequence[Any]) -> None:
        self.segment, self.buffers = segment, buffers

    def __reduce__(self) -> tuple[Any, ...]:
        return (HostCopy, (self.segment, self.buffers))

    def write(self) -> Segment | None:
        """Write the copy; the segment to load, or None when it cannot be written here (then
        this worker loads the buffers itself, and the others find no copy: their error says
        so)."""
        path = os.path.join(_SHM, self.segment.name)
        try:
            _write_file(path, [_raw(b) for b in self.buffers], self.segment.spans, temporary=True)
        except (OSError, ValueError, BufferError) as e:
            print(
                f"evocluster: no shared memory on this host for a shared object ({e}): this "
                "worker holds its own copy",
                file=sys.stderr,
            )
            return None
        if not _own_copies:
            atexit.register(_remove_own_copies)
        _own_copies[self.segment.name] = path
        return self.segment


#: How long a worker waits for the copy another worker of its host is writing.
COPY_WAIT = 600.0
_own_copies: dict[str, str] = {}  # the host copies this worker wrote: segment name -> path


def _remove_own_copies(name: str | None = None) -> None:
    """Remove the host copy ``name`` this worker wrote (every one: None), if it wrote it."""
    for key in [name] if name is not None else list(_own_copies):
        path = _own_copies.pop(key, None) if key is not None else None
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)


def _open_when_written(path: str) -> int:
    """A descriptor of ``path``, once it exists: sleeping between looks (never spinning), up to
    :data:`COPY_WAIT` s for a copy another worker of this host is still writing."""
    deadline = None
    delay = 0.001
    while True:
        try:
            return os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            now = time.monotonic()
            deadline = deadline or now + COPY_WAIT
            if now > deadline:
                raise FileNotFoundError(
                    f"the copy of a shared object on this host, {path}, was never written (the "
                    f"worker sent it to write it failed to, or ended first) after {COPY_WAIT:.0f} s"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def _raw(b: Any) -> memoryview:
    return b.raw() if isinstance(b, pickle.PickleBuffer) else memoryview(b).cast("B")


def _buffers(v: Version) -> list[memoryview]:
    return [_raw(b) for b in v.frames[1:]]


def _layout(v: Version) -> tuple[tuple[int, int], ...]:
    """Where each of ``v``'s buffers lies in its segment: ``(offset, size)``, each aligned."""
    spans, offset = [], 0
    for buffer in _buffers(v):
        offset = -(-offset // _ALIGN) * _ALIGN
        spans.append((offset, buffer.nbytes))
        offset += buffer.nbytes
    return tuple(spans)


def _segment_size(v: Version) -> int:
    """The bytes of ``v``'s numpy data, or 0 when it must not go by shared memory: too little
    of it, or ``EVOCLUSTER_SHARED_MEMORY=0`` (a ``/dev/shm`` too small, as a container's 64 MB
    by default, or to compare)."""
    size = v.nbytes - memoryview(v.frames[0]).nbytes
    if size < SEGMENT_MIN_BYTES or os.environ.get("EVOCLUSTER_SHARED_MEMORY", "1") == "0":
        return 0
    return size


def segment_of(v: Version) -> Segment | None:
    """``v``'s segment on this host (written now if need be), or None: too small for one, or
    no shared memory here."""
    return _segment_of(v)


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
    name = f"{SEGMENT_PREFIX}{os.getpid()}-{next(_segment_numbers)}"
    path = os.path.join(_SHM, name)
    spans = _layout(v)
    # unlinked when the version is freed, or at exit, by this process only (a forked child
    # inherits the finalizer); or at once when the run is about to be killed (release_segments)
    done = weakref.finalize(v, _unlink, path, os.getpid())
    _written[:] = [d for d in _written if d.alive] + [done]
    try:
        _write_file(path, _buffers(v), spans)
    except BaseException:
        done()
        raise
    return Segment(name, bytes(v.frames[0]), spans)


def _write_file(
    path: str,
    buffers: Sequence[memoryview],
    spans: Sequence[tuple[int, int]],
    temporary: bool = False,
) -> None:
    """Write ``buffers`` at ``spans`` into a new file ``path`` (first removing the segments of
    processes of this host that ended without removing theirs, and starting this process's
    cleaner); ``temporary``: under another name, renamed to ``path`` once complete."""
    global _swept
    if not _swept:
        _swept = True
        _sweep_stale()
        _start_cleaner()
    target = f"{path}.part" if temporary else path
    fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        for buffer, (offset, size) in zip(buffers, spans, strict=True):
            written = 0
            while written < size:
                written += os.pwrite(fd, buffer[written:], offset + written)
        if temporary:
            os.rename(target, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(target)
        raise
    finally:
        os.close(fd)


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
        if held is not None and isinstance(held[2], Segment):
            _remove_own_copies(held[2].name)  # the host copy of the older version, if ours
        del held
        _installs += 1
        frames = sent
        if frames is None:
            if fetch is None:
                raise LookupError(f"internal error: no way to fetch shared object {name!r}")
            frames = fetch(name, token)
        if isinstance(frames, HostCopy):  # this worker writes its host's copy
            buffers = frames.buffers
            frames = frames.write() or [frames.segment.stream, *buffers]
            del buffers
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
