"""A real SLURM cluster over emulated hosts (``tests/multihost.py``), for the tests: one slurmd
per host, slurmctld on the hosts' bridge, a munged of its own; brought down with nothing left.

Layout, and why:

* **slurmctld in the bridge's namespace.**  The hosts' bridge lives in a namespace of its own
  (``Hosts.switch``), not in the machine's.  Here it gets an address (``SUBNET.1``) and the
  controller runs there, named ``localhost(SUBNET.1)`` in ``SlurmctldHost`` (slurmctld refuses a
  name that is not its host's; ``localhost`` it accepts whatever the host name).  Every host
  reaches it over the bridge; killing a host's processes never touches it.
* **Clients in the same namespace.**  ``sbatch``, ``scontrol``, ``squeue``, ``scancel`` and
  ``python -m evocluster submit/status`` reach the controller only from there:
  :meth:`SlurmNodes.client` prefixes a command with ``nsenter --net=`` that namespace.
* **slurmd through** ``slurm/cluster/on-host``: ``nsenter --net``, **not** ``ip netns exec``,
  which mounts a fresh ``/sys`` that hides the cgroup mounts (slurmd 22.05: "No filesystem
  mounted on /sys/fs/cgroup"); then ``unshare --uts --mount`` for the host's name and its
  ``/etc/hosts`` (bound from ``/etc/netns/HOST/hosts``, as ``ip netns exec`` would, in a private
  mount namespace), so that the job's processes, children of slurmd, are on that host, under its
  name.
* **No collision with** ``tests/slurm/test_slurm.py``'s one-node cluster, which may run at the
  same time on the other xdist worker: its daemons listen on 6817/6818 in the machine's
  namespace, these in namespaces of their own; its state is ``$TMP/evocluster-slurm-tests``, this
  one's ``$TMP/evocluster-slurm-nodes-PREFIX`` (the hosts' random prefix); its ClusterName is
  ``evocluster``, this one's ``evonodes``; its job ids come from the clock below 60,000,001, these
  above (MPICH names its shared memory after the job id).
* ``slurm/cluster/up.sh`` and ``down.sh`` do the work (``EVOSLURM_NODES``,
  ``EVOSLURM_NODE_EXEC``, ``EVOSLURM_CONTROLLER``): PIDs recorded, stopped by PID, state removed.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import multihost
from helpers import ROOT, clean_env, prerequisite

CLUSTER = ROOT / "slurm" / "cluster"
SBIN = os.pathsep.join(["/usr/sbin", "/sbin"])
#: The controller's address, on the bridge, in the bridge's namespace.
CONTROLLER = f"{multihost.SUBNET}.1"
CLUSTER_NAME = "evonodes"

#: Runs a command "on" a host: its network, UTS and (private) mount namespaces.
ON_HOST = CLUSTER / "on-host"


def first_job_id() -> int:
    """Job ids above test_slurm.py's (which are below 60,000,001), from the clock, 10 a second."""
    return 60_000_001 + int(time.time()) % 700_000 * 10


@contextlib.contextmanager
def cluster(n: int, where: Path, cpus: int = 4) -> Iterator[SlurmNodes]:
    """``n`` emulated hosts running a SLURM cluster for the ``with`` block, brought down after it
    whatever happens; a missing prerequisite skips (fails under CI)."""
    with multihost.emulated(n, where) as hosts:
        # not under pytest's temporary folders, which munged (as user munge) cannot enter
        root = Path(tempfile.gettempdir()) / f"evocluster-slurm-nodes-{hosts.switch}"
        nodes = SlurmNodes(hosts, root, cpus)
        try:
            nodes.up()
            yield nodes
        finally:
            nodes.down()


