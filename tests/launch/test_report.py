"""``python -m evocluster report LOG [-o PNG] [--run N]``, run as users run it: on the logs of real
runs (a local pool, MPI, SCOOP, a job whose evaluations fail) and on copies of them cut
mid-line, the summary's figures checked against the log's own records and the picture read
back with matplotlib; then what happens to runs in the thousands of workers, and each error a
user can act on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    JOBS,
    OPENMPI_PYTHON,
    ROOT,
    clean_env,
    declare,
    launcher,
    output,
    prerequisite,
    require_module,
    require_mpiexec,
    run,
)

from evocluster._report import MAX_LANES, timeline
from evocluster._runlog import read

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: A job of plain maps (no engine loop) whose evaluations fail: every 13th item from the 5th.
FAILING_JOB = """\
import time

import evocluster


def fitness(x):
    time.sleep(0.005 * (x % 5))
    if x % 13 == 5:
        raise ValueError(f"bad individual {x}")
    return x * x


if __name__ == "__main__":
    for _ in range(3):
        evocluster.map(fitness, range(60))
"""


def _records(text: str) -> list[dict[str, Any]]:
    """The whole lines of a log, parsed (a torn last line left out)."""
    lines = text.split("\n")
    return [json.loads(line) for line in lines[:-1] if line.strip()]


def _logged(cmd: list[str], log: Path, cwd: Path, **env: str) -> list[dict[str, Any]]:
    r = run(cmd, timeout=120, cwd=cwd, env=clean_env(**env), no_leftovers=True)
    assert r.returncode == 0, output(r)
    return _records(log.read_text(encoding="utf-8"))


def _make_log(where: str, tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    """A real run's log: an engine loop on 2 local workers, heavy_tail.py's two loops on 3 MPI
    workers, an engine loop under SCOOP (no launcher), a failing job of maps on 2 workers."""
    log = tmp_path / f"{where}.jsonl"
    # ticks every 0.1 s, and runs of several: a log cut before its last records keeps some
    every = ("--quiet", "--log", str(log), "--log-every", "0.1")
    if where == "local":
        cmd = launcher("--workers", "2", *every, str(JOBS / "onemax_builtin.py"), "--ngen", "60")
        return log, _logged(cmd, log, tmp_path)
    if where == "mpi":
        job = (str(JOBS / "heavy_tail.py"), "--pop", "30", "--evaluations", "60", "--mean", "0.02")
        return log, _logged(launcher(*every, *job, mpi=4), log, tmp_path)
    if where == "scoop":
        cmd = [sys.executable, "-m", "scoop", "-n", "3", str(JOBS / "onemax_builtin.py")]
        cmd += ["--ngen", "60"]
        env = {"EVOCLUSTER_QUIET": "1", "EVOCLUSTER_LOG": str(log), "EVOCLUSTER_LOG_EVERY": "0.1"}
        return log, _logged(cmd, log, tmp_path, **env)
    job = tmp_path / "failing.py"
    job.write_text(FAILING_JOB)
    on_error = ("--on-error", "retry:1", "--penalty", "1e9")
    cmd = launcher("--workers", "2", *on_error, *every, str(job))
    return log, _logged(cmd, log, tmp_path)


def _report(
    tmp_path: Path, *args: str, python: str | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = launcher("report", *args)
    if python is not None:
        cmd[0] = python
    env = clean_env(PYTHONPATH=str(ROOT))  # this checkout's evocluster, whatever the python
    return run(cmd, timeout=60, cwd=tmp_path, env=env, no_leftovers=True)


def _check_png(path: Path) -> None:
    """A PNG (its signature) that matplotlib reads back: 1000 pixels wide, not blank."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = require_module("matplotlib.image").imread(path)
    height, width = image.shape[:2]
    assert width == 1000, image.shape
    assert 450 <= height <= 1300, image.shape
    assert float(image[..., :3].std()) > 0.05, "a blank picture"


