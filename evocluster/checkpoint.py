"""Checkpoints: a run's state on disk, written atomically, signed, versioned, and refused when it
is not exactly what this user's evocluster wrote.

A checkpoint file is::

    MAGIC (16 bytes)  header length (4, big-endian)  header (JSON)  tag (32)  body (pickle)

* The header says what the file holds, readable without unpickling anything: ``format`` (this
  module's :data:`FORMAT`), the ``evocluster`` version that wrote it, the ``algorithm`` and
  ``seed`` of the run, ``created`` (UTC, ISO 8601), the body's length and SHA-256, and ``key``:
  a fingerprint of the signing key (never the key).
* The body is plain pickle (protocol 5, buffers in band): objects by reference, never code by
  value -- no cloudpickle, so a checkpoint holds no function that would run when loaded beyond the
  classes it names.
* The tag is HMAC-SHA256 (:mod:`evocluster._signing`, the per-user key that also signs SCOOP
  payloads) over the magic, the header and the body.  :func:`load` checks, in order, the magic,
  the header, the format, the body's length and checksum, the key's fingerprint and the tag,
  *before* it unpickles anything, and names what is wrong: not a checkpoint, truncated,
  corrupted, written by a newer evocluster, signed with another key, or tampered with.
* :func:`save` writes a temporary file in the same directory, fsyncs it, renames it over the
  old one and fsyncs the directory: a kill at any instant leaves either the previous complete
  checkpoint or the new one, never a mix; a failed save leaves the previous one untouched.

:class:`Checkpoint` is the handle a job's own loop uses (a DEAP loop, say): it saves and restores
any picklable state together with Python's ``random`` and numpy's global random state, and tells
the loop when SIGUSR1 or SIGTERM (a batch system's warning) asked it to stop.

The engine's loops (:mod:`evocluster.engine`) checkpoint themselves: ``checkpoint=PATH`` on the
loop, or the launcher's ``--checkpoint PATH`` (:func:`set_defaults`, read by every loop whose own
keyword is not given).  Their file holds one entry per loop the job ran with that path, in order
(:mod:`evocluster.engine.loop_entries`).  While such a loop runs, SIGUSR1 and SIGTERM ask it to
stop at the next safe point (:mod:`evocluster.engine.stopping`), and the loop raises
:class:`Interrupted` (exit code :data:`EXIT_TEMPFAIL`) once its checkpoint is written.  The
launcher's options themselves, and the signal that comes before the first loop, are
:mod:`evocluster._checkpoint_options`'s.

One run writes a path at a time: the launcher's ``--checkpoint``, an engine loop's
``checkpoint=`` and :class:`Checkpoint` hold it (:func:`hold`, a POSIX lock on ``<path>.lock``,
released when the process ends, however it ends), and another run given the same path is
refused with a message naming the holder.  An engine loop's entry records what it belongs to:
the job (its file's name or ``-m`` module), the fitness's qualified name and the settings that
shape the run (population, operators, probabilities, weights...); resuming it with others is
refused, naming what differs.  Entries written before these were recorded resume unchecked.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import hashlib
import hmac
import json
import os
import pickle
import random
import re
import secrets
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import Any

from . import _checkpoint_options as _options
from . import _config as config
from . import _signing as signing
from ._checkpoint_options import CHECKPOINT_ENV, DEFAULT_EVERY, Defaults, defaults
from ._version import __version__
from .errors import ConfigurationError, EvoclusterError

__all__ = [
    "DEFAULT_EVERY",
    "EXIT_TEMPFAIL",
    "FORMAT",
    "MAGIC",
    "Checkpoint",
    "CheckpointError",
    "Defaults",
    "Interrupted",
    "defaults",
    "hold",
    "load",
    "lock_path",
    "read_header",
    "save",
    "set_defaults",
]

#: The first bytes of every checkpoint file.
MAGIC = b"EVOCLUSTER CKPT\n"
#: The layout this module writes; it reads this one and older ones.
FORMAT = 1
#: Exit code of a run that stopped to be continued later (EX_TEMPFAIL, "try again later").
EXIT_TEMPFAIL = 75

_LEN = struct.Struct(">I")
_MAX_HEADER = 1 << 20  # a header longer than this is not one of ours


class CheckpointError(EvoclusterError):
    """A checkpoint cannot be written, or a file is not a checkpoint this run may load.

    Attributes:
        reason: one word for what is wrong: ``missing``, ``not-a-checkpoint`` (a directory
            too), ``truncated``, ``corrupted``, ``future-version``, ``foreign-key``,
            ``tampered``, ``mismatch`` (another algorithm or seed; for an engine loop also
            another job, fitness or population, or fewer generations than it holds),
            ``unwritable``, ``exists`` (an engine loop would start afresh over a run's
            checkpoint without being told to resume it or not) or ``locked`` (another run
            holds the path: :func:`hold`).
        path: the file.
    """

    def __init__(self, reason: str, path: os.PathLike[str] | str, message: str) -> None:
        super().__init__(f"checkpoint {os.fspath(path)}: {message}")
        self.reason = reason
        self.path = os.fspath(path)


def _key_id(key: bytes) -> str:
    """A fingerprint of the signing key: names it in a header without revealing it."""
    return hmac.new(key, b"evocluster checkpoint key id", hashlib.sha256).hexdigest()[:16]


def save(
    path: os.PathLike[str] | str,
    state: Any,
    *,
    algorithm: str,
    seed: int | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``state`` to ``path`` atomically and signed; return the header written.

    Args:
        state: anything plain pickle can store (no lambdas or other code by value).
        algorithm: what wrote it (``"generational"``, ``"deap-loop"``, ...): checked on load.
        seed: the run's seed, checked on load (``None``: not seeded).
        extra: more JSON-able header fields (the job's file name, the evaluations done, ...).

    Raises:
        CheckpointError: ``state`` cannot be pickled, or the file cannot be written (the previous
            checkpoint at ``path``, if any, is left as it was).
    """
    path = Path(path)
    try:
        body = pickle.dumps(state, protocol=5)
    except Exception as e:
        raise CheckpointError(
            "unwritable", path, f"the state cannot be pickled ({type(e).__name__}: {e})"
        ) from e
    key = signing.load_key(create=True)
    header = {
        **(extra or {}),
        "format": FORMAT,
        "evocluster": __version__,
        "algorithm": algorithm,
        "seed": seed,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "body_bytes": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "key": _key_id(key),
    }
    head = json.dumps(header, sort_keys=True).encode("utf-8")
    tag = signing.sign(key, [MAGIC, head, body])
    _write_atomically(path, [MAGIC, _LEN.pack(len(head)), head, tag, body])
    return header


