"""The isolated evaluator (``isolate``): a child process that evaluates for one worker.

Each worker keeps one child, a fresh interpreter (never a fork: worker ranks are MPI processes),
and reuses it for every chunk; it is replaced only after it died or was killed.  So a fitness that
segfaults, calls ``os._exit``, runs out of memory or never returns costs that one evaluation::

    worker (Isolated)                                   child (main)
      spawn: python -c ... main() FD PPID  ----------->  die_with(PPID), SIGINT ignored
      SETUP (job, label, memory)  -------------------->  RLIMIT_AS; import the job as a worker does
                                  <--------------------  READY, or NOJOB (the import's traceback)
      CHUNK (start, fn key, [fn], item frames)  ------>  load fn (cached by key), load the items
                                  <--------------------  VALUE i / ERROR i, one per item, as each
                                                         is done (a crash in item 3 keeps 0-2)
      poll(socket, pidfd) with a deadline per item:
        late          -> SIGKILL, EvaluationTimeout, a fresh child goes on with item i+1
        EOF or pidfd  -> reaped: EvaluationCrashed naming the code or signal, likewise
      close: EOF on the socket, SIGKILL after 1 s

A worker may send a chunk before the replies of the previous ones are in (:meth:`Isolated.submit`,
then :meth:`Isolated.result` in the same order): the child reads it when it is done with them, so
it never waits for the worker between chunks.  A child lost in one chunk takes the chunks sent
after it along: they are sent again, in order, to the next child.

Messages are lists of frames on a Unix stream socket: a ``<I`` frame count, a ``<Q`` size per
frame, then the frames; the first frame of a reply is :data:`REPLY` (kind, item index, seconds,
and when it was sent: the next item's start).

While a chunk has more than one item to go, the worker does not listen to the child's socket
until the chunk's last item is due (from the items' measured cost, for at most 0.1 s): a reply
sent to a socket nobody waits on wakes no process, and the replies wait there, whatever becomes
of the child.
The child's end (its pidfd), a deadline and the master's messages still wake the worker.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import select
import signal
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from . import _leftovers
from ._calls import FN_CACHE_SIZE, FunctionCache
from ._framing import Outbox, ProtocolError, Reader, send
from ._isolation_child import CHUNK, ERROR, FAILED_ALL, READY, REPLY, VALUE, pack
from ._jobfile import JobSpec
from ._serialization import dumps, dumps_args, explain_load_error, loads
from .errors import EvaluationCrashed, EvaluationTimeout, SerializationError, WorkerError

if TYPE_CHECKING:
    import subprocess

__all__ = ["Isolated", "Wake"]

#: Seconds a child asked to stop (its socket closed), or found at end of file, may take to exit
#: before it is killed: time to end what its fitness left running (``_leftovers.GRACE``, then
#: SIGKILL) and to say so.
STOP_GRACE = 1.0 + 2 * _leftovers.GRACE

#: the worker does not wait on the child's socket while more than this many reply bytes are
#: expected before the chunk's last item (a full socket would stop the child)...
_QUIET_MAX_BYTES = 64 * 1024
#: ...and it listens again after at most this many seconds: the cost it expects may be another
#: function's, or wrong (items of this cost or more are each worth a wake-up anyway)
_QUIET_MAX = 0.1

# the MPI launcher's variables: the child is not a rank, and a job that imports mpi4py must not
# make it join (or wait for) its worker's MPI job
_NOT_INHERITED = ("PMI_", "PMIX_", "HYDRA_", "MPI_LOCAL", "OMPI_")

# results of waiting for a reply, besides a reply
_LATE = "late"
_DEAD = "dead"


# ---------------------------------------------------------------------------- the worker's side
def _describe_exit(code: int, memory: int | None) -> str:
    """What an exit status says about the evaluation's process."""
    if code >= 0:
        return f"the evaluation's process exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    if -code == signal.SIGKILL:
        why = "the OOM killer or another process"
        if memory is not None:
            why = f"the memory limit of {memory / (1 << 20):g} MiB or the OOM killer"
        return f"the evaluation's process was killed ({name}: {why})"
    return f"the evaluation's process was killed by {name}"


