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
* The tag is HMAC-SHA256 (:mod:`evocluster.signing`, the per-user key that also signs SCOOP
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
(a job that runs 30 seeds one after the other resumes in the loop it was in; the finished ones
return their stored result without evaluating anything).  While such a loop runs,
:class:`StopSignals` turns SIGUSR1 and SIGTERM into a stop at the next safe point, and the loop
raises :class:`Interrupted` (exit code :data:`EXIT_TEMPFAIL`) once its checkpoint is written.

One run writes a path at a time: the launcher's ``--checkpoint``, an engine loop's
``checkpoint=`` and :class:`Checkpoint` hold it (:func:`hold`, a POSIX lock on ``<path>.lock``,
released when the process ends, however it ends), and another run given the same path is
refused with a message naming the holder.  An engine loop's entry records what it belongs to:
the job (its file's name or ``-m`` module), the fitness's qualified name and the settings that
shape the run (population, operators, probabilities, weights...); resuming it with others is
refused, naming what differs.  Entries written before these were recorded resume unchecked.
"""

from __future__ import annotations

import atexit
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
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, NamedTuple

from . import __version__, config, signing
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
    "StopSignals",
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


# ---------------------------------------------------------------------------- engine loops
#: Seconds between an engine loop's checkpoints when neither its keywords nor the launcher say
#: (besides the one written when it starts, at a stop, and when it ends).
DEFAULT_EVERY = 60.0


class Defaults(NamedTuple):
    """The launcher's checkpoint options, read by every engine loop whose own keyword is not
    given (``checkpoint=``, ``checkpoint_every=``, ``checkpoint_every_generations=``,
    ``resume=``).

    Attributes:
        path: ``--checkpoint PATH``; ``None``: loops checkpoint only when asked by keyword.
        every: ``--checkpoint-every SECONDS``.
        every_generations: ``--checkpoint-every-generations N``.
        resume: ``--resume``: continue the run checkpointed at ``path``.
    """

    path: str | None = None
    every: float | None = None
    every_generations: int | None = None
    resume: bool = False


_defaults = Defaults()


def check_every(every: float | None, every_generations: int | None) -> None:
    """Validate a checkpoint period.

    Raises:
        ConfigurationError: (a ``ValueError``) a negative period, or fewer than 1 generation.
    """
    if every is not None and not every >= 0:
        raise ConfigurationError(f"checkpoint_every must be >= 0 seconds, not {every!r}")
    if every_generations is not None and every_generations < 1:
        raise ConfigurationError(
            f"checkpoint_every_generations must be >= 1, not {every_generations!r}"
        )


def set_defaults(
    path: os.PathLike[str] | str | None = None,
    *,
    every: float | None = None,
    every_generations: int | None = None,
    resume: bool = False,
) -> None:
    """Set the process-wide checkpoint options of engine loops (the launcher does, from its
    command line; see :class:`Defaults`).  ``set_defaults()`` clears them.

    Raises:
        ConfigurationError: a bad period, or ``resume`` without ``path``.
    """
    global _defaults
    check_every(every, every_generations)
    if path is None and (resume or every is not None or every_generations is not None):
        raise ConfigurationError("--resume and --checkpoint-every* need --checkpoint PATH")
    _defaults = Defaults(
        None if path is None else os.fspath(path), every, every_generations, bool(resume)
    )
    if path is None:
        _early_signals(False)
        return
    _early_signals(True)
    # Held from now on when it can be.  Not raised here: the launcher takes it itself, to
    # refuse a path in use as a usage error before any worker starts (cli._checkpoint_options,
    # or _start_master under MPI); elsewhere the first loop that uses the path takes it again
    # and raises then.
    with contextlib.suppress(CheckpointError):
        hold(path)


# A stop signal (SIGUSR1, SIGTERM) that arrives after the launcher has set the options of a
# checkpointing run but before its first engine loop has installed its own handler
# (StopSignals) would end the process with 138 or 143 and no word.  From set_defaults until
# the first loop starts, it is noted instead, and that loop takes it: it writes its checkpoint
# and stops with exit code 75.  A job that ends without any loop having started says so in one
# line at exit.  Once a loop has started, the signal goes where it would have gone without this.
_EARLY = (signal.SIGUSR1, signal.SIGTERM)
_early_before: dict[int, Any] = {}  # signal -> its handler before _on_early_signal took it
_early_open = False  # between set_defaults and the first loop
_early_pending: int | None = None  # the first stop signal of that window, not yet taken
_early_atexit = False


def _early_signals(install: bool) -> None:
    """Note stop signals until the first loop starts (``install``), or stop noting them."""
    global _early_open, _early_pending, _early_atexit
    if threading.current_thread() is not threading.main_thread():
        return
    for signum, before in list(_early_before.items()):  # give back what was taken
        if signal.getsignal(signum) is _on_early_signal:
            signal.signal(signum, before)
        del _early_before[signum]
    _early_open, _early_pending = install, None
    if not install:
        return
    for signum in _EARLY:
        before = signal.getsignal(signum)
        if before in (signal.SIG_DFL, signal.SIG_IGN):  # a job's own handler is left alone
            _early_before[signum] = before
            signal.signal(signum, _on_early_signal)
    if not _early_atexit:
        _early_atexit = True
        atexit.register(_say_unheeded)


def _on_early_signal(signum: int, frame: FrameType | None) -> None:
    global _early_pending
    if _early_open:
        if _early_pending is None:
            _early_pending = signum
        return
    before = _early_before.get(signum, signal.SIG_DFL)
    if before == signal.SIG_IGN:
        return
    # Without this handler the signal would have ended the process; for SIGTERM, the launcher's
    # own exit handler would have taken it over (it takes over SIGINT, SIGTERM and SIGHUP where
    # they have their default action, and is marked ``ends_process``): the run ends as it does.
    launcher = signal.getsignal(signal.SIGINT)
    if signum == signal.SIGTERM and callable(launcher) and getattr(launcher, "ends_process", False):
        launcher(signum, frame)
        return
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


# a stopped loop on its way out with 75 ignores this signal then (StopSignals.__exit__)
_on_early_signal.ends_process = True  # type: ignore[attr-defined]


def _take_early_signal() -> int | None:
    """The first loop starts (in the main thread): the stop signal noted before, if any."""
    global _early_open, _early_pending
    signum, _early_open, _early_pending = _early_pending, False, None
    return signum


def _say_unheeded() -> None:
    if _early_pending is not None:
        name = signal.Signals(_early_pending).name
        with contextlib.suppress(Exception):
            print(
                f"evocluster: {name} arrived while no engine loop was running, and none started "
                "after it: nothing was checkpointed for it (the job ran to its end)",
                file=sys.stderr,
                flush=True,
            )


#: The checkpoint path of a run that was not started by evocluster's launcher (under SCOOP, say):
#: what ``python -m evocluster submit --checkpoint PATH`` exports to the job.
CHECKPOINT_ENV = "EVOCLUSTER_CHECKPOINT"


def defaults() -> Defaults:
    """The options :func:`set_defaults` set (the launcher's ``--checkpoint``...); without them,
    a path in ``EVOCLUSTER_CHECKPOINT``; else none."""
    if _defaults.path is None and os.environ.get(CHECKPOINT_ENV):
        return Defaults(path=os.environ[CHECKPOINT_ENV])
    return _defaults


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


class _Stop(BaseException):
    """Raised by :class:`StopSignals`' handler in the main thread, only while it is blocked
    waiting for evaluations.  A ``BaseException``, so that no ``except Exception`` on the way
    (the evaluator's, the executor's) mistakes it for a failed evaluation."""


def _wait_lines() -> frozenset[int]:
    """Line numbers of ``threading.Condition.wait`` inside its ``try`` (the blocking
    ``waiter.acquire``): an exception raised there is undone by the method's own ``finally``
    (it is written for KeyboardInterrupt).  Anywhere else in a wait -- between releasing the
    lock and the ``try``, in the ``finally`` re-acquiring it, in ``_AcquireFutures`` taking
    several locks one by one -- an exception would leave a lock released twice or held for ever.
    Empty if the source cannot be read: then a stop waits for the next safe point."""
    import inspect

    try:
        lines, first = inspect.getsourcelines(threading.Condition.wait)
    except (OSError, TypeError):
        return frozenset()
    inside, found = False, set()
    for number, line in enumerate(lines, first):
        text = line.strip()
        if text.startswith("finally:"):
            break
        if inside and "waiter.acquire(" in text:
            found.add(number)
        inside = inside or text.startswith("try:")
    return frozenset(found)


_WAIT_CODE = threading.Condition.wait.__code__
_WAIT_LINES: frozenset[int] | None = None  # found once, by the first StopSignals (not in a handler)


def _blocked_in_wait(frame: FrameType | None) -> bool:
    """Whether the main thread, interrupted in ``frame``, was blocked in a condition's wait."""
    if frame is None or frame.f_code is not _WAIT_CODE or _WAIT_LINES is None:
        return False
    return frame.f_lineno in _WAIT_LINES


class _Waiting:
    """The context of a wait for evaluations (``with signals.waiting:``), reusable."""

    __slots__ = ("_signals",)

    def __init__(self, signals: StopSignals) -> None:
        self._signals = signals

    def __enter__(self) -> None:
        s = self._signals
        s.armed = True
        if s.signal is not None and not s.raised:
            # asked before this wait began (looked at after arming: no gap): delivered again
            # once the wait blocks, inside the executor's iterator or future, whose own
            # clean-up then cancels what it holds (an iterator not yet started has none)
            s.poke()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        s = self._signals
        s.armed = False
        if kind is not None and s.signal is not None:
            s.failed = True  # an error in a wait after the signal: part of the stop


def _leaving(signum: int, frame: FrameType | None) -> None:
    """The handler of a stop signal once a loop has stopped and the process leaves with 75: the
    checkpoint is written, so the signal has nothing more to ask.  (A Python handler, not
    ``SIG_IGN``, which programs the process starts would inherit.)"""


class StopSignals:
    """SIGUSR1 and SIGTERM, while an engine loop runs (``with StopSignals() as s:``), ask it to
    stop at the next safe point instead of ending the process.

    Outside a wait for evaluations the handler only notes the signal (:attr:`signal`); the loop
    looks at it between generations.  Inside ``with s.waiting:`` (the loop is waiting for the
    workers) the handler raises a private ``BaseException`` in the main thread, but only while
    that thread is blocked in ``threading.Condition.wait`` -- the one place an exception there is
    cleaned up after (the wait's own ``finally``, as for Ctrl-C); the executor's map iterator or
    future is abandoned and its evaluations not yet started are cancelled.  A signal that finds
    the main thread busy elsewhere in a wait, or that came before the wait began, is delivered
    again to it by a helper thread (woken through a pipe: the handler takes no lock), after
    10 ms and then less and less often, until the wait is interrupted or over.  A second signal
    while the checkpoint is written is only noted: the handler never raises outside a wait.

    Only the main thread can install signal handlers: elsewhere this does nothing (the loop
    still writes its periodic checkpoints).  A signal whose handler was not installed from
    Python (``signal.getsignal`` is ``None``) is left alone.  The previous handlers are
    restored on exit, with one exception: when the loop leaves with :class:`Interrupted` (its
    checkpoint written, the process on its way out with 75), a signal whose previous action
    was to end the process (the default, or evocluster's exit handler, marked ``ends_process``)
    is ignored from then on.  Another SIGUSR1 or SIGTERM on the way out (a second warning, an
    evaluation still running that signals) would otherwise end it with 138 or 143, not 75, and
    a batch script would not requeue the job.

    Attributes:
        signal: the first signal received, or ``None``.
        raised: whether the stop was raised in a wait.
        failed: whether an exception left a wait after the signal (part of the stop).
    """

    #: Seconds before a pending stop is delivered again to a main thread not yet blocked in a
    #: wait, doubled after each attempt up to RETRY_MAX (a wait that never blocks in a
    #: condition -- SCOOP's, which drives SCOOP -- is not signalled 100 times a second; its stop
    #: comes at the next safe point).
    RETRY = 0.01
    RETRY_MAX = 1.0

    def __init__(self, signals: Iterable[int] = (signal.SIGUSR1, signal.SIGTERM)) -> None:
        self.signals = tuple(signals)
        self.signal: int | None = None
        self.raised = False
        self.failed = False
        self.armed = False  # in a wait for evaluations: the handler may raise
        self.waiting = _Waiting(self)
        self._previous: dict[int, Any] = {}
        self._pipe: tuple[int, int] | None = None  # wakes the helper thread
        self._helper: threading.Thread | None = None
        self._closing = False

    def __enter__(self) -> StopSignals:
        global _WAIT_LINES
        if threading.current_thread() is not threading.main_thread():
            return self
        if _WAIT_LINES is None:
            _WAIT_LINES = _wait_lines()
        for signum in self.signals:
            if signal.getsignal(signum) is not None:
                self._previous[signum] = signal.signal(signum, self._handler)
        # one that came before any loop had started; taken once this loop's handler is in
        # place: a signal in between is noted by one or the other, never left to the default
        # action (death by the signal, 138 or 143 and no word)
        early = _take_early_signal()
        if early is not None:
            self.signal = early
        if self._previous:
            self._pipe = os.pipe()
            os.set_blocking(self._pipe[1], False)  # the handler never waits on a full pipe
            main = threading.main_thread().ident
            assert main is not None
            self._helper = threading.Thread(
                target=self._redeliver, args=(main,), name="evocluster-stop", daemon=True
            )
            self._helper.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.armed = False
        self._closing = True  # first: the helper delivers nothing more...
        if self._pipe is not None and self._helper is not None:
            with contextlib.suppress(OSError):
                os.write(self._pipe[1], b"q")
            self._helper.join(5)  # ...and has stopped before the old handlers come back
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None
        leaving = isinstance(exc, Interrupted)
        for signum, previous in self._previous.items():
            ends = previous == signal.SIG_DFL or getattr(previous, "ends_process", False)
            # a late signal must not turn exit 75 into death by signal
            signal.signal(signum, _leaving if leaving and ends else previous)
        self._previous.clear()

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is None:
            self.signal = signum
        if not self.armed or self.raised:
            return
        if _blocked_in_wait(frame):
            self.armed = False
            self.raised = True
            raise _Stop(self.signal)
        self.poke()  # busy in the wait: deliver it again in a moment

    def poke(self) -> None:
        """Have the helper thread deliver the signal again to the main thread (no lock: safe
        in the handler)."""
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                os.write(self._pipe[1], b"s")

    def _redeliver(self, main: int) -> None:
        """The helper thread: on each wake-up, deliver the signal to the main thread again after
        :attr:`RETRY` seconds, then less and less often, until it is raised, the wait is over,
        or the loop ends."""
        assert self._pipe is not None
        with contextlib.suppress(OSError, ValueError):  # the pipe closed: the loop has ended
            self._serve(self._pipe[0], main)

    def _serve(self, reader: int, main: int) -> None:
        while True:
            data = os.read(reader, 64)
            if not data or b"q" in data:
                return
            delay = self.RETRY
            while True:
                until = time.monotonic() + delay  # more pokes (one per delivery) do not hurry it
                while (left := until - time.monotonic()) > 0:
                    if select.select([reader], [], [], left)[0] and b"q" in os.read(reader, 64):
                        return  # the loop ends
                if self._closing or self.raised or not self.armed or self.signal is None:
                    break
                signal.pthread_kill(main, self.signal)
                delay = min(2 * delay, self.RETRY_MAX)

    def is_stop(self, exc: BaseException) -> bool:
        """Whether ``exc``, leaving the loop, is its stop: the handler's, or an error that left
        a wait after the signal (a lost worker, say, when the whole job was sent SIGTERM)."""
        return isinstance(exc, _Stop) or (
            self.signal is not None and self.failed and isinstance(exc, Exception)
        )


# The runs of engine loops, by checkpoint file: a file holds one entry per loop the job ran
# with it, in order, {"engine": 1, "loops": [entry, ...]}; an entry is a dict with at least
# "algorithm", "seed" and "finished" (None: that loop wrote nothing).
_ENGINE_LAYOUT = 1


class _Run:
    __slots__ = ("entries", "next")

    def __init__(self, entries: list[dict[str, Any] | None]) -> None:
        self.entries = entries
        self.next = 0  # the index of the next loop that uses this file


_runs: dict[str, _Run] = {}  # absolute path -> the run this process writes there
_runs_lock = threading.Lock()  # loops may start in threads of the job (without signals, then)


def job_name() -> str | None:
    """The job this process runs, as an engine checkpoint records it: its file's name (not its
    directory: the same job resumed from another working directory, or from a copy of the
    project, is itself) or its ``-m`` module; ``None`` without either (``python -c``, an
    interactive session), which is then not compared."""
    from . import jobfile  # the master's: its job runs as __main__ (the launcher's, SCOOP's...)

    spec = jobfile.spec_for_current_main()
    if spec.module is not None:
        return spec.module
    return os.path.basename(spec.path) if spec.path is not None else None


def slurm_restarted() -> bool:
    """Whether SLURM started this job again (``SLURM_RESTART_COUNT`` > 0: requeued)."""
    return config.slurm_restart_count() > 0


def engine_slot(
    path: os.PathLike[str] | str,
    *,
    algorithm: str,
    seed: int,
    resume: bool | None,
    source: os.PathLike[str] | str | None = None,
) -> tuple[int, dict[str, Any] | None]:
    """Take the next loop's place in the run checkpointed at ``path``; return its index and the
    entry saved there (``None``: the loop starts afresh).

    The first loop of this process that uses ``path`` decides: ``resume`` true reads the run from
    ``source`` (default ``path``); false starts afresh, overwriting it; ``None`` starts afresh
    but refuses to overwrite an existing file.

    Raises:
        CheckpointError: ``missing``, damaged or foreign (see :func:`load`); ``mismatch``: not
            an engine run, or its loop at this index is another algorithm or seed; ``exists``;
            ``locked``: another run holds ``path`` (:func:`hold`, taken here).
    """
    hold(path)
    key = os.path.abspath(os.fspath(path))
    with _runs_lock:
        run = _runs.get(key)
        if run is None:
            run = _Run(_read_run(Path(source or path)) if resume else [])
            if resume is None and os.path.exists(key):
                raise _exists(Path(path))
        index = run.next
        entry = run.entries[index] if index < len(run.entries) else None
        if entry is not None and (entry["algorithm"], entry["seed"]) != (algorithm, seed):
            raise CheckpointError(  # nothing is recorded: the call may be made again
                "mismatch",
                source or path,
                f"loop {index + 1} of the run it holds is {entry['algorithm']}() with seed "
                f"{entry['seed']}, not {algorithm}() with seed {seed}: resume the job that wrote "
                "it with its seed, or start afresh with another checkpoint path",
            )
        _runs[key] = run
        run.next += 1
    return index, entry


def _read_run(path: Path) -> list[dict[str, Any] | None]:
    header, body = load(path)
    if not (
        isinstance(body, dict)
        and body.get("engine") == _ENGINE_LAYOUT
        and isinstance(body.get("loops"), list)
    ):
        raise CheckpointError(
            "mismatch",
            path,
            f"it was written by {header.get('algorithm')!r}, not by evocluster's engine loops: "
            "resume it with what wrote it (evocluster.Checkpoint for a job's own loop)",
        )
    return list(body["loops"])


def _exists(path: Path) -> CheckpointError:
    try:
        h = read_header(path)
        what = f" (a run of {h.get('algorithm')}() with seed {h.get('seed')}, {h.get('created')})"
    except CheckpointError:
        what = ""
    return CheckpointError(
        "exists",
        path,
        f"it exists already{what}: continue that run with --resume (resume=True), or remove "
        "it or choose another path to start afresh (resume=False overwrites it)",
    )


def release_engine_slot(path: os.PathLike[str] | str, index: int) -> None:
    """Give back loop ``index``'s place (taken by :func:`engine_slot`) if no later loop took
    one: it failed before writing anything, and the next call is that loop again."""
    with _runs_lock:
        run = _runs.get(os.path.abspath(os.fspath(path)))
        if run is not None and run.next == index + 1:
            run.next = index


def forget_engine_run(path: os.PathLike[str] | str) -> None:
    """End this process's run at ``path``: the next loop that uses it is the first of a new
    run, as in a new process (an engine loop calls it when a signal stopped it)."""
    with _runs_lock:
        _runs.pop(os.path.abspath(os.fspath(path)), None)


def write_engine_slot(
    path: os.PathLike[str] | str,
    index: int,
    entry: dict[str, Any],
    *,
    extra: dict[str, Any] | None = None,
) -> None:
    """Store ``entry`` as loop ``index`` of the run at ``path`` (see :func:`engine_slot`) and
    write the whole run atomically; the header names this loop's algorithm and seed.

    Raises:
        CheckpointError: ``unwritable`` (the previous file is kept).
    """
    key = os.path.abspath(os.fspath(path))
    with _runs_lock:
        run = _runs.setdefault(key, _Run([]))
        while len(run.entries) <= index:
            run.entries.append(None)
        run.entries[index] = entry
        loops = list(run.entries)
    save(
        path,
        {"engine": _ENGINE_LAYOUT, "loops": loops},
        algorithm=entry["algorithm"],
        seed=entry["seed"],
        extra={**(extra or {}), "loop": index + 1, "loops": len(loops)},
    )