def _write_atomically(path: Path, parts: Iterable[bytes]) -> None:
    """Write ``parts`` to a temporary file beside ``path``, fsync, rename over ``path``, fsync
    the directory.  The temporary file is removed on any failure (a signal's exception too); one
    that a SIGKILL leaves behind is removed by the next run that holds ``path`` (:func:`hold`).

    Raises:
        CheckpointError: ``unwritable``, naming the path and why (the ``OSError``'s text, and
            what to do for a read-only file system, a missing directory, a full disk...).
    """
    directory = path.parent if str(path.parent) else Path(".")
    tmp = directory / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    created = False  # only a file this call created is removed: the cleanup must not fail
    # in turn (EROFS from unlink on a read-only file system) and replace the real error
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        created = True
        with os.fdopen(fd, "wb") as fh:
            for part in parts:
                fh.write(part)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        created = False  # renamed: nothing left to remove
    except OSError as e:
        # one traceback: the message carries the OSError's text (errno, file name)
        raise CheckpointError("unwritable", path, _cannot_write("write it", e, directory)) from None
    finally:
        if created:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    with contextlib.suppress(OSError):  # the rename itself survives a crash of the machine
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _cannot_write(what: str, e: OSError, directory: Path) -> str:
    """``cannot <what> (<the error>)``: why a checkpoint (or its lock file) cannot be written in
    ``directory``, and what to do."""
    hint = {
        errno.EROFS: "its file system is read-only: give a checkpoint path on a writable one",
        errno.EACCES: f"this user may not write in {directory}: give a checkpoint path in a "
        "directory of yours",
        errno.EPERM: f"this user may not write in {directory}: give a checkpoint path in a "
        "directory of yours",
        errno.ENOENT: f"its directory {directory} does not exist: create it, or give another "
        "checkpoint path",
        errno.ENOSPC: "its file system is full: free space, or give a checkpoint path on another",
        errno.EDQUOT: "this user's disk quota is used up: free space, or give a checkpoint path "
        "on another file system",
    }.get(e.errno or 0)
    return f"cannot {what} ({e})" + (f": {hint}" if hint else "")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError("missing", path, "no such file") from None
    except IsADirectoryError:
        raise CheckpointError(
            "not-a-checkpoint", path, "it is a directory: give the path of a checkpoint file"
        ) from None
    except OSError as e:
        raise CheckpointError("missing", path, f"cannot read it ({e})") from e