class SlurmNodes:
    """The cluster over ``hosts``: :meth:`up`, :meth:`client`, :meth:`job_processes`,
    :meth:`down` (the hosts themselves are brought down by their owner)."""

    def __init__(self, hosts: multihost.Hosts, root: Path, cpus: int) -> None:
        self.hosts, self.root, self.cpus = hosts, root, cpus
        self.conf = root / "etc" / "slurm.conf"
        self.nodes = hosts.names

    def _script(self, name: str, **extra: str) -> subprocess.CompletedProcess[str]:
        env = clean_env(
            EVOSLURM_ROOT=str(self.root),
            PATH=f"{os.environ.get('PATH', '')}:{SBIN}",
            SLURM_CONF=str(self.conf),
            **extra,
        )
        return subprocess.run(
            self.client("bash", str(CLUSTER / name)),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def up(self) -> None:
        """Give the bridge its address, then ``up.sh`` in the bridge's namespace."""
        for program in ("slurmctld", "slurmd", "sbatch", "munged", "nsenter"):
            if not any((Path(d) / program).exists() for d in [*SBIN.split(":"), "/usr/bin"]):
                prerequisite(f"a SLURM cluster over hosts needs {program} (bash .ci/slurm)")
        switch = self.hosts.switch
        multihost._ip("-n", switch, "addr", "add", f"{CONTROLLER}/24", "dev", "br0")
        multihost._ip("-n", switch, "link", "set", "lo", "up")
        addresses = " ".join(
            f"{name}={multihost.SUBNET}.{10 + i}" for i, name in enumerate(self.nodes, 1)
        )
        up = self._script(
            "up.sh",
            EVOSLURM_NODES=addresses,
            EVOSLURM_NODE_EXEC=f"{ON_HOST} {{name}}",
            EVOSLURM_CONTROLLER=f"localhost={CONTROLLER}",
            EVOSLURM_CLUSTER=CLUSTER_NAME,
            EVOSLURM_CPUS=str(self.cpus),
            EVOSLURM_FIRST_JOB_ID=str(first_job_id()),
        )
        if up.returncode != 0:
            last = (up.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise RuntimeError(f"slurm/cluster/up.sh over {len(self.nodes)} hosts: {last}")

    def client(self, *args: str) -> list[str]:
        """``ARGS`` run where the controller is reachable (the bridge's namespace)."""
        return ["nsenter", f"--net=/run/netns/{self.hosts.switch}", *args]

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for SLURM's clients and ``submit``: SLURM_CONF, and nothing of an
        enclosing allocation."""
        env = clean_env(SLURM_CONF=str(self.conf), **extra)
        for name in list(env):
            if name.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")) and name != "SLURM_CONF":
                del env[name]
        return env

    def daemons(self) -> dict[str, int]:
        """The PIDs up.sh recorded: ``slurmctld``, ``munged``, ``slurmd-HOST``."""
        found = {}
        for pidfile in (self.root / "run").glob("*.pid"):
            with contextlib.suppress(OSError, ValueError):
                found[pidfile.stem] = int(pidfile.read_text())
        return found

    def job_processes(self) -> dict[str, list[int]]:
        """Every process on the hosts but the slurmd daemons: what jobs left there."""
        daemons = set(self.daemons().values())
        found = {}
        for host, pids in self.hosts.pids().items():
            left = [p for p in pids if p not in daemons and not _is_slurmd(p, daemons)]
            if left:
                found[host] = left
        return found

    def down(self) -> None:
        """``down.sh`` (jobs cancelled, daemons stopped by PID, state removed); then whatever is
        still alive of what up.sh recorded is killed (by PID), and the bridge's address goes with
        its namespace (the hosts' owner removes it)."""
        recorded = self.daemons()
        if (self.root / "run").exists():
            self._script("down.sh")
        for pid in recorded.values():
            with contextlib.suppress(OSError):  # gone, as it should be: nothing to check
                if Path(os.readlink(f"/proc/{pid}/exe")).name in ("slurmctld", "slurmd", "munged"):
                    os.kill(pid, 9)


def _is_slurmd(pid: int, daemons: set[int]) -> bool:
    """A child slurmd forked to answer a request (it ends by itself), not a job's process."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return False
    return bool(re.search(r"/slurmd$", exe)) and int(stat[1]) in daemons
