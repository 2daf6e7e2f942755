"""Several hosts on one machine, for the tests: one Linux network namespace per emulated host, and
an ``ssh`` stand-in that runs a command "on" one of them, for SCOOP's ``--hostfile``, MPICH's hydra
(``-launcher ssh -launcher-exec``) and Open MPI (``--mca plm_rsh_agent``) alike.

Hosts as network namespaces on a bridge, ``ip netns exec HOST unshare --uts`` for a host name of
its own, and a shared file system, made safe for tests that run in parallel and leave nothing
behind:

* **Names of its own.**  Each :class:`Hosts` picks a random prefix (``evt3fa9c1h1``, ...) that no
  namespace has yet, so two test sessions (or xdist workers) never share a host.
* **Nothing in the machine's own network.**  The bridge that joins the hosts lives in a namespace
  of its own (``...sw``), not in the root namespace: no interface, address or route is added to
  the machine, and every set of hosts can use the same subnet without meeting another.
* **Names resolve on the hosts only**, through ``/etc/netns/HOST/hosts``, which ``ip netns exec``
  mounts over ``/etc/hosts`` for the command it runs; the machine's ``/etc/hosts`` is not touched.
* **Every process of a run is on a host**: the launcher is started in the first host, and the
  stand-in starts everything else in another; :meth:`Hosts.pids` finds them all by namespace
  (``ip netns pids``), :meth:`Hosts.down` kills what is left by PID, then removes everything.

* **MPI across the hosts** (:meth:`Hosts.mpiexec`): the launcher runs in the first host, as the
  SCOOP runs do; the proxies (hydra's ``hydra_pmi_proxy``, Open MPI's ``orted``) it starts on the
  others through the stand-in connect back to it over the bridge.  Each host's side of the bridge
  is its ``eth0`` (:data:`IFACE`), so hydra's ``-iface`` is ``eth0``, not the bridge's name as in a
  layout where the bridge is in the machine's own namespace (``-iface lo`` fails: the proxies
  then connect to 127.0.0.1, their own host).  Without ``-iface`` it works as well, since every
  host name resolves to the host's ``eth0`` address on every host.

Needs root, ``ip`` (iproute2), ``unshare`` (util-linux) and ``hostname``; :func:`require` says
which is missing (a skip on a developer's machine, a failure under CI).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from helpers import OPENMPI_PYTHON, prerequisite, require_mpiexec, require_openmpi

#: The hosts' subnet, inside their own bridge namespace (never routed from the machine).
SUBNET = "10.214.0"
#: Each host's interface on the bridge (the name is the same in every host's namespace).
IFACE = "eth0"
#: Where ``ip netns exec`` finds the files it mounts over /etc for a namespace.
NETNS_ETC = Path("/etc/netns")

#: An ``ssh`` stand-in: ``ssh [options] [user@]HOST COMMAND...`` runs COMMAND in HOST's network
#: and UTS namespaces, for these hosts only.
#: {hosts} is the ``case`` pattern of the host names.
_SSH = """#!/bin/sh
# ssh stand-in for the tests (tests/multihost.py): runs COMMAND "on" HOST, one of {hosts}
while [ $# -gt 0 ]; do case "$1" in -o|-p|-i|-l|-F) shift 2;; -*) shift;; *) break;; esac; done
host=${{1#*@}}; shift
case "$host" in {hosts}) ;; *) echo "ssh stand-in: no such host: $host" >&2; exit 255;; esac
exec ip netns exec "$host" unshare --uts sh -c "hostname $host; $*"
"""


def require() -> None:
    """Fail (under CI) or skip unless network namespaces can be made here."""
    if os.geteuid() != 0:
        prerequisite("emulating hosts needs root (network namespaces)")
    for tool, package in (("ip", "iproute2"), ("unshare", "util-linux"), ("hostname", "hostname")):
        if shutil.which(tool) is None:
            prerequisite(f"emulating hosts needs `{tool}` on PATH (Debian package {package})")


@contextlib.contextmanager
def emulated(n: int, where: Path, slots: int = 3) -> Iterator[Hosts]:
    """``n`` hosts, up for the ``with`` block and down after it, whatever happens (a module
    fixture's body); a missing prerequisite as :func:`require` says."""
    require()
    made = Hosts(n, where, slots)
    try:
        try:
            made.up()
        except RuntimeError as e:
            prerequisite(f"cannot emulate hosts here: {e}")
        yield made
    finally:
        made.down()


def _ip(*args: str) -> None:
    """Run ``ip ARGS``; raise with its message if it fails."""
    r = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {r.stderr.strip()}")


def _namespaces() -> set[str]:
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return {line.split()[0] for line in r.stdout.splitlines() if line.strip()}


class Hosts:
    """``n`` emulated hosts (see the module's docstring); :meth:`up`, then :meth:`down`, always.

    Attributes:
        names: the host names, also their namespaces' names; the first is where runs start.
        bin: a folder holding the ``ssh`` stand-in, to put first on ``PATH``.
        hostfile: a SCOOP hostfile with ``slots`` workers on each host.
    """

    def __init__(self, n: int, where: Path, slots: int = 3) -> None:
        taken = _namespaces()
        prefix = f"evt{secrets.token_hex(3)}"
        while any(name.startswith(prefix) for name in taken):
            prefix = f"evt{secrets.token_hex(3)}"
        self.names = [f"{prefix}h{i}" for i in range(1, n + 1)]
        self.switch = f"{prefix}sw"
        self.bin = where / "bin"
        self.hostfile = where / "hostfile"
        self.hostfile.write_text("".join(f"{name} {slots}\n" for name in self.names))
        self._made: list[str] = []  # namespaces created so far: what down() removes

    # ------------------------------------------------------------------ up and down
    def up(self) -> None:
        """Make the namespaces, the bridge, the addresses and names, and the ``ssh`` stand-in.

        Raises:
            RuntimeError: an ``ip`` command failed (its message says why).
        """
        self._add(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        names = "".join(f"{SUBNET}.{10 + i} {name}\n" for i, name in enumerate(self.names, 1))
        for i, name in enumerate(self.names, 1):
            self._add(name)
            # the veth pair is made inside the namespaces: no interface name in the machine's
            _ip("-n", self.switch, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0",
                "netns", name)  # fmt: skip
            _ip("-n", self.switch, "link", "set", f"p{i}", "master", "br0", "up")
            _ip("-n", name, "addr", "add", f"{SUBNET}.{10 + i}/24", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")
            _ip("-n", name, "link", "set", "lo", "up")
            etc = NETNS_ETC / name
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(f"127.0.0.1 localhost\n::1 localhost\n{names}")
        self.bin.mkdir(exist_ok=True)
        ssh = self.bin / "ssh"
        ssh.write_text(_SSH.format(hosts="|".join(self.names)))
        ssh.chmod(0o755)

    def _add(self, name: str) -> None:
        _ip("netns", "add", name)
        self._made.append(name)

    def down(self) -> list[int]:
        """Kill every process left on the hosts (by PID), remove the namespaces and their
        ``/etc/netns`` files; return the PIDs that were still there.  Safe to call twice."""
        left = self.kill()
        for name in reversed(self._made):
            with contextlib.suppress(RuntimeError):
                _ip("netns", "del", name)
            shutil.rmtree(NETNS_ETC / name, ignore_errors=True)
        self._made.clear()
        with contextlib.suppress(OSError):
            NETNS_ETC.rmdir()  # only if no other namespace keeps files there
        return left

    # ------------------------------------------------------------------ processes
    def pids(self) -> dict[str, list[int]]:
        """The live processes on each host (zombies excluded): every process there is a run's."""
        found = {}
        for name in self.names:
            if name not in self._made:
                continue
            r = subprocess.run(
                ["ip", "netns", "pids", name], capture_output=True, text=True, check=False
            )
            alive = [int(p) for p in r.stdout.split() if _alive(int(p))]
            if alive:
                found[name] = alive
        return found

    def wait_empty(self, within: float) -> tuple[dict[str, list[int]], float]:
        """Wait up to ``within`` s for every host to have no process; return what is left and how
        long the wait took."""
        start = time.monotonic()
        left = self.pids()
        while left and time.monotonic() < start + within:
            time.sleep(0.05)
            left = self.pids()
        return left, time.monotonic() - start

    def describe(self, left: dict[str, list[int]]) -> str:
        """Who is left, one process a line: host, PID, parent, command line."""
        lines = []
        for name, pids in left.items():
            for pid in pids:
                lines.append(f"  {name}: pid {pid} (parent {_parent(pid)}) {_args(pid)[:160]}")
        return "\n".join(lines)

    def kill(self) -> list[int]:
        """SIGKILL every process on the hosts, by PID; return those found."""
        killed: list[int] = []
        for _ in range(20):  # a process may start one more before it dies: look again
            left = [pid for pids in self.pids().values() for pid in pids]
            if not left:
                break
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            killed += [pid for pid in left if pid not in killed]
            time.sleep(0.1)
        return killed

    def mpiexec(
        self, flavour: str, ranks: list[int], *args: str, flags: tuple[str, ...] = ()
    ) -> list[str]:
        """``mpiexec FLAGS ... python ARGS`` across the hosts, ``ranks[i]`` ranks on host ``i``
        (rank 0 on the first), with the MPICH wheel (``"mpich-wheel"``) or the system's Open MPI
        (``"openmpi"``), started on the first host (:meth:`command`)."""
        hosts = ",".join(f"{name}:{n}" for name, n in zip(self.names, ranks))
        total = str(sum(ranks))
        ssh = str(self.bin / "ssh")
        if flavour == "openmpi":
            # helpers.OPENMPI_FLAGS, but TCP between the hosts (shared memory within one)
            cmd = [require_openmpi(), *flags, "--allow-run-as-root", "--oversubscribe"]
            cmd += ["--mca", "btl", "self,vader,tcp"]
            cmd += ["--mca", "plm_rsh_agent", ssh, "--host", hosts, "-n", total]
            return self.command(*cmd, str(OPENMPI_PYTHON), *args)
        if flavour != "mpich-wheel":
            raise ValueError(f"unknown MPI flavour {flavour!r}")
        cmd = [require_mpiexec(), *flags, "-launcher", "ssh", "-launcher-exec", ssh]
        cmd += ["-iface", IFACE]
        return self.command(*cmd, "-hosts", hosts, "-n", total, sys.executable, *args)

    def command(self, *args: str) -> list[str]:
        """``ARGS`` run on the first host, under its host name (the launcher is ``exec``'d: its
        PID is the Popen's)."""
        host = self.names[0]
        line = " ".join(shlex.quote(a) for a in args)
        return ["ip", "netns", "exec", host, "unshare", "--uts", "sh", "-c",
                f"hostname {host} && exec {line}"]  # fmt: skip


def _stat(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()
    except OSError:
        return []


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


def _parent(pid: int) -> str:
    fields = _stat(pid)
    return fields[1] if len(fields) > 1 else "?"


def _args(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"