def _read(path: Path) -> tuple[dict[str, Any], bytes, bytes, bytes]:
    """``(header, header bytes, tag, body)`` of ``path``, its framing checked."""
    data = _read_bytes(path)
    if not data.startswith(MAGIC):
        if MAGIC.startswith(data):
            raise CheckpointError("truncated", path, f"only {len(data)} bytes: it was cut short")
        raise CheckpointError(
            "not-a-checkpoint", path, "not an evocluster checkpoint (its first bytes differ)"
        )
    at = len(MAGIC)
    if len(data) < at + _LEN.size:
        raise CheckpointError("truncated", path, f"only {len(data)} bytes: it was cut short")
    (size,) = _LEN.unpack_from(data, at)
    at += _LEN.size
    if size > _MAX_HEADER:
        raise CheckpointError("corrupted", path, f"its header length ({size}) is damaged")
    if len(data) < at + size + signing.TAG_SIZE:
        raise CheckpointError("truncated", path, f"only {len(data)} bytes: it was cut short")
    head = data[at : at + size]
    try:
        header = json.loads(head.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("not an object")
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError("corrupted", path, f"its header is damaged ({e})") from None
    at += size
    tag = data[at : at + signing.TAG_SIZE]
    body = data[at + signing.TAG_SIZE :]
    return header, head, tag, body


def read_header(path: os.PathLike[str] | str) -> dict[str, Any]:
    """The header of the checkpoint at ``path``, without checking its signature or loading its
    body (for messages and ``status``; use :func:`load` to trust it).

    Raises:
        CheckpointError: the file is missing, not a checkpoint, truncated or its header damaged.
    """
    return _read(Path(path))[0]


def load(
    path: os.PathLike[str] | str,
    *,
    algorithm: str | None = None,
    seed: int | None = None,
) -> tuple[dict[str, Any], Any]:
    """Verify and load the checkpoint at ``path``; return ``(header, state)``.

    Nothing is unpickled before the file is known to be complete, intact, of a format this
    evocluster reads, and signed with this user's key.

    Args:
        algorithm: if given, the checkpoint must have been written by this algorithm.
        seed: if given, the checkpoint must belong to a run with this seed.

    Raises:
        CheckpointError: with :attr:`~CheckpointError.reason` naming what is wrong.
    """
    path = Path(path)
    header, head, tag, body = _read(path)
    version = header.get("format")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError("corrupted", path, f"its header names no format ({version!r})")
    if version > FORMAT:
        raise CheckpointError(
            "future-version",
            path,
            f"written by evocluster {header.get('evocluster')} in checkpoint format {version}; "
            f"this evocluster ({__version__}) reads format {FORMAT} and older: upgrade it",
        )
    if len(body) < int(header.get("body_bytes", -1)):
        raise CheckpointError(
            "truncated",
            path,
            f"its body has {len(body)} of {header.get('body_bytes')} bytes: it was cut short",
        )
    if len(body) != header.get("body_bytes") or (
        hashlib.sha256(body).hexdigest() != header.get("body_sha256")
    ):
        raise CheckpointError(
            "corrupted",
            path,
            "its body does not match the checksum in its header: it was damaged or edited after "
            "it was written; it is not loaded",
        )
    key = signing.load_key(create=False)
    if header.get("key") != _key_id(key):
        raise CheckpointError(
            "foreign-key",
            path,
            "it was signed with another evocluster key (another user, or another "
            f"{signing.KEY_ENV}); it is loaded only with the key that wrote it",
        )
    if not signing.verify(key, tag, [MAGIC, head, body]):
        # the body matches the checksum in the header, but the header may have been rewritten
        # with it: this says nothing of which part changed, only that the file did
        raise CheckpointError(
            "tampered",
            path,
            "its signature does not verify: it was changed after it was written (its header or "
            "tag; or its body, with the checksum in the header changed to match); it is not "
            "loaded",
        )
    for name, want in (("algorithm", algorithm), ("seed", seed)):
        if want is not None and header.get(name) != want:
            raise CheckpointError(
                "mismatch",
                path,
                f"it belongs to a run with {name} {header.get(name)!r}, not {want!r}: resume "
                "the run that wrote it, or start afresh with another checkpoint path",
            )
    return header, pickle.loads(body)


class Checkpoint:
    """A checkpoint file for a loop of the job's own (a DEAP loop, an ask/tell loop).

    ``save(state)`` stores ``state`` with Python's ``random`` state and numpy's global random
    state; ``load()`` restores both and returns ``state``, so a resumed loop draws what an
    uninterrupted one would have drawn.  After :meth:`watch_signals`, :attr:`stop_requested` turns
    true on SIGUSR1 or SIGTERM, the batch system's warning before the wall-time limit::

        ckpt = evocluster.Checkpoint("run.ckpt", seed=42).watch_signals()
        state = ckpt.load() if ckpt.exists() else {"gen": 0, "pop": initial()}
        while state["gen"] < NGEN:
            ...one generation...
            state["gen"] += 1
            if ckpt.stop_requested:
                ckpt.save(state)
                sys.exit(evocluster.checkpoint.EXIT_TEMPFAIL)  # 75: run me again to resume

    Args:
        path: the file; default: the launcher's ``--checkpoint`` (or ``EVOCLUSTER_CHECKPOINT``,
            which ``python -m evocluster submit --checkpoint PATH`` sets).
        seed: the run's seed; a checkpoint of another seed is refused on load.
        algorithm: a name for what writes it (default ``"job-loop"``), checked on load.
    """

    def __init__(
        self,
        path: os.PathLike[str] | str | None = None,
        *,
        seed: int | None = None,
        algorithm: str = "job-loop",
    ) -> None:
        if path is None:
            path = defaults().path
        if path is None:
            raise ConfigurationError(
                "Checkpoint() needs a path: give one, or launch with `python -m evocluster "
                f"--checkpoint PATH job.py` (or set {CHECKPOINT_ENV})"
            )
        self.path = Path(path)
        self.seed = seed
        self.algorithm = algorithm
        self.signal: int | None = None  # the signal that asked to stop, once one did

    @property
    def stop_requested(self) -> bool:
        """Whether SIGUSR1 or SIGTERM arrived since :meth:`watch_signals`."""
        return self.signal is not None

    def watch_signals(
        self, signals: Iterable[int] = (signal.SIGUSR1, signal.SIGTERM)
    ) -> Checkpoint:
        """Set :attr:`stop_requested` on these signals instead of dying (main thread only)."""

        def asked(signum: int, frame: FrameType | None) -> None:
            self.signal = signum

        for signum in signals:
            signal.signal(signum, asked)
        return self

    def exists(self) -> bool:
        """Whether the checkpoint file exists (it may still be refused by :meth:`load`)."""
        return self.path.exists()

    def save(self, state: Any) -> None:
        """Store ``state`` and the global random states, atomically.

        Raises:
            CheckpointError: ``locked`` (another run holds the path: see :func:`hold`),
                ``unwritable``.
        """
        hold(self.path)
        numpy = sys.modules.get("numpy")
        randoms = {
            "random": random.getstate(),
            "numpy": numpy.random.get_state() if numpy is not None else None,
        }
        save(
            self.path,
            {"state": state, "randoms": randoms},
            algorithm=self.algorithm,
            seed=self.seed,
        )

    def load(self) -> Any:
        """The state saved last; Python's and numpy's global random states are restored.

        Raises:
            CheckpointError: missing, damaged, foreign, of another seed or algorithm, or
                ``locked`` (another run holds the path: see :func:`hold`).
        """
        hold(self.path)  # a run that resumes from it writes it next
        _, saved = load(self.path, algorithm=self.algorithm, seed=self.seed)
        randoms = saved["randoms"]
        random.setstate(randoms["random"])
        if randoms["numpy"] is not None:
            import numpy

            numpy.random.set_state(randoms["numpy"])
        return saved["state"]


# ---------------------------------------------------------------------------- one run per path
# Two runs writing one checkpoint path overwrite each other, and one of them loses its work
# without a word.  So a path is held by one process at a time: a POSIX record lock
# (``fcntl.lockf``) on a side file, ``<path>.lock`` -- the checkpoint itself is replaced by a
# rename at every write, so a lock on it would not outlive the first write.  The kernel (or the
# NFS server's lock manager) releases it when the process dies, however it dies, so a lock is
# never stale; the file stays, holding who took the lock last (for the message of a run that is
# refused).  POSIX locks belong to the process and vanish when *any* descriptor of the file
# that process has is closed: the descriptor is opened once per path and never closed, and
# nothing else in the process opens the file.

#: Seconds a requeued SLURM job waits for a lock still held by its own previous run (see
#: :func:`hold`).
REQUEUE_WAIT = 300.0
_LOCK_POLL = 2.0  # seconds between two tries while waiting for it
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)  # a file system without locks
_held: dict[str, tuple[int, int]] = {}  # lock file (real path) -> (pid, descriptor)
_held_lock = threading.Lock()  # loops may start in threads of the job