def _expected(records: list[dict[str, Any]]) -> list[str]:
    """What the summary must say of the one run in ``records``, from the records themselves."""
    start = records[0]
    assert start["record"] == "start"
    # the names in the pool's latest naming record (a worker that answers late is added then)
    named = next(r for r in reversed(records) if r["record"] == "workers" and "names" in r)
    workers = start.get("workers") or len(named["names"])
    backend = start.get("backend") or named["backend"]
    end = records[-1] if records[-1]["record"] == "end" else None
    figures = end or next(r for r in reversed(records) if r["record"] == "interval")
    out = [
        f"backend {backend}, {workers} workers",
        f"{figures['evaluations']} evaluations",
        f"failures {figures['failed']}",
        "utilisation: mean ",
        f"% of {len(named['names'])} workers, least busy ",
    ]
    if end is None:
        out.append("no end record: the run was cut short")
    else:
        hosts = ", ".join(f"{h} ({n})" for h, n in end["hosts"].items())
        out += [f"{len(end['hosts'])} host(s): {hosts}", f"({end['seconds']:.1f} s)"]
        code = end["exit_code"]
        out.append(
            f"exit code {code}" if code is not None else "exit code not logged (the job ran "
        )
    loops: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    for r in records:
        if r["record"] == "loop":
            loops.append((r, []))
        elif r["record"] == "generation":
            loops[-1][1].append(r)
    for loop, rows in loops:
        text = (
            f"  loop {loop['loop']} (seed {loop['seed']}): generations 0-{rows[-1]['generation']}"
        )
        if loop["generations"]:
            text += f" of {loop['generations']}"
        out.append(text + f", best {rows[-1]['best']:.6g}\n")
    return out


def _check_summary(r: subprocess.CompletedProcess[str], records: list[dict[str, Any]]) -> None:
    assert r.returncode == 0, output(r)
    assert r.stderr == "", output(r)
    for part in _expected(records):
        assert part in r.stdout + "\n", f"{part!r} not in the summary\n{output(r)}"


