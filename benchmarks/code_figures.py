"""Re-measure the figures evocluster's comments quote (RESULTS.md, "Figures quoted in the code").

    python benchmarks/code_figures.py          # the cheap ones, one machine, ~30 s
    python benchmarks/code_figures.py --mpi    # also the MPI ones (mpiexec beside python), ~40 s

Prints a markdown table, one row per figure: its id (the one the comment cites), what it is, where
the code quotes it, and the figure measured now.  Then the figures this script does not measure
(a full benchmark, or SLURM), each with the command that does.  Run it from the repository root
with evocluster importable (``pip install -e .``, or the repository on ``sys.path``).

Import costs are measured as a worker rank pays them: in a fresh interpreter that has already
imported what a worker rank imports (``WORKER_MODULES``), the median over ``REPS`` interpreters of
the time the one statement takes.  CPU costs are ``time.process_time`` (user + system, this
process), so they include the kernel's part of a sleep and a wake-up.
"""

from __future__ import annotations

import argparse
import os
import pickle
import random
import shutil
import socket
import statistics
import subprocess
import sys
import textwrap
import time
import timeit
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evocluster import _config as config  # noqa: E402
from evocluster import rng  # noqa: E402
from evocluster._backends.base import Backoff  # noqa: E402

#: what an MPI worker rank has imported before it evaluates (ARCHITECTURE.md; mpi4py left out)
WORKER_MODULES = (
    "evocluster",
    "evocluster._cli",
    "evocluster._worker",
    "evocluster._protocol",
    "evocluster._serialization",
    "evocluster._config",
)
REPS = 9
OPTS = config.Options()

Row = tuple[str, str, str, str]


# --- import costs ------------------------------------------------------------------------------


def fresh_cost(stmt: str, base: tuple[str, ...] = WORKER_MODULES) -> tuple[float, list[str]]:
    """Median seconds of ``stmt`` in a fresh interpreter after importing ``base``, and the
    modules ``stmt`` loaded (from the first interpreter)."""
    code = textwrap.dedent(f"""
        import sys, time
        for m in {base!r}:
            __import__(m)
        before = set(sys.modules)
        t = time.perf_counter()
        exec({stmt!r})
        dt = time.perf_counter() - t
        print(dt, " ".join(sorted(set(sys.modules) - before)))
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    times, new = [], []
    for i in range(REPS):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        ).stdout.split(maxsplit=1)
        times.append(float(out[0]))
        if i == 0:
            new = out[1].split() if len(out) > 1 else []
    return statistics.median(times), new


def import_row(fid: str, what: str, where: str, stmt: str, watch: tuple[str, ...]) -> Row:
    seconds, new = fresh_cost(stmt)
    loaded = [m for m in watch if m not in new]
    figure = f"{seconds * 1e3:.1f} ms ({len(new)} modules)"
    if loaded:
        figure += f"; already loaded by a worker rank's modules: {', '.join(loaded)}"
    return fid, what, where, figure


# --- sleeping and waking -----------------------------------------------------------------------


def sleep_wake_cpu(length: float, n: int) -> float:
    """CPU seconds per ``time.sleep(length)``."""
    c = time.process_time()
    for _ in range(n):
        time.sleep(length)
    return (time.process_time() - c) / n


def idle_worker(seconds: float) -> tuple[int, float, float]:
    """An idle worker's sleep-poll loop (the worker's Backoff, nothing to find) for ``seconds``:
    wake-ups, CPU seconds, and the sleep chosen at the first wake-up after 100 ms."""
    backoff = Backoff(OPTS.poll_min, OPTS.poll_max, OPTS.poll_fraction)
    c, t0 = time.process_time(), time.monotonic()
    wakes, after_100ms = 0, 0.0
    while time.monotonic() - t0 < seconds:
        sleep = backoff.next()
        if not after_100ms and time.monotonic() - t0 >= 0.1:
            after_100ms = sleep
        time.sleep(sleep)
        wakes += 1
    return wakes, time.process_time() - c, after_100ms


def answer_delay(backoff: Backoff, arrives: float) -> float:
    """Seconds between a message's arrival, ``arrives`` after the wait began, and the look that
    sees it (the message is only looked for, as an MPI probe would)."""
    backoff.reset()
    due = time.monotonic() + arrives
    while True:
        now = time.monotonic()
        if now >= due:
            return now - due
        time.sleep(backoff.next())


# --- serialisation and sockets -----------------------------------------------------------------


def class_payload() -> bytes:
    """A class the other side cannot import (defined in a function), as it travels by value."""
    import cloudpickle

    class Individual(list):  # the shape of a job's own class: a list subclass with a method
        weight = 1.0

        def score(self) -> float:
            return sum(self) * self.weight

    return cloudpickle.dumps(Individual, protocol=5)


def best_per_call(fn: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number


def socket_buffer() -> int:
    """Bytes a local worker's socket pair takes before a non-blocking send would block."""
    a, b = socket.socketpair()
    a.setblocking(False)
    sent, chunk = 0, bytes(1 << 16)
    try:
        while True:
            sent += a.send(chunk)
    except BlockingIOError:
        pass
    a.close()
    b.close()
    return sent