def _child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(_NOT_INHERITED)}


def _command(fd: int) -> list[str]:
    """The child's command line: this interpreter, its flags, and this copy of evocluster."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    boot = (
        f"import sys; sys.path.insert(0, {root!r}); import evocluster._isolation_child as m; "
        f"sys.path.remove({root!r}); m.main()"
    )
    import subprocess

    flags_of: Any = getattr(subprocess, "_args_from_interpreter_flags", list)
    return [sys.executable, *flags_of(), "-c", boot, str(fd), str(os.getpid())]


class Wake(Protocol):
    """What else a worker waits for while its child evaluates (the master's next message)."""

    def fileno(self) -> int:
        """A descriptor that turns readable when there is something to do (-1: none)."""
        ...

    def __call__(self) -> bool:
        """Do it (:meth:`Isolated.submit` may be called); return whether to go on watching."""
        ...


class _Chunk:
    """A chunk submitted to the child: what to send (again, to a new child), and what came back."""

    __slots__ = (
        "errors",
        "fn_frames",
        "key",
        "next",
        "payload",
        "sent",
        "spent",
        "timeout",
        "values",
    )

    def __init__(self, key: bytes, fn_frames: Any, n: int, timeout: float | None) -> None:
        self.key, self.fn_frames, self.timeout = key, fn_frames, timeout
        self.payload: Sequence[Any] | None = None  # the items' frames
        self.values: list[Any] = [None] * n
        self.errors: dict[int, dict[str, Any]] = {}
        self.next = 0  # the first item without a reply
        self.spent = 0.0
        self.sent = False  # to the current child

    def fail_rest(self, info: dict[str, Any]) -> None:
        self.errors.update(dict.fromkeys(range(self.next, len(self.values)), info))
        self.next = len(self.values)


class Isolated:
    """A child process that evaluates for one worker, kept and reused; restarted after it dies.

    The child is started at once (its start-up overlaps whatever the worker does next) and
    waited for at the first :meth:`run`.  Use it from one thread, the one that created it: the
    child is killed when that thread ends (``PR_SET_PDEATHSIG``).

    Attributes:
        starts: how many children were started so far.
    """

    def __init__(self, job: JobSpec | None, label: str, memory: int | None = None) -> None:
        self.job = job
        self.label = label
        self.memory = memory
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._reader: Reader | None = None
        self._pidfd = -1
        self._poller: Any = None
        self._ready = False
        self._start_error: dict[str, Any] | None = None
        self._fns = FunctionCache(FN_CACHE_SIZE)  # mirror of the child's cache
        self._chunks: deque[_Chunk] = deque()  # submitted, their results not yet taken
        # chunks for the child not yet written: written as it reads, while its replies are read
        # (a blocking write of a chunk while the child blocks writing its replies would hang)
        self._out = Outbox()
        # seconds per evaluation and bytes per reply, moving averages: when to listen again
        self._cost = 0.0
        self._reply_bytes = 0.0
        self._spawn()

    @property
    def pid(self) -> int | None:
        """The current child's pid (None between a death and the next start)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def where(self) -> str:
        """The label of the current child's evaluations (the worker's, plus the child's pid)."""
        return f"{self.label} (isolated, pid {self.pid})"

    # ------------------------------------------------------------------ life cycle
    def _spawn(self) -> None:
        """Start a child (not waiting for it); a failure to start is kept for the next run."""
        import subprocess

        self._start_error = None
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # no preexec_fn, no new session: CPython can then vfork, safe in an MPI process
            proc = subprocess.Popen(
                _command(child.fileno()),
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                env=_child_env(),
            )
        except OSError as e:
            parent.close()
            err = WorkerError(f"{self.label} could not start its evaluation process: {e}")
            self._start_error = pack(err, self.label)
            return
        finally:
            child.close()
        self.starts += 1
        self._proc, self._sock, self._reader = proc, parent, Reader(parent)
        self._ready = False
        self._fns.clear()
        self._poller = select.poll()
        self._poller.register(parent.fileno(), select.POLLIN)
        try:
            self._pidfd = os.pidfd_open(proc.pid)  # readable once the child has exited
            self._poller.register(self._pidfd, select.POLLIN)
        except (AttributeError, OSError):  # before Linux 5.3: end of file, and a periodic check
            self._pidfd = -1
        with contextlib.suppress(OSError):  # a child that died at once: seen when waited for
            send(parent, dumps((self.job, self.label, self.memory)))

    def _forget(self) -> None:
        """Release what belongs to the (reaped) child; what was sent to it goes to the next."""
        for chunk in self._chunks:
            chunk.sent = False
        self._out.clear()
        if self._sock is not None:
            self._sock.close()
        if self._pidfd >= 0:
            os.close(self._pidfd)
        self._proc, self._sock, self._reader, self._poller, self._pidfd = None, None, None, None, -1

    def _kill(self) -> None:
        """SIGKILL the child, and the processes its evaluation started; reap it."""
        if self._proc is not None:
            if self._proc.returncode is None:  # not reaped: its pid is still its own
                _leftovers.kill_tree(self._proc.pid)
            self._proc.wait()
            self._forget()

    def _reap(self) -> int:
        """The exit status of a child that has ended (or closed its socket: killed after a grace
        period, as a process that no longer talks cannot be used)."""
        import subprocess

        assert self._proc is not None
        try:
            code = self._proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            _leftovers.kill_tree(self._proc.pid)
            code = self._proc.wait()
        self._forget()
        return code

    def close(self) -> None:
        """Stop the child: ask (end of file on its socket), then SIGKILL after 1 s.  Idempotent."""
        if self._proc is None:
            return
        assert self._sock is not None
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._reap()

    def __enter__(self) -> Isolated:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ waiting
    def _receive(
        self, deadline: float | None, wake: Wake | None = None, quiet: float = 0.0
    ) -> list[memoryview] | str:
        """The child's next reply, or ``_LATE`` past ``deadline``, or ``_DEAD``; ``wake()`` is
        called whenever ``wake.fileno()`` turns readable meanwhile.  Until ``quiet`` (a
        ``time.monotonic()``), a reply does not wake this process: it is read after."""
        reader, sock = self._reader, self._sock
        assert reader is not None and sock is not None and self._proc is not None
        poller = self._poller
        watched = wake.fileno() if wake is not None else -1
        if watched >= 0:
            poller.register(watched, select.POLLIN)
        try:
            return self._wait_reply(reader, sock, deadline, wake, watched, quiet)
        finally:
            if watched >= 0:
                with contextlib.suppress(KeyError):
                    poller.unregister(watched)

    def _wait_reply(
        self,
        reader: Reader,
        sock: socket.socket,
        deadline: float | None,
        wake: Wake | None,
        watched: int,
        quiet: float,
    ) -> list[memoryview] | str:
        assert self._proc is not None
        while True:
            frames = reader.next()
            if frames is not None:
                return frames
            if reader.eof:
                return _DEAD
            wait_ms = self._poll_ms(deadline)
            if wait_ms is None:
                return _LATE
            quiet_ms = math.ceil((quiet - time.monotonic()) * 1000) if quiet else 0
            if quiet_ms > 0:  # not listening to the child yet: wake up when that is over
                wait_ms = quiet_ms if wait_ms < 0 else min(wait_ms, quiet_ms)
            ready = self._poll(sock, wait_ms, listen=quiet_ms <= 0)
            if watched in ready:
                assert wake is not None
                if not wake():  # nothing more to watch (the master's side closed)
                    self._poller.unregister(watched)
                    watched = -1
            if ready.get(sock.fileno(), 0) & ~select.POLLOUT:
                reader.fill()
            exited = self._pidfd in ready if self._pidfd >= 0 else self._proc.poll() is not None
            if exited:  # whatever it sent before it died is there now
                reader.drain()
                frames = reader.next()
                return frames if frames is not None else _DEAD

    def _poll(self, sock: socket.socket, wait_ms: int, listen: bool = True) -> dict[int, int]:
        """Wait for events on the child's socket (its replies unless not ``listen``), its pidfd
        and the wake descriptor; write more of what is queued for the child whenever it can
        take it."""
        events = (select.POLLIN if listen else 0) | (select.POLLOUT if self._out else 0)
        if events == select.POLLIN:
            return dict(self._poller.poll(wait_ms))
        self._poller.modify(sock, events)
        try:
            ready = dict(self._poller.poll(wait_ms))
        finally:
            self._poller.modify(sock, select.POLLIN)
        if ready.get(sock.fileno(), 0) & select.POLLOUT:
            self._flush()
        return ready

    def _poll_ms(self, deadline: float | None) -> int | None:
        """How long the next poll may wait (-1: for ever); None once ``deadline`` has passed."""
        wait_ms = -1
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            wait_ms = math.ceil(left * 1000)
        if self._pidfd < 0:  # no pidfd: look at the child once a second (a grandchild may
            wait_ms = 1000 if wait_ms < 0 else min(wait_ms, 1000)  # hold the socket open)
        return wait_ms

    def _wait_ready(self) -> dict[str, Any] | None:
        """Wait for the child's READY; on failure, the packed error for every item, the child
        reaped.  No deadline: the job's import took as long in the worker itself."""
        try:
            got = self._receive(None)
        except ProtocolError as e:
            got = f"broke the protocol ({e})"
            self._kill()
        if isinstance(got, list):
            kind = REPLY.unpack(got[0])[0]
            if kind == READY:
                self._ready = True
                return None
            where = self.where
            self._reap()
            text = bytes(got[1]).decode("utf-8", "replace") if len(got) > 1 else "?"
            return pack(WorkerError(f"{where} could not import the job:\n{text}"), where)
        where = self.where
        why = got if self._proc is None else _describe_exit(self._reap(), self.memory)
        err = WorkerError(f"{where}: the evaluation process ended before it was ready ({why})")
        return pack(err, where)

    def _ensure_child(self) -> dict[str, Any] | None:
        """A ready child, started if need be (once per run); else why there is none."""
        if self._ready and self._proc is not None and self._proc.poll() is not None:
            self._reap()  # it died between runs (killed from outside): not an item's failure
        if self._proc is None:
            self._spawn()
            if self._start_error is not None:
                return self._start_error
        if self._ready:
            return None
        return self._wait_ready()

    # ------------------------------------------------------------------ evaluating
    def run(self, *args: Any, **kwargs: Any) -> tuple[list[Any], dict[int, dict[str, Any]], float]:
        """Evaluate a chunk in the child: :meth:`submit` (same arguments), then :meth:`result`."""
        self.submit(*args, **kwargs)
        return self.result()

    def submit(
        self,
        fn_key: bytes,
        fn_frames: Any,
        items: Sequence[Any],
        star: bool,
        kwargs: dict[str, Any] | None,
        timeout: float | None,
        *,
        item_frames: Sequence[Any] | None = None,
    ) -> None:
        """Queue a chunk and send it at once to a ready child, even while it still evaluates
        earlier chunks; never waits.  Take its outcome with :meth:`result`, in the order
        submitted.

        Args:
            fn_key, fn_frames: the callable's key and serialised frames, as a TASK carries them;
                the frames are sent only to a child that has not had this key.
            items, star, kwargs: the chunk, as ``loads(task.item_frames)`` gives it.
            timeout: seconds one item may run (None: no limit).
            item_frames: the TASK's ``item_frames`` themselves, if the worker still has them:
                sent as they are instead of pickling ``items`` again.
        """
        chunk = _Chunk(fn_key, fn_frames, len(items), timeout)
        chunk.payload = item_frames
        if item_frames is None and items:
            chunk.payload, failure = self._dump_items(items, star, kwargs)
            if failure is not None:  # nothing to send the child: the chunk fails
                chunk.fail_rest(failure)
        in_order = all(c.sent for c in self._chunks)  # else result() sends them all, in order
        self._chunks.append(chunk)
        if in_order and self._ready and self._proc is not None:
            self._send_chunk(chunk)

    def pending(self) -> int:
        """How many submitted chunks have not had their :meth:`result` taken."""
        return len(self._chunks)

    def result(
        self, wake: Wake | None = None
    ) -> tuple[list[Any], dict[int, dict[str, Any]], float]:
        """The outcome of the oldest submitted chunk; waits for it.

        ``wake``: called (and may :meth:`submit` more) whenever its descriptor turns readable
        during the wait; returns whether to go on watching it.

        Returns:
            ``(values, errors, elapsed)``: ``values[i]`` the result (None where it failed),
            ``errors[i]`` a :func:`~evocluster._serialization.pack_exception` dict, ``elapsed``
            the seconds spent evaluating.  An item running longer than its ``timeout`` gets
            :class:`EvaluationTimeout` and the child is killed; an item whose process died gets
            :class:`EvaluationCrashed`; either way a fresh child goes on with the next items,
            and with the chunks submitted after this one.  Never raises for anything the
            fitness does; an exception raised in this thread while waiting (a signal
            handler's, or ``wake``'s) kills the child, drops every submitted chunk and
            propagates.
        """
        chunk = self._chunks[0]
        try:
            while chunk.next < len(chunk.values):
                # a child started for this chunk's items is part of their cost: counted, a map
                # whose every item times out (and so kills its child) is cut into chunks of a
                # few items, not of thousands that each pay a new child after the map has
                # already raised (1,506 items of a 1e-6 s eval_timeout took 67 s on serial)
                started = time.monotonic()
                failure = self._ensure_child()
                chunk.spent += time.monotonic() - started
                if failure is not None:  # no child: the rest of this chunk fails
                    chunk.fail_rest(failure)
                    break
                for c in self._chunks:  # to a new child: this chunk's rest, and those after it
                    if not c.sent:
                        self._send_chunk(c)
                chunk.next, dt = self._collect(chunk, wake)
                chunk.spent += dt
        except BaseException:
            self._kill()  # mid-conversation: a child that is out of step cannot be reused
            self._chunks.clear()
            raise
        self._chunks.popleft()
        return chunk.values, chunk.errors, chunk.spent

    def _dump_items(
        self, items: Sequence[Any], star: bool, kwargs: dict[str, Any] | None
    ) -> tuple[Any, dict[str, Any] | None]:
        try:
            return dumps_args((list(items), star, kwargs), "upgrade"), None
        except BaseException as e:  # an item's own pickling code
            err = SerializationError(f"the chunk cannot be pickled for the evaluation process: {e}")
            return None, pack(err, self.label)

    def _send_chunk(self, chunk: _Chunk) -> None:
        """Send the rest of ``chunk`` (from its first item without a reply) to the child."""
        assert self._sock is not None
        chunk.sent = True
        if chunk.next >= len(chunk.values):  # failed already, or empty: nothing to evaluate
            return
        assert chunk.payload is not None
        fn: Sequence[Any] = ()
        if not self._fns.touch(chunk.key) and chunk.fn_frames is not None:
            fn = chunk.fn_frames  # the child caches it, as this mirror does
            self._fns.put(chunk.key, None)
        self._out.put([CHUNK.pack(chunk.next, len(fn)), chunk.key, *fn, *chunk.payload])
        self._flush()

    def _flush(self) -> None:
        """Write what the child takes now of the chunks queued for it; never waits."""
        assert self._sock is not None
        try:
            self._out.flush(self._sock)
        except OSError:  # the child died: seen when its reply is waited for
            self._out.clear()

    def _collect(self, chunk: _Chunk, wake: Wake | None) -> tuple[int, float]:
        """Receive the chunk's replies from its first item without one on; return where to go
        on, and the seconds spent.  Stops after an item that timed out or crashed (the child is
        gone)."""
        spent = 0.0
        values, errors, timeout = chunk.values, chunk.errors, chunk.timeout
        t0 = time.monotonic()  # when the item began, as well as this process can tell
        for i in range(chunk.next, len(values)):
            deadline = None if timeout is None else t0 + timeout
            # replies are not needed before the chunk's last item is due
            later = len(values) - i - 1
            quiet = 0.0
            cost = self._cost
            if later and 0 < cost < _QUIET_MAX and later * self._reply_bytes <= _QUIET_MAX_BYTES:
                quiet = t0 + min(0.9 * later * cost, _QUIET_MAX)
                if deadline is not None:
                    quiet = min(quiet, deadline)
            try:
                got = self._receive(deadline, wake, quiet)
                if isinstance(got, list):
                    kind, index, dt, sent = REPLY.unpack(got[0])
                    if index != i or kind not in (VALUE, ERROR, FAILED_ALL):
                        raise ProtocolError(f"reply {kind} for item {index}, not item {i}")
            except (ProtocolError, struct.error) as e:
                self._kill()
                got = f"the evaluation's process broke its protocol ({e}): killed"
            if not isinstance(got, list):
                ran = time.monotonic() - t0
                spent += ran
                errors[i] = self._lost(got, timeout)
                errors[i]["seconds"] = ran  # the record of a timeout says how long it ran
                return i + 1, spent
            spent += dt
            t0 = sent  # the next item began as this reply left
            self._cost += 0.2 * (dt - self._cost) if self._cost else dt
            self._reply_bytes += 0.2 * (sum(f.nbytes for f in got) - self._reply_bytes)
            if kind == FAILED_ALL:  # the callable or the items could not be loaded there
                errors.update(dict.fromkeys(range(i, len(values)), pickle.loads(got[1])))
                return len(values), spent
            self._take_reply(i, kind, got, dt, values, errors)
        return len(values), spent

    def _take_reply(
        self,
        i: int,
        kind: int,
        frames: Sequence[Any],
        dt: float,
        values: list[Any],
        errors: dict[int, dict[str, Any]],
    ) -> None:
        """Item ``i``'s VALUE or ERROR: its value, or its error and the seconds it ran."""
        if kind == ERROR:
            errors[i] = pickle.loads(frames[1])
        else:
            self._load_value(i, frames[1:], values, errors)
        if i in errors:
            errors[i]["seconds"] = dt

    def _lost(self, why: str, timeout: float | None) -> dict[str, Any]:
        """The error of an item whose child is gone (late: killed here; dead: reaped here)."""
        where = self.where
        if why == _LATE:
            self._kill()
            return pack(
                EvaluationTimeout(
                    f"the evaluation ran longer than {timeout:g} s: its process was killed"
                ),
                where,
            )
        if why == _DEAD:
            why = _describe_exit(self._reap(), self.memory)
        return pack(EvaluationCrashed(why), where)

    def _load_value(
        self, i: int, frames: Sequence[Any], values: list[Any], errors: dict[int, dict[str, Any]]
    ) -> None:
        try:
            values[i] = loads(frames)
        except BaseException as e:  # the result's own unpickling code
            err = SerializationError(explain_load_error(e, "the result of this call"))
            errors[i] = pack(err, self.label)
