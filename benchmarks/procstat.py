"""Finding one run's processes in ``/proc`` and the CPU time they use (Linux only).

``run.py`` gives every run a unique ``BENCH_TAG=<tag>`` in its environment; every process of that
run's tree (launcher, MPI proxies, master, workers) inherits it, and nothing else on the machine
has it.  W6 uses this to sum the CPU time of the workers; ``run.py`` uses it to find processes a
run left behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")

#: Processes that are not pool workers, by their program (argv[0]): its name's start ...
_INFRA_PREFIXES = ("mpiexec", "mpirun", "hydra_")
#: ... or its whole name (shells and pyenv shims, while they exec the real program),
_INFRA_PROGRAMS = ("bash", "sh", "pyenv")
#: ... or by a marker anywhere in the command line (multiprocessing's helper processes),
_INFRA_MARKERS = ("resource_tracker", "forkserver")
#: ... or a Python module run with ``-m``: SCOOP's launcher (its local broker is a thread of it)
#: and the per-host ``scoop.launch`` that starts the ``scoop.bootstrap`` processes (origin and
#: workers).
_INFRA_MODULES = ("scoop", "scoop.launch.__main__")


@dataclass(frozen=True)
class Proc:
    pid: int
    ticks: int  # utime + stime of the whole process (all threads), in clock ticks
    argv: tuple[str, ...]

    @property
    def cmd(self) -> str:
        return " ".join(self.argv)


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def snapshot(tag: str) -> dict[int, Proc]:
    """Every live process whose environment holds ``BENCH_TAG=<tag>``."""
    needle = f"BENCH_TAG={tag}".encode()
    found: dict[int, Proc] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            if needle not in _read(f"/proc/{pid}/environ").split(b"\0"):
                continue
            stat = _read(f"/proc/{pid}/stat").decode()
            fields = stat[stat.rindex(")") + 2 :].split()
            ticks = int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
            raw = _read(f"/proc/{pid}/cmdline").rstrip(b"\0").split(b"\0")
        except (OSError, ValueError, IndexError):  # gone meanwhile, or not ours to read
            continue
        found[pid] = Proc(pid, ticks, tuple(a.decode(errors="replace") for a in raw))
    return found


def is_infra(proc: Proc) -> bool:
    """Launcher, MPI proxy, SCOOP launcher/broker or multiprocessing helper: not a worker."""
    program = os.path.basename(proc.argv[0]) if proc.argv else ""
    module = proc.argv[2] if len(proc.argv) > 2 and proc.argv[1] == "-m" else None
    return (
        program.startswith(_INFRA_PREFIXES)
        or program in _INFRA_PROGRAMS
        or any(m in proc.cmd for m in _INFRA_MARKERS)
        or module in _INFRA_MODULES
    )


def cpu_split(before: dict[int, Proc], after: dict[int, Proc], master_pid: int) -> dict[str, Any]:
    """CPU seconds used between two snapshots by the master, the workers and the rest."""
    out: dict[str, Any] = {"master": 0.0, "worker": 0.0, "infra": 0.0, "n_worker": 0, "procs": []}
    for pid, proc in after.items():
        if pid not in before:
            continue
        seconds = (proc.ticks - before[pid].ticks) / CLK_TCK
        kind = "master" if pid == master_pid else "infra" if is_infra(proc) else "worker"
        out[kind] += seconds
        out["n_worker"] += kind == "worker"
        out["procs"].append([pid, kind, round(seconds, 3), proc.cmd[:100]])
    return out


def memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``RssAnon`` of ``pid`` in KiB (``/proc/<pid>/status``); empty if it is gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "RssAnon"):
                    out[key] = int(value.split()[0])
    except (OSError, ValueError, IndexError):
        return {}
    return out


def worker_memory(tag: str, master_pid: int) -> dict[str, Any]:
    """The resident memory of a run's worker processes (every process of the run but the master
    and the infrastructure, as :func:`cpu_split` counts them): how many, and the median and the
    largest ``VmRSS`` and ``RssAnon`` in MiB."""
    found = [
        memory_kib(pid)
        for pid, proc in snapshot(tag).items()
        if pid != master_pid and not is_infra(proc)
    ]
    found = [m for m in found if "VmRSS" in m]
    out: dict[str, Any] = {"n_rss": len(found)}
    for key, name in (("VmRSS", "rss"), ("RssAnon", "rss_anon")):
        values = sorted(m.get(key, 0) / 1024 for m in found)
        if values:
            out[f"worker_{name}_mib"] = values[len(values) // 2]
            out[f"worker_{name}_max_mib"] = values[-1]
    return out
