"""The suite's own rules, applied to every test.

* **Markers are declared** (``pyproject.toml`` registers them), by each test or each parameter
  (``pytest.param(..., marks=pytest.mark.mpi)``, ``helpers.declare``), never inferred from a
  name.  ``helpers.run`` fails a test that launches ``mpiexec``, SCOOP or ``srun`` without its
  marker, so ``-m "not mpi and not scoop"`` never starts one.
* **Timeouts**: ``helpers.run`` learns when the test's pytest timeout fires and ends its runs
  before that.
* **Nothing left behind**: at the end of the session (after every xdist worker has finished), no
  process of any session ``helpers.run`` started may be alive; if one is, it is killed and the
  test session fails.  Nor may an MPI library's shared memory segment in ``/dev/shm`` that one of
  those runs made (``helpers.SHM_PREFIXES``; MPICH's used to outlive every ``MPI_Abort``, and a
  stale one hangs a later job of the same name in ``MPI_Init``): one that was not there when
  the session began, that no live process maps, and that was made while a run of this session
  was running is removed and fails the session.  (Another program's segments are told apart by
  those three; on a machine where other test sessions run at the same time, one of theirs made
  during a run of this session and left behind would be blamed here too.)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import helpers
import pytest

import evocluster


# ---------------------------------------------------------------------------- per test
@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    helpers.current_test = item
    try:
        return (yield)
    finally:
        helpers.current_test = None
        helpers.test_deadline = None


class _TimeoutWatch:
    """Learns each test's pytest-timeout deadline when pytest-timeout sets its timer (returns
    None, so pytest-timeout's own implementation still sets it)."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_timeout_set_timer(self, item: pytest.Item, settings: object) -> None:
        timeout = getattr(settings, "timeout", None)
        if timeout:
            helpers.test_deadline = time.monotonic() + float(timeout)

    @pytest.hookimpl(tryfirst=True)
    def pytest_timeout_cancel_timer(self, item: pytest.Item) -> None:
        helpers.test_deadline = None


# ---------------------------------------------------------------------------- xdist groups
class _XdistGroups:
    """``--dist loadgroup`` as xdist documents it, on pytest >= 9.2 too.

    Tests that share one run per configuration (module-level caches in test_conformance.py,
    test_roundtrip.py, ...) carry ``xdist_group`` marks so that one worker runs all of them, and
    the run happens once.  pytest-xdist 3.8 passes the group to its scheduler by appending
    ``@group`` to ``item._nodeid``, which pytest 9.2's structured node ids ignore: every test is
    then scheduled on its own, silently (pytest-dev/pytest-xdist#1386).  Here each worker writes
    its tests' groups next to the session records, and the scheduler reads them; a node id that
    does carry ``@group`` (a fixed xdist) is left to xdist's own rule.
    """

    def __init__(self, where: Path) -> None:
        self.where = where

    @pytest.hookimpl(trylast=True)  # after every mark is in place
    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        worker = getattr(config, "workerinput", {}).get("workerid")
        if worker is None:
            return
        groups = {}
        for item in items:
            names = sorted(
                {
                    str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                    for m in item.iter_markers("xdist_group")
                }
            )
            if names:
                groups[item.nodeid] = "_".join(names)
        (self.where / f"groups-{worker}.json").write_text(json.dumps(groups))

    @pytest.hookimpl(tryfirst=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        if config.getvalue("dist") != "loadgroup":
            return None
        from xdist.scheduler import LoadGroupScheduling

        where = self.where

        class Scheduling(LoadGroupScheduling):  # type: ignore[misc]
            groups: dict[str, str] | None = None

            def _split_scope(self, nodeid: str) -> str:
                if self.groups is None:  # every worker has collected by now, all alike
                    self.groups = {}
                    for path in where.glob("groups-*.json"):
                        self.groups.update(json.loads(path.read_text()))
                return self.groups.get(nodeid) or super()._split_scope(nodeid)

        return Scheduling(config, log)


# ---------------------------------------------------------------------------- per session
_SESSIONS_DIR = pytest.StashKey[Path]()


_SHM_BEFORE = pytest.StashKey[dict[str, int]]()


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("timeout"):
        config.pluginmanager.register(_TimeoutWatch(), "evocluster-timeout-watch")
    if not hasattr(config, "workerinput"):  # the controller, or a run without xdist
        where = Path(tempfile.mkdtemp(prefix="evocluster-test-sessions-"))
        config.stash[_SESSIONS_DIR] = where
        config.stash[_SHM_BEFORE] = helpers.shm_entries()
        os.environ[helpers.SESSIONS_ENV] = str(where)  # xdist workers inherit it
    elif os.environ.get(helpers.SESSIONS_ENV):
        where = Path(os.environ[helpers.SESSIONS_ENV])
    else:  # a worker that did not inherit it (not started by this controller's machine)
        return
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistGroups(where), "evocluster-xdist-groups")


