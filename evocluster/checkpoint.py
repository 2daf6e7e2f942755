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
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import hmac
import json
import os
import pickle
import random
import secrets
import signal
import struct
import sys
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import Any

from . import __version__, signing
from .errors import EvoclusterError

__all__ = [
    "EXIT_TEMPFAIL",
    "FORMAT",
    "MAGIC",
    "Checkpoint",
    "CheckpointError",
    "load",
    "read_header",
    "save",
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
        reason: one word for what is wrong: ``missing``, ``not-a-checkpoint``, ``truncated``,
            ``corrupted``, ``future-version``, ``foreign-key``, ``tampered``, ``mismatch``
            (another algorithm or seed) or ``unwritable``.
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
    the directory.  The temporary file is removed on any failure (a signal's exception too)."""
    directory = path.parent if str(path.parent) else Path(".")
    tmp = directory / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            for part in parts:
                fh.write(part)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise CheckpointError("unwritable", path, f"cannot write it ({e})") from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    with contextlib.suppress(OSError):  # the rename itself survives a crash of the machine
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _read(path: Path) -> tuple[dict[str, Any], bytes, bytes, bytes]:
    """``(header, header bytes, tag, body)`` of ``path``, its framing checked."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError("missing", path, "no such file") from None
    except OSError as e:
        raise CheckpointError("missing", path, f"cannot read it ({e})") from e
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
        raise CheckpointError("corrupted", path, "its body does not match its checksum")
    key = signing.load_key(create=False)
    if header.get("key") != _key_id(key):
        raise CheckpointError(
            "foreign-key",
            path,
            "it was signed with another evocluster key (another user, or another "
            f"{signing.KEY_ENV}); it is loaded only with the key that wrote it",
        )
    if not signing.verify(key, tag, [MAGIC, head, body]):
        raise CheckpointError(
            "tampered",
            path,
            "its signature does not verify although its body is intact: the header or tag was "
            "changed after it was written; it is not loaded",
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
        path: the file.
        seed: the run's seed; a checkpoint of another seed is refused on load.
        algorithm: a name for what writes it (default ``"job-loop"``), checked on load.
    """

    def __init__(
        self, path: os.PathLike[str] | str, *, seed: int | None = None, algorithm: str = "job-loop"
    ) -> None:
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
        """Store ``state`` and the global random states, atomically."""
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
            CheckpointError: missing, damaged, foreign, or of another seed or algorithm.
        """
        _, saved = load(self.path, algorithm=self.algorithm, seed=self.seed)
        randoms = saved["randoms"]
        random.setstate(randoms["random"])
        if randoms["numpy"] is not None:
            import numpy

            numpy.random.set_state(randoms["numpy"])
        return saved["state"]
