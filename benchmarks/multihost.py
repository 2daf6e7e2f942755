"""Large data across hosts (issue 23): jobs/bigdata.py and W4 over MPI on one host and on two
emulated hosts, with one copy of the shared dataset per host (the default) against one copy per
worker (``EVOCLUSTER_SHARED_MEMORY=0``): the bytes the master sent to each host, and the time.

Needs root and iproute2: the hosts are network namespaces on a bridge (``tests/multihost.py``,
the tests' own), 3 ranks on the first (the master and 2 workers) and 2 on the second; the
one-host runs have the same 5 ranks.  The per-host bytes come from each run's log (its last
``workers`` record: the bytes of the tasks sent to each worker, shared objects included)::

    python benchmarks/multihost.py                     # ~2 min on 2 cores
    python benchmarks/multihost.py --mb 400 --reps 3

Prints one markdown table; not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import multihost  # noqa: E402  (the tests' emulated hosts)
from helpers import clean_env, require_mpiexec  # noqa: E402

RANKS = [3, 2]
W4_JOB = """
import sys, numpy as np, evocluster
def row_sum(row):
    return float(row.sum())
if __name__ == "__main__":
    rows, size = int(sys.argv[1]), int(sys.argv[2])
    ex = evocluster.get_executor()
    ex.map(row_sum, [np.zeros(8)] * (4 * ex.n_workers))  # warm-up
    data = list(np.random.default_rng(4).random((rows, size // 8)))
    out = ex.map(row_sum, data)
    assert all(abs(a - float(r.sum())) < 1e-6 * abs(a) for a, r in zip(out, data))
"""


def per_host(log: Path) -> dict[str, int]:
    """Bytes sent to each host's workers, from the run log's last ``workers`` record."""
    names: list[str] = []
    last: dict[str, Any] = {}
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("record") == "workers":
            names = record.get("hosts", names)
            last = record
    hosts: dict[str, int] = {}
    for host, sent in zip(names, last.get("bytes_sent", []), strict=False):
        hosts[host] = hosts.get(host, 0) + sent
    return hosts


def run(hosts: multihost.Hosts | None, where: Path, args: list[str], shm: bool) -> dict[str, Any]:
    log = where / f"run-{time.monotonic_ns()}.jsonl"
    job = ["-m", "evocluster", "--quiet", "--log", str(log), *args]
    if hosts is None:
        cmd = [require_mpiexec(), "-n", str(sum(RANKS)), sys.executable, *job]
    else:
        cmd = hosts.mpiexec("mpich-wheel", RANKS, *job)
    env = clean_env(EVOCLUSTER_SHARED_MEMORY="1" if shm else "0")
    start = time.monotonic()
    proc = subprocess.run(
        cmd, check=False, cwd=where, env=env, capture_output=True, text=True, timeout=600
    )
    seconds = time.monotonic() - start
    if hosts is not None:
        hosts.kill()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}")
    sent = per_host(log)
    # name the hosts by role: the master's (rank 0's) first
    ordered = sorted(sent.items(), key=lambda kv: hosts is not None and kv[0] != hosts.names[0])
    return {"seconds": seconds, "sent": [b for _, b in ordered]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=float, default=100, help="bigdata.py's dataset (MB)")
    p.add_argument("--w4-rows", type=int, default=200, help="W4: rows of 1 MiB")
    p.add_argument("--reps", type=int, default=2)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        (where / "w4.py").write_text(W4_JOB)
        bigdata = [str(ROOT / "jobs" / "bigdata.py"), "--mb", str(a.mb), "--ngen", "3"]
        w4 = [str(where / "w4.py"), str(a.w4_rows), str(1 << 20)]
        rows = []
        (where / "hosts").mkdir()
        with multihost.emulated(2, where / "hosts") as hosts:
            for name, args in ((f"bigdata.py --mb {a.mb:g}", bigdata), ("W4", w4)):
                for placement in ("1 host", "2 hosts"):
                    for shm in (True, False):
                        runs = [
                            run(hosts if placement == "2 hosts" else None, where, args, shm)
                            for _ in range(a.reps)
                        ]
                        rows.append((name, placement, shm, runs))
                        print(f"done: {name} {placement} shm={shm}", file=sys.stderr)
    load = os.getloadavg()[0]
    print(f"| job | hosts | sharing | MB sent to the master's host | MB sent to the other | "
          f"time (s, median of {a.reps}) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name, placement, shm, runs in rows:
        sent = runs[-1]["sent"] + [0, 0]
        secs = statistics.median(r["seconds"] for r in runs)
        how = "one copy per host" if shm else "one copy per worker"
        print(f"| {name} | {placement} | {how} | {sent[0] / 1e6:.1f} | {sent[1] / 1e6:.1f} | "
              f"{secs:.2f} |")  # fmt: skip
    print(f"\n(1-minute load average at the end: {load:.1f})")


if __name__ == "__main__":
    main()