def lock_path(path: os.PathLike[str] | str) -> Path:
    """The side file whose lock says which run holds checkpoint ``path``: ``<path>.lock``."""
    p = Path(path)
    return p.with_name(p.name + ".lock")


def hold(path: os.PathLike[str] | str) -> None:
    """Make this process the one run that writes checkpoint ``path``, until it exits.

    The launcher's ``--checkpoint`` takes it at start; an engine loop given ``checkpoint=PATH``
    and :class:`Checkpoint` take it when they begin.  Taken again by the same process, it is
    already held (a job may run several loops on one path).  Once held, the temporary files an
    interrupted write of ``path`` left behind (a SIGKILL in the middle of one) are removed: no
    other process may be writing there.

    A SLURM job that was requeued (``SLURM_RESTART_COUNT`` > 0) may find the lock still held by
    its own previous run, the same SLURM job id: that run died with its node, and the lock
    lives on until the NFS server's lease on it expires (a minute or two).  It then waits for
    the lock, sleeping, up to :data:`REQUEUE_WAIT` seconds, instead of being refused.  On a file
    system that does not support locks, a one-line warning says that two runs would not be
    told apart, and the run goes on.

    Raises:
        CheckpointError: ``locked``, naming the run that holds it (host, pid, since when, its
            SLURM job); ``not-a-checkpoint``: ``path`` is a directory; ``unwritable``: its lock
            file cannot be created (a read-only file system, a missing directory...).
    """
    target = Path(path)
    if target.is_dir():
        raise CheckpointError(
            "not-a-checkpoint",
            target,
            "it is a directory: give the path of a file for the checkpoint (e.g. "
            f"{target / 'run.ckpt'})",
        )
    lock = lock_path(target)
    key = os.path.realpath(lock)
    with _held_lock:
        held = _held.get(key)
        if held is not None and held[0] == os.getpid():  # (a forked child holds nothing)
            return
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise CheckpointError(
                "unwritable",
                target,
                _cannot_write(f"create its lock file {lock.name}", e, lock.parent),
            ) from None
        try:
            _take(fd, target)
        except BaseException:
            os.close(fd)  # not held: closing it releases nothing of ours
            raise
        _held[key] = (os.getpid(), fd)
    _remove_stale_temporaries(target)