@pytest.mark.parametrize(
    "where",
    declare(
        ["local", "mpi", "scoop", "failing"], mpi=["mpi"], scoop=["scoop"], marks=[pytest.mark.slow]
    ),
)
def test_summary_and_picture_of_a_real_run_and_of_its_log_cut_short(
    where: str, tmp_path: Path
) -> None:
    if where == "mpi":
        require_mpiexec()
    log, records = _make_log(where, tmp_path)
    r = _report(tmp_path, str(log), "-o", "full.png")
    _check_summary(r, records)
    assert r.stdout.startswith(f"{log}: 1 run(s); the picture shows run 1\n"), output(r)
    assert r.stdout.endswith("picture of run 1: full.png\n"), output(r)
    _check_png(tmp_path / "full.png")
    # without -o: the same summary, no picture
    alone = _report(tmp_path, str(log))
    _check_summary(alone, records)
    assert alone.stdout.startswith(f"{log}: 1 run(s)\nrun 1: {records[0]['time']}"), output(r)

    # the same log cut in the middle of its third line from the end: no end record
    text = log.read_text(encoding="utf-8")
    lines = text.split("\n")
    whole = "\n".join(lines[:-4]) + "\n"
    cut = tmp_path / "cut.jsonl"
    cut.write_text(whole + lines[-4][: len(lines[-4]) // 2], encoding="utf-8")
    r = _report(tmp_path, str(cut), "-o", "cut.png")
    _check_summary(r, _records(whole))
    assert f"line {len(lines) - 3}, the last, was cut short" in r.stdout, output(r)
    _check_png(tmp_path / "cut.png")


def test_failures_are_on_the_lane_of_the_worker_that_had_them(tmp_path: Path) -> None:
    log, records = _make_log("failing", tmp_path)
    failures = [r for r in records if r["record"] == "failure"]
    assert len(failures) == records[-1]["failed"] > 0
    runs, _ = read(log)
    tl = timeline(runs[0])
    assert len(tl.failures) == len(failures)
    (pool,) = tl.pools
    for (t, where, lane), record in zip(tl.failures, failures, strict=True):
        assert lane is not None and where == 0 and t == record["t"]
        # the log names a worker by the label it gives itself, as its failure records do
        assert record["worker"] == pool.lanes[lane].label, (pool.lanes[lane].label, record)
    # what each worker's failures were, as its own column says at the end
    last = [r for r in records if r["record"] == "workers"][-1]
    on_lane = [sum(1 for _, _, lane in tl.failures if lane == i) for i in range(2)]
    assert on_lane == last["failed"], (on_lane, last["failed"])


@pytest.mark.slow
def test_a_requeued_run_appends_a_run_and_run_n_picks_it(tmp_path: Path) -> None:
    log, records = _make_log("local", tmp_path)
    first = log.read_text(encoding="utf-8")
    again = _make_log("local", tmp_path)[1][len(records) :]  # appended: a second start
    assert again[0]["record"] == "start"
    r = _report(tmp_path, str(log), "-o", "last.png")
    assert r.returncode == 0, output(r)
    assert r.stdout.startswith(f"{log}: 2 run(s); the picture shows run 2\n"), output(r)
    assert f"\nrun 1: {records[0]['time']}" in r.stdout, output(r)
    assert f"\nrun 2: {again[0]['time']}" in r.stdout, output(r)
    assert r.stdout.count("exit code 0") == 2, output(r)
    _check_png(tmp_path / "last.png")
    r = _report(tmp_path, str(log), "--run", "1", "-o", "first.png")
    assert r.returncode == 0, output(r)
    assert r.stdout.startswith(f"{log}: 2 run(s); the picture shows run 1\n"), output(r)
    _check_png(tmp_path / "first.png")
    r = _report(tmp_path, str(log), "--run", "3", "-o", "none.png")
    assert (r.returncode, r.stdout) == (2, ""), output(r)
    assert r.stderr == f"evocluster: report: --run 3: {log} holds run(s) 1 to 2\n"
    assert not (tmp_path / "none.png").exists()
    assert log.read_text(encoding="utf-8").startswith(first)


def _big_log(path: Path, hosts: int, workers: int = 2000) -> None:
    """A run log of ``workers`` MPI workers on ``hosts`` hosts, as the monitor writes it (the
    records' fields of docs/observability.md), busy by turns, with two failures."""
    names = [f"worker rank {i} of {workers + 1}" for i in range(1, workers + 1)]
    where = [f"node{i * hosts // workers:02d}" for i in range(workers)]
    start = {"schema": 1, "time": "2026-01-02T03:04:05+00:00", "backend": "mpi"}
    lines: list[dict[str, Any]] = [{"record": "start", "t": 0.0, **start, "workers": workers}]
    busy = [0.0] * workers
    for k in range(1, 21):
        t = 30.0 * k
        busy = [b + (30.0 if (i + k) % 7 else 6.0) for i, b in enumerate(busy)]
        lines.append({"record": "interval", "t": t, "evaluations": 100 * k, "failed": 0})
        record = {"record": "workers", "t": t, "pool": 1, "backend": "mpi", "busy": busy}
        if k == 1:
            record |= {"names": names, "hosts": where}
        lines.append(record)
        if k == 10:
            for w in (0, 1499):
                worker = f"{names[w]} on host {where[w]} (pid {w})"
                lines.append({"record": "failure", "t": t + 1, "worker": worker, "item": w})
    lines.append({"record": "failure", "t": 400.0, "worker": "", "item": 7})  # the master's
    hosts_count = {h: where.count(h) for h in dict.fromkeys(where)}
    end = {"exit_code": 0, "seconds": 605.0, "evaluations": 2000, "failed": 3, "retried": 0}
    lines.append({"record": "end", "t": 605.0, **end, "hosts": hosts_count})
    path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")


@pytest.mark.parametrize(
    ("hosts", "lanes", "grouping"), [(8, 8, "per host"), (1, 63, "of 32 workers")]
)
def test_thousands_of_workers_are_drawn_in_few_lanes(
    tmp_path: Path, hosts: int, lanes: int, grouping: str
) -> None:
    log = tmp_path / "big.jsonl"
    _big_log(log, hosts)
    runs, _ = read(log)
    tl = timeline(runs[0])
    (pool,) = tl.pools
    assert (len(pool.lanes), tl.grouping) == (lanes, grouping)
    assert len(pool.lanes) <= MAX_LANES
    assert sorted(w for lane in pool.lanes for w in lane.members) == list(range(2000))
    placed = [(where, lane) for _, where, lane in tl.failures]
    assert placed[2] == (0, None)  # the master's: its own row
    assert 0 in pool.lanes[placed[0][1]].members and 1499 in pool.lanes[placed[1][1]].members
    r = _report(tmp_path, str(log), "-o", "big.png")
    assert r.returncode == 0, output(r)
    assert f"backend mpi, 2000 workers, {hosts} host(s): node00 (" in r.stdout, output(r)
    assert "2000 evaluations" in r.stdout and "failures 3" in r.stdout, output(r)
    # 30 s busy in 6 intervals of 7, 6 s in the seventh: (6 * 30 + 6) / 7 / 30 = 89%
    assert "utilisation: mean 89% of 2000 workers" in r.stdout, output(r)
    _check_png(tmp_path / "big.png")


# ---------------------------------------------------------------------------- errors
def _refused(tmp_path: Path, *args: str, python: str | None = None) -> str:
    r = _report(tmp_path, *args, python=python)
    assert (r.returncode, r.stdout) == (2, ""), output(r)
    assert r.stderr.startswith("evocluster: report: "), output(r)
    assert r.stderr.count("\n") == 1, output(r)
    return r.stderr.removeprefix("evocluster: report: ").rstrip("\n")


def test_errors_a_user_can_act_on(tmp_path: Path) -> None:
    assert _refused(tmp_path, "missing.jsonl") == "no such file: missing.jsonl"
    (tmp_path / "empty.jsonl").write_text("")
    said = _refused(tmp_path, "empty.jsonl", "-o", "x.png")
    assert said == "empty.jsonl is empty: no run was logged (was --log given to the run?)"
    (tmp_path / "notes.txt").write_text("hello\nworld\n")
    said = _refused(tmp_path, "notes.txt")
    assert said == "notes.txt is not an evocluster run log: line 1 is not a run-log record"
    (tmp_path / "data.json").write_text('{"record": "interval", "t": 1}\n')
    assert "holds no run (no start record)" in _refused(tmp_path, "data.json")
    (tmp_path / "newer.jsonl").write_text('{"record": "start", "t": 0, "schema": 99}\n')
    said = _refused(tmp_path, "newer.jsonl")
    assert said.startswith("newer.jsonl: line 1 was written with run-log schema 99"), said
    assert said.endswith("read it with a newer evocluster"), said
    assert not (tmp_path / "x.png").exists()


def test_without_matplotlib_the_summary_is_given_and_the_picture_refused(tmp_path: Path) -> None:
    """The Open MPI environment (a real one, built by .ci/openmpi) has no matplotlib."""
    if not OPENMPI_PYTHON.exists():
        prerequisite("no .venv-openmpi: run `bash .ci/openmpi` (a Python without matplotlib)")
    python = str(OPENMPI_PYTHON)
    probe = subprocess.run([python, "-c", "import matplotlib"], capture_output=True, check=False)
    if probe.returncode == 0:
        prerequisite(f"{python} has matplotlib: this test needs a Python without it")
    log = tmp_path / "run.jsonl"
    log.write_text('{"record": "start", "t": 0, "schema": 1, "backend": "local", "workers": 2}\n')
    said = _refused(tmp_path, str(log), "-o", "run.png", python=python)
    assert said == "-o needs matplotlib, which is not installed: pip install 'evocluster[plot]'"
    assert not (tmp_path / "run.png").exists()
    r = _report(tmp_path, str(log), python=python)
    assert r.returncode == 0, output(r)
    assert "run 1: ?, backend local, 2 workers, hosts unknown" in r.stdout, output(r)
    assert "no end record: the run was cut short" in r.stdout, output(r)