def _recorded_sessions(where: Path) -> set[int]:
    sids = set()
    for path in where.glob("*.sids"):
        sids.update(int(line) for line in path.read_text().split())
    return sids


@pytest.hookimpl(wrapper=True)
def pytest_sessionfinish(session: pytest.Session) -> Generator[None, object, object]:
    result = yield  # every other sessionfinish first: xdist stops its workers there
    where = session.config.stash.get(_SESSIONS_DIR, None)
    if where is not None:
        _check_nothing_left(session, where)
    return result


def _check_nothing_left(session: pytest.Session, where: Path) -> None:
    try:
        _check_no_process_left(session, where)
        _check_no_shared_memory_left(session, where)
    finally:
        shutil.rmtree(where, ignore_errors=True)


def _left_behind(session: pytest.Session, message: str) -> None:
    """Fail the test session with ``message``, under a banner."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write("\n")
        reporter.write_sep("!", "LEFT BEHIND", red=True, bold=True)
        reporter.write_line(message, red=True)
    else:
        print(message, flush=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _check_no_shared_memory_left(session: pytest.Session, where: Path) -> None:
    """The runs' processes are gone by now: an MPI segment one of them made is a leftover."""
    before = session.config.stash.get(_SHM_BEFORE, {})
    now = time.time()
    windows = helpers.run_windows(where, until=now)
    new = {n: i for n, i in helpers.shm_entries().items() if before.get(n) != i}
    if not new or not windows:
        return
    mapped = helpers.shm_mapped()  # in use by a live process: not a leftover (yet)
    left = []
    for name in sorted(set(new) - mapped):
        path = os.path.join(helpers.SHM, name)
        try:
            made = os.stat(path).st_ctime  # set as the segment is created and sized
        except OSError:
            continue
        # a second's slack either side: ctime and time.time() tick apart
        if any(start - 1 <= made <= end + 1 for start, end in windows):
            left.append(name)
            with contextlib.suppress(OSError):
                os.unlink(path)  # a stale one can hang a later job of the same name
    if left:
        _left_behind(
            session,
            f"{len(left)} MPI shared memory segment(s) made during the test session's runs "
            f"outlived them (removed now): {', '.join(f'{helpers.SHM}/{n}' for n in left)}",
        )


def _check_no_process_left(session: pytest.Session, where: Path) -> None:
    sids = _recorded_sessions(where)
    deadline = time.monotonic() + 5  # a run's last processes may still be on their way out
    alive = {sid: helpers.session_processes(sid) for sid in sids}
    while any(alive.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = {sid: helpers.session_processes(sid) for sid in sids}
    left = {sid: helpers.kill_session(sid) for sid, pids in alive.items() if pids}
    left = {sid: pids for sid, pids in left.items() if pids}
    if left:
        _left_behind(
            session,
            f"processes of {len(left)} of the {len(sids)} runs the tests started outlived the "
            f"test session (killed now): {left}",
        )


# ---------------------------------------------------------------------------- executors
# Shared by the engine and policy tests; one of each per test module (module scope).
@pytest.fixture(scope="module")
def serial() -> Any:
    """A serial evocluster executor (everything in this process)."""
    with evocluster.Executor(backend="serial") as ex:
        yield ex


@pytest.fixture(scope="module")
def local2() -> Any:
    """An evocluster executor with a local pool of 2 workers of its own."""
    with evocluster.Executor(backend="local", workers=2) as ex:
        yield ex