def _take(fd: int, target: Path) -> None:
    """Lock ``fd`` (the lock file of ``target``) and write this run's description into it."""
    deadline: float | None = None
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as e:
            if e.errno in _NO_LOCKS:
                print(
                    f"evocluster: checkpoint {target}: its file system does not support locks "
                    f"({e.strerror}): a second run given the same path would not be refused",
                    file=sys.stderr,
                    flush=True,
                )
                return
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                raise CheckpointError(
                    "unwritable", target, f"cannot lock its lock file ({e})"
                ) from None
        holder = _holder(fd)
        if not _previous_run_of_this_job(holder):
            raise CheckpointError(
                "locked",
                target,
                f"it is in use by another run ({_describe(holder)}): two runs must not write "
                "one checkpoint. Wait for that run to end, or give this one another checkpoint "
                "path",
            )
        now = time.monotonic()
        if deadline is None:
            deadline = now + REQUEUE_WAIT
            print(
                f"evocluster: checkpoint {target} is still held by this SLURM job's previous run "
                f"({_describe(holder)}), whose node went away: waiting up to {REQUEUE_WAIT:g} s "
                "for its lock to expire",
                file=sys.stderr,
                flush=True,
            )
        elif now >= deadline:
            raise CheckpointError(
                "locked",
                target,
                f"it is still held by this SLURM job's previous run ({_describe(holder)}) after "
                f"{REQUEUE_WAIT:g} s: if that run is gone, its lock lives on in the file "
                "server; requeue the job again later, or remove the lock on the server",
            )
        time.sleep(_LOCK_POLL)
    record = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "slurm_job": os.environ.get("SLURM_JOB_ID") or None,
    }
    with contextlib.suppress(OSError):  # the lock is what counts; its description helps
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode() + b"\n", 0)


