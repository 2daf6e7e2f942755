"""MPI backend: rank 0 is the master, ranks 1..N-1 are workers.  The only module that imports
mpi4py.

Message flow (two fixed tags; a task index is never used as a tag)::

    rank 0 (scheduler thread)                                  rank r >= 1 (serve loop)
    Isend  TAG_ENVELOPE  [part count, sizes, small head] ---->  Improbe (sleep-polling, backoff)
    Isend  TAG_PART      part 1 piece 1 ... (<= 1 GiB each) ->  Recv into one bytearray per part
      ...                                                        evaluate
    Improbe (sleep-polling) <---- TAG_ENVELOPE, TAG_PART ------  Isend, then Test + short sleeps

Why every wait is a sleep-poll: a blocking ``Recv`` in MPICH and Open MPI spins its core (on 2
cores, 2026-11-23: a rank waiting 5 s burned 4.9 s of CPU, and a master computing while 15 such
workers waited ran 7-8x slower; benchmarks/RESULTS.md F17, F21).  So both sides test for messages
and sleep between tests with an exponential backoff (``poll_min`` .. ``poll_max``), which costs
an idle rank under 0.1 % of a core (benchmarks/RESULTS.md F8, F20, 2026-12-02).
A worker sleeps on its doorbell (``doorbell.py``): the master rings it after each message, so it
wakes at once instead of at its next look.  The master, waiting for results, sleeps no longer
than the latency the scheduler allows (a fraction of a typical chunk's duration).

Why large transfers are treated apart: a rendezvous transfer only progresses while *both* sides
call into MPI.  The scheduler sends large chunks only to idle workers (who are polling, so they
receive at once), the master polls without backoff while any of its sends is incomplete, and a
worker finishes sending its result before it evaluates anything else.  Parts are received with a
blocking ``Recv`` once their envelope has arrived: the sender is then known to be sending.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from mpi4py import MPI

from .. import _config as config
from .. import _protocol as protocol
from .. import _sharing as sharing
from .._serialization import Frames, dumps, loads
from . import doorbell

if TYPE_CHECKING:
    from .._jobfile import JobSpec
from .base import (
    Backoff,
    Channel,
    Event,
    Transport,
    assemble,
    decode_envelope,
    encode_envelope,
    pieces,
)

__all__ = [
    "TAG_ENVELOPE",
    "TAG_PART",
    "MPIChannel",
    "MPITransport",
    "abort",
    "finalize_last",
    "release_workers",
    "serve_worker",
    "world",
]

#: The tag space of evocluster's messages: fixed, small (any MPI supports tags up to 32767).
TAG_ENVELOPE = 0x3EC0
TAG_PART = 0x3EC1


#: MPICH's shared memory (ch4's POSIX channel, ``MPL_initshm``; PyPI's wheel 5.0.2): one 3 MB
#: ``/dev/shm/mpich_shm_<world id>_<node>`` per node, created by whichever local rank gets there
#: first, opened by name by the others, and unlinked in ``MPI_Finalize`` only.  So every exit
#: through ``MPI_Abort`` (or SIGKILL) left it behind (46 after a session of tests), and under srun,
#: which derives the world id from the job step, a requeued job opened the stale one and spun in
#: ``MPI_Init`` until cancelled.  ``MPI_Init`` returns on a rank only once every rank of its node
#: has mapped it (each waits there for every other's ready flag in it; measured too: a rank held
#: back 3 s before MPI_Init holds every other rank's MPI_Init 3 s, and each finds the segment
#: mapped by every local rank when it returns).  So every rank unlinks it as MPI starts (below):
#: the memory lives on while mapped, the name is gone, and no exit can leave it.
_SEGMENTS_AT_INIT = ("mpich_shm_",)
#: What an abort unlinks (a segment MPICH may create after ``MPI_Init``: its per-VCI one).  Not
#: Open MPI's ``vader_segment.*``: its launcher removes them when a job aborts or a rank dies (a
#: SIGKILLed worker, a rank that exits without MPI_Finalize, MPI_Abort: none left, measured with
#: Debian's 4.1.4), and its MPI_Finalize complains of one unlinked before ("A system call failed
#: during shared memory initialization ... unlink(2)").
_SEGMENTS = ("mpich_shm_", "mpich_vci_")


def _mapped_segments(prefixes: tuple[str, ...]) -> dict[str, int]:
    """The ``/dev/shm`` files named ``prefix...`` that this process maps and that still have
    their name: path -> inode."""
    found: dict[str, int] = {}
    # no /proc (not Linux): nothing found, nothing unlinked
    with contextlib.suppress(OSError, ValueError), open("/proc/self/maps") as fh:
        for line in fh:
            fields = line.split(None, 5)
            path = fields[5].rstrip("\n") if len(fields) == 6 else ""
            if (
                path.startswith("/dev/shm/")
                and path[9:].startswith(prefixes)
                and not path.endswith(" (deleted)")  # unlinked already
            ):
                found[path] = int(fields[4])
    return found


def release_shared_memory(prefixes: tuple[str, ...] = _SEGMENTS) -> None:
    """Unlink the MPI library's ``/dev/shm`` segments this process maps (named ``prefixes``), so
    that none outlives the job, however it ends.  The mappings stay valid until the processes
    exit; only the names go.  Never fails."""
    for path, inode in _mapped_segments(prefixes).items():
        with contextlib.suppress(OSError):  # another rank of this node unlinked it first
            if os.stat(path).st_ino == inode:  # that very file, not a namesake made since
                os.unlink(path)


# MPI started with the import of MPI above (mpi4py's MPI_Init_thread): every local rank maps
# MPICH's segment by now, so its name can go (_SEGMENTS_AT_INIT)
release_shared_memory(_SEGMENTS_AT_INIT)


def world() -> tuple[int, int]:
    """``(rank, size)`` of ``MPI.COMM_WORLD`` (starts MPI if it was not started)."""
    comm = MPI.COMM_WORLD
    return comm.Get_rank(), comm.Get_size()


def abort(code: int) -> None:
    """End every rank of the job now (after a fatal error on this one).  The MPI library's
    shared memory segments this rank maps are unlinked first: MPI_Abort kills every rank before
    any can remove them."""
    release_shared_memory()
    sharing.release_segments()  # the master's copies of large shared objects (_sharing)
    MPI.COMM_WORLD.Abort(code)


def host() -> str:
    return str(MPI.Get_processor_name())


def _isend(comm: Any, frames: Frames, dest: int) -> tuple[list[Any], Any]:
    env, parts = encode_envelope(frames)
    reqs = [comm.Isend([env, MPI.BYTE], dest, TAG_ENVELOPE)]
    for part in parts:
        for a, b in pieces(part.nbytes):
            reqs.append(comm.Isend([part[a:b], MPI.BYTE], dest, TAG_PART))
    return reqs, (env, parts)  # the buffers must outlive the requests


#: Tests of a transfer under way that yield the core before the wait starts to sleep.
_YIELDS = 200


def _wait_active(reqs: list[Any]) -> None:
    """Wait for the requests of a transfer under way (the other side is known to take part).

    Not a blocking ``Wait``: that spins, and on an oversubscribed node the spinning rank holds the
    core the other end of the transfer needs.  Test and yield the core for a while (a transfer
    takes microseconds to milliseconds), then sleep with a backoff up to 1 ms."""
    for _ in range(_YIELDS):
        if MPI.Request.Testall(reqs):
            return
        os.sched_yield()
    delay = 1e-5
    while not MPI.Request.Testall(reqs):
        time.sleep(delay)
        delay = min(delay * 2, 1e-3)


def _probe(comm: Any, source: int, status: Any) -> Any:
    """``Improbe`` for an envelope from ``source``, looked for twice.  MPICH's shared-memory
    channel: a probe that progresses a queued message does not match it yet, the next one does
    (a message queued 50 ms before is seen on the 2nd look in 199 of 200 tries: MPICH wheel,
    benchmarks/RESULTS.md F18, 2026-12-02).  Looking only once would cost a sleep per message."""
    return comm.Improbe(source, TAG_ENVELOPE, status) or comm.Improbe(source, TAG_ENVELOPE, status)


def _recv_matched(comm: Any, msg: Any, status: Any) -> Frames:
    env = bytearray(status.Get_count(MPI.BYTE))
    source = status.Get_source()
    msg.Recv([env, MPI.BYTE])  # matched and small: already here, returns at once
    head, sizes = decode_envelope(env)
    parts: list[Any] = []
    reqs: list[Any] = []
    for size in sizes:
        buf = bytearray(size)
        view = memoryview(buf)
        for a, b in pieces(size):
            reqs.append(comm.Irecv([view[a:b], MPI.BYTE], source, TAG_PART))
        parts.append(buf)
    if reqs:
        _wait_active(reqs)
    return assemble(head, parts)


class MPITransport(Transport):
    """Rank 0's side: ranks 1..size-1 are workers 0..size-2."""

    async_sends = True  # Isend: a prefetched large chunk moves once its worker looks for it

    def __init__(self, job: JobSpec, options: config.Options) -> None:
        self._comm = MPI.COMM_WORLD
        self._size = self._comm.Get_size()
        self.n_workers = self._size - 1
        self.host = host()  # as its workers name theirs (MPIChannel)
        self._opts = options
        self._status = MPI.Status()
        # sends not yet complete: [requests, buffers kept alive, worker, urgent].  An urgent send
        # is one the worker is receiving now (it was idle, or has replied since): the master then
        # polls without backoff, because a rendezvous transfer moves only while both sides call MPI.
        self._pending: list[list[Any]] = []
        # set by user threads (submit, cancel, shutdown): ends the scheduler's current sleep
        self._wake = threading.Event()
        self._bells: doorbell.Doorbells | None = None
        # armed at the first worker death the launcher is to end the job for (_died)
        self._overdue: threading.Timer | None = None
        self._ending = False  # close() or abort() has begun: a death now is the run's own end
        # on_worker_loss="continue" where the launcher lets the job outlive a rank (Open MPI's
        # --enable-recovery): deaths the death watch saw, for poll() to hand to the pool, and
        # the ranks that died (never sent to again)
        self._survive = options.on_worker_loss == "continue" and config.mpi_outlives_a_rank()
        self._deaths: list[Event] = []
        self._dead: set[int] = set()
        self._abandoned: list[list[Any]] = []  # sends to a dead rank, their buffers kept
        self._lock = threading.Lock()  # _deaths: the death watch's thread appends
        if options.doorbell and self.n_workers:
            try:
                self._bells = doorbell.Doorbells(self.n_workers, on_death=self._died)
            except OSError as e:  # no TCP here: the workers poll, and the user is told so
                self._bells = None
                doorbell.unavailable(self.n_workers, e)
        if self._bells is not None:
            bell = dumps(protocol.doorbell(*self._bells.address()))
            for w in range(self.n_workers):
                self.send(w, bell)
        init = dumps(protocol.init(job, {}))
        for w in range(self.n_workers):
            self.send(w, init)

    def describe(self, worker: int) -> str:
        return f"worker rank {worker + 1} of {self._size}"

    def _died(self, worker: int, report: str, lingering: bool) -> None:
        """The death watch (doorbells' thread): worker's process died, or is dying of a fatal
        signal (``lingering``: its fault report written, it waits a few seconds before it ends).
        Say so now, in one line; then, if it lingers, end the job at once with 128 + the signal,
        as a shell reports a process killed by it.  (Once a worker has ended, the MPI launcher
        kills every rank at once, this one included: a line not yet printed is lost.  If it has
        not within ``LAUNCHER_GRACE`` seconds, this process ends the job: ``_launcher_overdue``.)"""
        if self._survive and not self._ending:
            self._lost(worker, report, lingering)
            return
        if self._overdue is not None and not lingering:
            # a death was said and the launcher is ending the job: it kills the other ranks, and
            # those on other hosts than this one often die before it does (3 emulated hosts,
            # tests/multihost/: the killed worker's neighbour, 4 runs of 4, was said to have
            # "ended without a word" as well).  The launcher's clean-up is not a fault.
            return
        lines = [ln.strip() for ln in report.splitlines() if ln.strip()]
        fault = lines[0].removeprefix("Fatal Python error: ") if lines else ""
        code = 128 + _FAULTS.get(fault, signal.SIGSEGV)
        ends = (
            f"evocluster ends the job (exit code {code})"
            if lingering
            else "the MPI launcher ends the job"
        )
        sharing.release_segments()  # the launcher kills this rank too, exit handlers skipped
        self._say_died(worker, fault, lines, ends)
        if lingering:
            self.abort(code)
        elif self._overdue is None:  # the first death: hold the launcher to what was just said
            self._overdue = threading.Timer(LAUNCHER_GRACE, self._launcher_overdue, (worker,))
            self._overdue.daemon = True
            self._overdue.start()

    def _lost(self, worker: int, report: str, lingering: bool) -> None:
        """Under ``on_worker_loss="continue"`` where the job outlives a rank: hand the death to
        the pool (its next :meth:`poll`), which sends what the worker held to the others.  A
        worker dying of a fatal signal (``lingering``) is ended now rather than in a few
        seconds, its report kept for the reason."""
        lines = [ln.strip() for ln in report.splitlines() if ln.strip()]
        fault = lines[0].removeprefix("Fatal Python error: ") if lines else ""
        reason = f"it died of {fault}" if fault else "its process ended (SIGKILL? the OOM killer?)"
        with self._lock:
            self._deaths.append((worker, None, reason))
        self._wake.set()

    def _launcher_overdue(self, worker: int) -> None:
        """``LAUNCHER_GRACE`` seconds after a worker's death was said, this process still runs:
        the launcher has not ended the job, and may never.  It ends a job when a rank is killed
        or exits without finalising, but not when a rank's process lives on without its serve
        loop: a worker whose own code raised sits in ``MPI_Finalize`` waiting for the others
        (f035c23: every worker died of ``setitimer``'s OverflowError and the run hung until
        killed).  So end the job now, with one more line, unless the run is already ending."""
        if self._ending or MPI.Is_finalized():
            return
        print(
            f"evocluster: the MPI launcher has not ended the job {LAUNCHER_GRACE:g} s after "
            f"MPI {self.describe(worker)} ended: evocluster ends it (MPI_Abort, exit code "
            f"{LOST_WORKER_CODE})",
            file=sys.stderr,
            flush=True,
        )
        self.abort(LOST_WORKER_CODE)

    def _say_died(self, worker: int, fault: str, lines: list[str], ends: str) -> None:
        # the innermost frame of the job's code: the one just above evocluster's own frames
        frames = [ln for ln in lines if ln.startswith("File ")]
        ours = next((i for i, ln in enumerate(frames) if "/evocluster/" in ln), len(frames))
        where = frames[ours - 1] if ours > 0 else ""
        how = (
            f"died of {fault}"
            if fault
            else "ended without a word (a signal such as SIGKILL: the OOM killer?)"
        )
        work_of, label_of = self.work_of, self.label_of
        try:
            work = work_of(worker) if work_of is not None else ""
            label = label_of(worker) if label_of is not None else self.describe(worker)
        except Exception:  # read from another thread: never fail the report for it
            work, label = "", self.describe(worker)
        who = self._bells.who(worker) if self._bells is not None else None
        if label == self.describe(worker) and who is not None:
            # its READY, which names its host, is not read yet (the master was slower than its
            # death: 2 runs of 12 with a worker on another host, tests/multihost/); its doorbell
            # greeting, which came before, names it too
            label += f" on host {who[0]} (pid {who[1]})"
        print(
            f"evocluster: MPI {label} {how}"
            + (f" while evaluating {work}" if work else "")
            + (f" ({where})" if where else "")
            + f"; {ends} (evaluate with --isolate to survive a crash)",
            file=sys.stderr,
            flush=True,
        )

    def send(self, worker: int, frames: Frames, idle: bool = True) -> None:
        reqs, keep = _isend(self._comm, frames, worker + 1)
        if not MPI.Request.Testall(reqs):  # small messages complete at once (eager protocol)
            self._pending.append([reqs, keep, worker, idle])
        if self._bells is not None:  # it may be asleep: wake it now
            self._bells.ring(worker)

    def stats(self) -> dict[str, int]:
        bells = self._bells
        return {
            "doorbells": bells.connected if bells is not None else 0,
            "rings": bells.rings if bells is not None else 0,
        }

    def _progress(self) -> bool:
        """Test pending sends; return whether an urgent one is still under way."""
        if not self._pending:
            return False
        self._pending = [p for p in self._pending if not MPI.Request.Testall(p[0])]
        return any(p[3] for p in self._pending)

    def _drain(self) -> list[Event]:
        events: list[Event] = []
        status = self._status
        while True:
            msg = _probe(self._comm, MPI.ANY_SOURCE, status)
            if msg is None:
                return events
            worker = status.Get_source() - 1
            events.append((worker, _recv_matched(self._comm, msg, status), None))
            for p in self._pending:  # it replied, so it now reads what we queued for it
                if p[2] == worker:
                    p[3] = True

    def _take_deaths(self) -> list[Event]:
        """The deaths the death watch saw since the last look: their ranks are never sent to
        again, and what was under way to them is dropped (never completed: kept referenced)."""
        with self._lock:
            deaths, self._deaths = self._deaths, []
        for worker, _, _ in deaths:
            self._dead.add(worker)
            self._abandoned += [p for p in self._pending if p[2] == worker]
            self._pending = [p for p in self._pending if p[2] != worker]
        return deaths

    def poll(self, timeout: float | None, latency: float | None = None) -> list[Event]:
        self._progress()
        events = self._take_deaths() if self._deaths else []
        events += self._drain()
        if events:
            return events
        if timeout is not None:  # nothing expected: one sleep, then one more look
            if not self._wake.wait(timeout):
                self._progress()
                return self._drain()
            return []
        o = self._opts
        backoff = Backoff(o.poll_min, o.master_poll_max, o.poll_fraction, latency)
        urgent = self._progress()
        while not self._wake.is_set():
            if urgent:
                os.sched_yield()  # a transfer under way: yield the core, do not sleep
            elif self._wake.wait(backoff.next()):
                break
            urgent = self._progress()
            events = self._drain()
            if events:
                return events
        return self._take_deaths() if self._deaths else []

    def wakeup(self) -> None:
        self._wake.set()

    def clear_wakeup(self) -> None:
        self._wake.clear()

    def close(self, stop_frames: Frames) -> None:
        self._ending = True
        self._take_deaths()
        alive = [w for w in range(self.n_workers) if w not in self._dead]
        for w in alive:
            self.send(w, stop_frames)
        _wait_sent([r for p in self._pending for r in p[0]], self._opts)
        self._pending.clear()
        _await_byes(self._comm, len(alive), self._opts)
        if self._bells is not None:
            self._bells.close()

    def abort(self, code: int) -> None:
        self._ending = True
        if self._bells is not None:
            self._bells.quiet = True  # the ranks' deaths that follow are this abort's
        # the launcher forwards this rank's output: give it what was just printed (the line that
        # says why) before the abort tears its I/O down.  Without the wait, 1 of 9 lines naming a
        # dead worker was lost here, and once a CI run lost the line of a job that ended after a
        # map timeout (2026-12-02)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        time.sleep(ABORT_AFTER)
        abort(code)