def message_rates(sizes: list[int], total: int = 64 << 20) -> dict[int, float]:
    """MiB/s of pickled messages of each size through a socket pair to a child process that
    unpickles each and answers one byte (a local worker's round trip, evaluation left out)."""
    a, b = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the child: length-prefixed messages in, one byte out, until length 0
        a.close()
        try:
            while n := int.from_bytes(b.recv(8, socket.MSG_WAITALL), "little"):
                buf = bytearray(n)
                view, got = memoryview(buf), 0
                while got < n:
                    got += b.recv_into(view[got:])
                pickle.loads(buf)
                b.sendall(b"\0")
        finally:
            os._exit(0)
    b.close()
    rates = {}
    for size in sizes:
        payload, count = bytes(size), max(4, total // size)
        t = time.perf_counter()
        for _ in range(count):
            data = pickle.dumps(payload, protocol=5)
            a.sendall(len(data).to_bytes(8, "little"))
            a.sendall(data)
            a.recv(1)
        rates[size] = count * size / (1 << 20) / (time.perf_counter() - t)
    a.sendall((0).to_bytes(8, "little"))
    os.waitpid(pid, 0)
    a.close()
    return rates


def receive_seconds(size: int) -> tuple[float, float]:
    """Seconds to receive ``size`` bytes from a child process: ``multiprocessing``'s
    ``Connection.recv_bytes`` (it gathers the message in a ``BytesIO``), then ``recv_into`` one
    preallocated buffer (as a local worker's socket does)."""
    import multiprocessing.connection as mpc

    out = []
    for kind in ("connection", "recv_into"):
        a, b = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            a.close()
            try:
                data = bytes(size)
                b.recv(1)
                if kind == "connection":
                    mpc.Connection(b.detach()).send_bytes(data)
                else:
                    b.sendall(data)
            finally:
                os._exit(0)
        b.close()
        t = time.perf_counter()
        a.sendall(b"\0")
        if kind == "connection":
            mpc.Connection(a.detach()).recv_bytes()
        else:
            buf = bytearray(size)
            view, got = memoryview(buf), 0
            while got < size:
                got += a.recv_into(view[got:])
            a.close()
        out.append(time.perf_counter() - t)
        os.waitpid(pid, 0)
    return out[0], out[1]


# --- the figures -------------------------------------------------------------------------------


def imports() -> list[Row]:
    where = "imported by the master only; cost a worker rank would pay"
    return [
        import_row(
            "F1",
            f"`import concurrent.futures` (with `logging`): {where}",
            "errors.py (`__getattr__`)",
            "import concurrent.futures",
            ("concurrent.futures", "logging"),
        ),
        import_row(
            "F2",
            f"`import ast`: {where}",
            "jobfile.py (`module_level_names`)",
            "import ast",
            ("ast",),
        ),
        import_row(
            "F3",
            f"`import hashlib`: {where}",
            "serialization.py (`FunctionTable.lookup`)",
            "import hashlib",
            ("hashlib",),
        ),
        import_row(
            "F4",
            "the IDNA codec a str host name makes `getaddrinfo` load",
            "backends/doorbell.py (`_resolvable`)",
            "import codecs; codecs.lookup('idna')",
            ("encodings.idna",),
        ),
        import_row(
            "F5",
            "`import dataclasses` (and `inspect`), avoided by `Options` being a NamedTuple",
            "config.py (`Options`)",
            "import dataclasses",
            ("dataclasses", "inspect"),
        ),
    ]


def loads_and_rng() -> list[Row]:
    data = class_payload()
    pickle.loads(data)  # cloudpickle imported and the class tracked, as on a worker in a run
    load = best_per_call(lambda: pickle.loads(data), 2000)
    seq = best_per_call(lambda: rng._sequence(12345, (7, 42)), 20000)
    gen = best_per_call(lambda: rng._Evaluation(12345, (7, 42)).make_generator(), 20000)
    seed = best_per_call(lambda: random.seed("evocluster.rng 12345 (7, 42)"), 50000)
    state = random.getstate()
    restore = best_per_call(lambda: random.setstate(random.getstate()), 20000)
    random.setstate(state)
    return [
        (
            "F6",
            "`pickle.loads` of a class sent by value (cloudpickle, a list subclass with a method)",
            "serialization.py (`_classes_by_payload`)",
            f"{load * 1e6:.0f} us per load ({len(data)} bytes)",
        ),
        (
            "F11",
            "an evaluation's `SeedSequence` (its `Generator` made from it)",
            "rng.py (module docstring)",
            f"{seq * 1e6:.1f} us ({gen * 1e6:.1f} us)",
        ),
        (
            "F12",
            "`random.seed` of the `(seed, key)` string",
            "rng.py (module docstring)",
            f"{seed * 1e6:.1f} us",
        ),
        (
            "F13",
            "`random.getstate()` before and `setstate()` after an evaluation",
            "rng.py (module docstring)",
            f"{restore * 1e6:.1f} us",
        ),
    ]


def waiting() -> list[Row]:
    cpu = {s: sleep_wake_cpu(s, n) for s, n in ((2e-5, 2000), (1e-3, 500), (1e-2, 100))}
    wakes, idle_cpu, after_100ms = idle_worker(5.0)
    worker = Backoff(OPTS.poll_min, OPTS.poll_max, OPTS.poll_fraction)
    delays = [answer_delay(worker, 0.040) for _ in range(15)]
    lat = {}
    for chunk, n in ((0.010, 100), (0.100, 20)):
        master = Backoff(
            OPTS.poll_min, OPTS.master_poll_max, OPTS.poll_fraction, OPTS.result_latency * chunk
        )
        lat[chunk] = statistics.mean(answer_delay(master, chunk) for _ in range(n)) / chunk
    per_wake = ", ".join(f"{v * 1e6:.0f} us ({s * 1e3:g} ms)" for s, v in cpu.items())
    return [
        (
            "F7",
            "CPU of one sleep-and-wake (`time.sleep(s)`, s in brackets)",
            "backends/base.py (`Backoff`), config.py (`poll_*`)",
            per_wake,
        ),
        (
            "F8",
            "wake-ups and CPU of an idle worker's sleep-poll loop (default `poll_*`), 5 s",
            "config.py (`poll_*`), backends/mpi.py (module docstring)",
            f"{wakes} wake-ups, {idle_cpu * 1e3:.1f} ms CPU ({idle_cpu / 5 * 100:.3f} % of a core)",
        ),
        (
            "F9",
            "a worker's sleep once it has waited 100 ms; the delay of its answer to a task sent "
            "after 40 ms (15 tries: median, max)",
            "backends/doorbell.py (module docstring), config.py (`poll_*`)",
            f"{after_100ms * 1e3:.1f} ms; {statistics.median(delays) * 1e3:.1f} ms, "
            f"max {max(delays) * 1e3:.1f} ms",
        ),
        (
            "F10",
            "the master's delay in seeing a result, as a share of the chunk's duration "
            "(`result_latency` 0.05; chunks of 10 ms and 100 ms)",
            "config.py (`result_latency`)",
            ", ".join(f"{v * 100:.1f} % ({c * 1e3:g} ms)" for c, v in lat.items()),
        ),
    ]


def transfers() -> list[Row]:
    import json

    from evocluster._serialization import serialize_callable

    by_ref = [sum(map(len, serialize_callable(f, "upgrade"))) for f in (json.dumps, rng.call)]
    sizes = [1 << 12, 1 << 14, 1 << 16, 1 << 18, 1 << 20, 1 << 22, 1 << 24]
    rates = message_rates(sizes)
    paid = min(s for s, r in rates.items() if r >= 0.9 * max(rates.values()))
    shown = ", ".join(f"{s >> 10} KiB {r:.0f}" for s, r in rates.items())
    conn, into = receive_seconds(512 << 20)
    return [
        (
            "F14",
            "bytes a local worker's socket pair takes before a send would block",
            "backends/local.py (`ProcessTransport`)",
            f"{socket_buffer() >> 10} KiB",
        ),
        (
            "F15",
            "a function sent by reference, serialised (`json.dumps`, `evocluster.rng.call`)",
            "backends/scoop/pool.py (module docstring)",
            " and ".join(f"{n} bytes" for n in by_ref),
        ),
        (
            "F16",
            "MiB/s of pickled messages by size through a socket pair, a child unpickling each "
            f"(within 10 % of the best rate from {paid >> 10} KiB)",
            "config.py (`chunk_max_bytes`)",
            shown,
        ),
        (
            "F23",
            "receiving 512 MiB from a child: `multiprocessing` `Connection.recv_bytes` vs "
            "`recv_into` one buffer (the difference x 4: the extra cost at 2 GiB)",
            "_framing.py (module docstring, `DIRECT`)",
            f"{conn:.2f} s vs {into:.2f} s (2 GiB: ~{(conn - into) * 4:.1f} s more)",
        ),
    ]


# --- MPI (--mpi) -------------------------------------------------------------------------------


def mpi_rank(what: str) -> None:
    """Run as a rank under mpiexec -n 2; rank 0 prints one line."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if what == "spin":  # rank 1 waits 2 s in a blocking recv; its CPU meanwhile
        if comm.rank == 1:
            c = time.process_time()
            comm.recv(source=0)
            comm.send(time.process_time() - c, dest=0)
        else:
            time.sleep(2.0)
            comm.send(None, dest=1)
            print(f"{comm.recv(source=1):.2f} CPU-s in a 2 s blocking recv")
    else:  # looks: Improbe calls until a message sent 50 ms earlier matches
        if comm.rank == 1:
            for _ in range(50):
                comm.Send([bytearray(8), MPI.BYTE], dest=0, tag=7)
                comm.recv(source=0, tag=8)
        else:
            status, looks = MPI.Status(), []
            for _ in range(50):
                time.sleep(0.05)
                n = 1
                while (msg := comm.Improbe(1, 7, status)) is None:
                    n += 1
                msg.Recv([bytearray(8), MPI.BYTE])
                looks.append(n)
                comm.send(None, dest=1, tag=8)
            print(f"seen on look {min(looks)}-{max(looks)} ({looks.count(2)} of 50 on the 2nd)")


def mpi_rows() -> list[Row]:
    mpiexec = Path(sys.executable).with_name("mpiexec")
    exe = str(mpiexec) if mpiexec.exists() else shutil.which("mpiexec")
    rows = []
    for fid, what, arg in (
        ("F17", "CPU burned by a rank in a blocking MPI recv", "spin"),
        ("F18", "Improbe calls until a message queued 50 ms earlier is seen (50 tries)", "looks"),
    ):
        if exe is None:
            rows.append((fid, what, "backends/mpi.py", "no mpiexec"))
            continue
        cmd = [exe, "-n", "2", sys.executable, __file__, "--mpi-rank", arg]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        out = proc.stdout.strip() or f"failed: {proc.stderr.strip()[-200:]}"
        rows.append((fid, what, "backends/mpi.py", f"{out} ({Path(exe).parent.name}/mpiexec)"))
    return rows


#: figures that need a full benchmark, MPI at scale or SLURM: (id, what, where, quoted, command)
ELSEWHERE = [
    (
        "F19",
        "W3 generational map efficiency without / with `prefetch_spread`",
        "config.py (`prefetch_spread`)",
        "EVOCLUSTER_PREFETCH_SPREAD=1e9 python benchmarks/run.py --only W3 "
        "--systems evocluster-local --reps 1 (without), the same with no variable (with)",
    ),
    (
        "F20",
        "CPU of idle MPI worker ranks (sleep-polling on their doorbells)",
        "backends/mpi.py (module docstring)",
        "python benchmarks/run.py --only W6 --systems evocluster-mpi (8 workers, 5 s); "
        "mpiexec -n 9 python -m evocluster tests/fixtures/jobs/idle_cpu.py 5",
    ),
    (
        "F21",
        "a master computing while 15 ranks wait in a blocking recv, slowed down",
        "backends/mpi.py (module docstring)",
        "none kept (35b01fe, 2026-11-23); F17 (--mpi) measures one spinning rank",
    ),
    (
        "F22",
        "seconds per SLURM daemon to exit after SIGTERM",
        "slurm/cluster/down.sh",
        "bash slurm/cluster/up.sh && bash slurm/cluster/down.sh (timestamped lines)",
    ),
]


def table(header: list[str], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mpi", action="store_true", help="also measure F17, F18 (mpiexec -n 2)")
    parser.add_argument("--mpi-rank", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mpi_rank:
        mpi_rank(args.mpi_rank)
        return 0
    load = os.getloadavg()[0]
    start = time.perf_counter()
    rows = imports() + loads_and_rng() + waiting() + transfers()
    if args.mpi:
        rows += mpi_rows()
    rows.sort(key=lambda r: int(r[0][1:]))
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    took = time.perf_counter() - start
    print(
        f"{when}; python {sys.version.split()[0]}; {os.cpu_count()} cores; "
        f"1-min load {load:.2f} at the start; {took:.0f} s"
    )
    print()
    print(table(["id", "what", "where", "now"], rows))
    print()
    print("Not measured here:")
    print()
    print(table(["id", "what", "where", "measured by"], ELSEWHERE))
    return 0


if __name__ == "__main__":
    sys.exit(main())