def _holder(fd: int) -> dict[str, Any]:
    """What the run holding the lock wrote into it (``{}`` if it has not yet)."""
    for _ in range(10):  # the holder writes just after it locks: give it a moment
        with contextlib.suppress(OSError, ValueError):
            record = json.loads(os.pread(fd, 4096, 0).decode())
            if isinstance(record, dict):
                return record
        time.sleep(0.05)
    return {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "a process that has not said which yet"
    job = holder.get("slurm_job")
    return f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('since')}" + (
        f", SLURM job {job}" if job else ""
    )


def _previous_run_of_this_job(holder: dict[str, Any]) -> bool:
    """Whether the holder is this very SLURM job before SLURM requeued it."""
    job = os.environ.get("SLURM_JOB_ID")
    return bool(job) and config.slurm_restart_count() > 0 and holder.get("slurm_job") == job


def _remove_stale_temporaries(target: Path) -> None:
    """Remove what interrupted writes of ``target`` left (``.<name>.<pid>.<hex>.tmp``; a write
    removes its own unless SIGKILL ends it), except this process's own."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(\d+)\.[0-9a-f]+\.tmp")
    directory = target.parent if str(target.parent) else Path(".")
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            m = pattern.fullmatch(entry.name)
            if m and int(m.group(1)) != os.getpid():
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


class Interrupted(SystemExit):
    """An engine loop stopped on SIGUSR1 or SIGTERM after writing its checkpoint.

    A ``SystemExit`` with code :data:`EXIT_TEMPFAIL` (75): uncaught, the process (plain
    ``python job.py`` or the launcher) exits with 75, "run me again", and the run resumes with
    ``--resume`` / ``resume=True`` (automatically when SLURM requeues the job).

    Attributes:
        message: what stopped, where, and where the checkpoint is.
        path: the checkpoint file.
        signal: the signal that asked to stop.
        state: the engine state saved (an :class:`evocluster.engine.State`, or ``None`` for an
            ask/tell loop stopped before its first iteration).
    """

    def __init__(self, message: str, path: os.PathLike[str] | str, signum: int, state: Any):
        super().__init__(EXIT_TEMPFAIL)
        self.message = message
        self.path = os.fspath(path)
        self.signal = signum
        self.state = state

    def __str__(self) -> str:
        return self.message


def set_defaults(
    path: os.PathLike[str] | str | None = None,
    *,
    every: float | None = None,
    every_generations: int | None = None,
    resume: bool = False,
) -> None:
    """Set the process-wide checkpoint options of engine loops (the launcher does, from its
    command line; see :class:`Defaults`).  ``set_defaults()`` clears them.

    From then until the first engine loop starts, a SIGUSR1 or SIGTERM is noted, and that loop
    takes it (it writes its checkpoint and stops with exit code 75).

    Raises:
        ConfigurationError: a bad period, or ``resume`` without ``path``.
    """
    _options.set_defaults(path, every=every, every_generations=every_generations, resume=resume)
    if path is None:
        return
    # Held from now on when it can be.  Not raised here: the launcher takes it itself, to
    # refuse a path in use as a usage error before any worker starts (cli._checkpoint_options,
    # or _start_master under MPI); elsewhere the first loop that uses the path takes it again
    # and raises then.
    with contextlib.suppress(CheckpointError):
        hold(path)