#: Seconds between the last line the master printed and the MPI_Abort that ends the job (a dying
#: worker lingers 4 s or more: ``doorbell._linger_after_fault``).
ABORT_AFTER = 0.5
#: Seconds the MPI launcher has, after the master said a worker died, to end the job before the
#: master ends it itself (hydra and Open MPI's launcher kill every rank within a second of a
#: rank's death when they notice it at all).
LAUNCHER_GRACE = 5.0
#: The exit code of a job the master ends because the launcher did not after a worker's death.
LOST_WORKER_CODE = 1
#: ``faulthandler``'s names of the fatal signals it reports (``Fatal Python error: <name>``).
_FAULTS = {
    "Segmentation fault": signal.SIGSEGV,
    "Floating point exception": signal.SIGFPE,
    "Aborted": signal.SIGABRT,
    "Bus error": signal.SIGBUS,
    "Illegal instruction": signal.SIGILL,
}


class MPIChannel(Channel):
    """A worker rank's side."""

    def __init__(self, options: config.Options) -> None:
        self._comm = MPI.COMM_WORLD
        self.rank = self._comm.Get_rank()
        self.size = self._comm.Get_size()
        self.host = host()
        self._status = MPI.Status()
        self._opts = o = options
        self._backoff = Backoff(o.poll_min, o.poll_max, o.poll_fraction)
        # the first message (INIT) comes while the whole job starts up, which takes seconds with
        # many ranks on few cores: a proportional sleep would then notice it late
        self._startup: Backoff | None = Backoff(o.poll_min, min(o.poll_max, 0.005), 1.0)
        self._bell = doorbell.Bell(None)  # plain sleeps until the master's DOORBELL record
        self._matched: Any = None  # a message ready() has matched (and its status is _status)

    def label(self) -> str:
        return f"worker rank {self.rank} of {self.size} on host {self.host} (pid {os.getpid()})"

    def recv(self) -> Frames:
        first = self._startup is not None
        backoff, self._startup = self._startup or self._backoff, None
        backoff.reset()
        while True:
            msg, self._matched = self._matched or _probe(self._comm, 0, self._status), None
            if msg is not None:
                frames = _recv_matched(self._comm, msg, self._status)
                if first:  # the master's first message is its doorbells' address, if it has any
                    first = False
                    record = loads(frames)
                    if record[0] == protocol.DOORBELL:
                        hosts, port, token = record.hosts, record.port, record.token
                        self._bell = doorbell.connect(hosts, port, token, self.rank)
                        self._bell.report_faults()
                        if self._bell.connected:  # every message now comes with a ring, so an
                            # idle wait may lengthen fast: each sleep as long as the wait so far
                            o = self._opts
                            self._backoff = Backoff(o.poll_min, o.poll_max, 1.0)
                        continue  # INIT follows
                return frames
            # the *why* of this module: never block in MPI, it spins.  A ring ends the sleep, and
            # the backoff starts again from its shortest sleep: the message is here or imminent
            if self._bell.wait(backoff.next()):
                backoff.reset()

    def send(self, frames: Frames) -> None:
        reqs, keep = _isend(self._comm, frames, 0)
        _wait_active(reqs)  # finish before evaluating more: the master's receive needs us
        del keep

    def fileno(self) -> int:
        return self._bell.fileno()  # a ring comes with every message (-1: no doorbell)

    def ready(self) -> bool:
        if self._matched is None:
            self._bell.drain()  # the rings so far: the descriptor must not stay readable
            # a matched probe takes the message off the queue: recv() receives this one
            self._matched = _probe(self._comm, 0, self._status)
        return self._matched is not None

    def goodbye(self) -> None:
        """Leaving normally: close the doorbell saying so."""
        self._bell.goodbye()


