"""Signing what evocluster sends over links it does not trust: HMAC-SHA256 with a per-user secret.

Pickle runs code while it loads, so a process must never unpickle bytes that anyone able to reach
its sockets could have written.  evocluster signs each payload it sends over such a link (the SCOOP
backend's tasks and results; later, checkpoints) and the receiver checks the tag *before*
unpickling; a payload whose tag does not verify is refused and never loaded.

The secret never travels with the payloads.  It is, in this order:

* ``EVOCLUSTER_KEY`` in the environment (at least :data:`MIN_KEY_CHARS` characters), for hosts that
  do not share a home directory: set the same value on every host;
* the key file ``$XDG_CONFIG_HOME/evocluster/key`` (default ``~/.config/evocluster/key``),
  created on first use with 64 random hexadecimal characters and mode 0600.  On a cluster whose
  nodes share home directories every process of a user finds the same file.

The key is the text of either, stripped and encoded as UTF-8, so ``EVOCLUSTER_KEY="$(cat
~/.config/evocluster/key)"`` gives the same key as the file.

The tag covers the number of frames and each frame's length and bytes, so frames cannot be split,
joined or reordered without breaking it.  It proves who wrote a payload, not when: this module
does not stop a recorded payload from being sent again (callers that care add their own ids).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import ConfigurationError

__all__ = ["KEY_ENV", "MIN_KEY_CHARS", "TAG_SIZE", "key_path", "load_key", "sign", "verify"]

#: The environment variable that holds the key (it wins over the key file).
KEY_ENV = "EVOCLUSTER_KEY"
#: Shortest key accepted, in characters (the key file holds 64 hexadecimal characters: 256 bits).
MIN_KEY_CHARS = 32
#: Length of a tag in bytes (SHA-256).
TAG_SIZE = 32


def key_path() -> Path:
    """Where the per-user key file lives: ``$XDG_CONFIG_HOME/evocluster/key`` or
    ``~/.config/evocluster/key``."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "evocluster" / "key"


def load_key(*, create: bool = True) -> bytes:
    """Return this user's signing key.

    Args:
        create: create the key file if it does not exist (the process that starts a run does;
            workers only read, so that they never make a key of their own that nobody else has).

    Raises:
        ConfigurationError: ``EVOCLUSTER_KEY`` is too short; the key file is missing (and
            ``create`` is false), unreadable, too short, not owned by this user, or readable by
            other users.
    """
    text = os.environ.get(KEY_ENV)
    if text is not None:
        return _checked(text, f"{KEY_ENV} (environment)")
    path = key_path()
    if create and not path.exists():
        _create(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise ConfigurationError(
            f"no evocluster key on this host: {path} does not exist and {KEY_ENV} is not set. "
            "Give every host the same key: share the home directory, copy the key file (mode "
            f"600), or set {KEY_ENV} to the same secret everywhere"
        ) from None
    except OSError as e:
        raise ConfigurationError(f"cannot read the evocluster key file {path}: {e}") from e
    with os.fdopen(fd, encoding="utf-8") as fh:
        info = os.fstat(fh.fileno())
        if info.st_uid != os.getuid() or info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigurationError(
                f"the evocluster key file {path} must belong to you and be readable by you only "
                f"(mode {stat.S_IMODE(info.st_mode):o}): run `chmod 600 {path}`"
            )
        return _checked(fh.read(), str(path))


def _checked(text: str, source: str) -> bytes:
    key = text.strip()
    if len(key) < MIN_KEY_CHARS:
        raise ConfigurationError(
            f"the evocluster key from {source} has {len(key)} characters; at least "
            f"{MIN_KEY_CHARS} are needed: use `python -c 'import secrets; "
            "print(secrets.token_hex(32))'`"
        )
    return key.encode("utf-8")


def _create(path: Path) -> None:
    """Create the key file atomically: written in full under a temporary name, then linked into
    place, so that processes starting together all read the same complete key."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".key.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(secrets.token_hex(32) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # another process won the race: use its key
            os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def sign(key: bytes, frames: Iterable[Any]) -> bytes:
    """The HMAC-SHA256 tag of a list of frames (bytes-like objects)."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    views = [memoryview(f).cast("B") for f in frames]
    mac.update(len(views).to_bytes(8, "big"))
    for view in views:
        mac.update(view.nbytes.to_bytes(8, "big"))
        mac.update(view)
    return mac.digest()


def verify(key: bytes, tag: object, frames: Iterable[Any]) -> bool:
    """Whether ``tag`` is the tag of ``frames`` under ``key`` (constant-time comparison).

    Anything malformed -- a tag that is not bytes, frames that are not bytes-like -- is simply
    not verified: this is the check that runs on untrusted input.
    """
    if not isinstance(tag, bytes) or len(tag) != TAG_SIZE:
        return False
    try:
        expected = sign(key, frames)
    except (TypeError, ValueError):
        return False
    return hmac.compare_digest(expected, tag)