def _wait_sent(reqs: list[Any], options: config.Options) -> None:
    delay = options.poll_min
    while not MPI.Request.Testall(reqs):
        time.sleep(delay)
        delay = min(delay * 2, options.master_poll_max)


def finalize_last(linger: float = 0.5) -> None:
    """Rank 0 ending a failed run: finalize MPI now, then let the workers exit first.

    ``MPI_Finalize`` synchronises the ranks, so they all leave it together; a rank 0 that exits
    non-zero before the others have exited makes the launcher kill them and report their signal
    (exit code 9) instead of rank 0's code."""
    MPI.Finalize()
    time.sleep(linger)


def release_workers(options: config.Options) -> None:
    """Rank 0, before any transport exists: tell every worker to exit (the run cannot start)."""
    comm = MPI.COMM_WORLD
    stop = dumps(protocol.stop())
    sent = [_isend(comm, stop, rank) for rank in range(1, comm.Get_size())]
    _wait_sent([r for reqs, _ in sent for r in reqs], options)
    _await_byes(comm, comm.Get_size() - 1, options)


#: Longest wait for the workers' goodbyes: a worker inside a long evaluation reads STOP only after
#: it, and the caller then falls back to MPI_Abort (a failing run) or waits at MPI_Finalize.
BYE_TIMEOUT = 10.0


def _await_byes(comm: Any, n_workers: int, options: config.Options) -> bool:
    """Receive (and drop) every message until each worker has said BYE, so that no message is
    left unreceived when MPI is finalised (MPICH then fails ``MPI_Finalize``).  Sleep-polls."""
    status = MPI.Status()
    gone: set[int] = set()
    backoff = Backoff(options.poll_min, options.master_poll_max, options.poll_fraction)
    deadline = time.monotonic() + BYE_TIMEOUT
    while len(gone) < n_workers and time.monotonic() < deadline:
        msg = _probe(comm, MPI.ANY_SOURCE, status)
        if msg is None:
            time.sleep(backoff.next())
            continue
        source = status.Get_source()
        if loads(_recv_matched(comm, msg, status))[0] == protocol.BYE:
            gone.add(source)
    return len(gone) == n_workers


def serve_worker(options: config.Options, job: JobSpec | None = None) -> int:
    """Run this rank as a worker until the master says STOP (``job``: see ``worker.serve``)."""
    from .._worker import serve

    channel = MPIChannel(options)
    code = serve(channel, job)
    channel.goodbye()  # after BYE: the master's death watch knows this one left on purpose
    return code
