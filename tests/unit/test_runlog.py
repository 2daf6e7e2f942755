"""The run log's file format (``_runlog``), the progress line's text (``_progress``) and the
monitor's arithmetic (``_monitor.Tally``), without a run: what they are given is written here.
The runs that write real logs and print real progress are in tests/launch/test_monitor.py."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evocluster import _monitor, _observe, _progress, _runlog
from evocluster.errors import ConfigurationError


def _write(path: Path, *records: dict[str, Any]) -> None:
    log = _runlog.RunLog(path)
    for record in records:
        fields = dict(record)
        log.write(fields.pop("record"), **fields)
    log.close()


def test_records_are_read_back_by_run_in_order(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    _write(
        path,
        {"record": "start", "schema": 1, "backend": "local"},
        {"record": "generation", "generation": 0, "best": 1.5},
        {"record": "end", "exit_code": 0},
        {"record": "start", "schema": 1, "backend": "mpi"},  # a requeued job appends a run
        {"record": "interval", "evaluations": 7},
    )
    runs, note = _runlog.read(path)
    assert note == ""
    assert [r.start["backend"] for r in runs] == ["local", "mpi"]
    assert [r["record"] for r in runs[0].records] == ["generation", "end"]
    assert runs[0].ended == {"record": "end", "t": runs[0].ended["t"], "exit_code": 0}
    assert runs[1].ended is None and runs[1].last("interval")["evaluations"] == 7
    times = [r["t"] for r in runs[0].records]
    assert times == sorted(times) and all(t >= 0 for t in times)


def test_values_json_cannot_write_are_made_strict_json(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    _write(
        path,
        {"record": "start", "schema": 1},
        {
            "record": "generation",
            "min": [float("nan")],
            "max": np.array([float("inf"), 2.0]),
            "evals": np.int64(3),
            "where": tmp_path,
        },
    )
    line = path.read_text().splitlines()[1]
    record = json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in {line}"))
    assert record["min"] == [None] and record["max"] == [None, 2.0]
    assert record["evals"] == 3 and record["where"] == str(tmp_path)


def test_a_torn_last_line_is_skipped_and_said(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    _write(path, {"record": "start", "schema": 1}, {"record": "interval", "evaluations": 5})
    whole = path.read_text()
    path.write_text(whole + '{"record":"interval","evaluati')  # killed mid-write
    runs, note = _runlog.read(path)
    assert runs[0].last("interval")["evaluations"] == 5
    assert "line 3" in note and "cut short" in note


def test_a_file_that_is_not_a_run_log_is_named_with_the_line(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text('{"record":"start","schema":1,"t":0}\nhello\n{"record":"end","t":1}\n')
    with pytest.raises(_runlog.RunLogError, match=r"notes.txt is not .* line 2"):
        _runlog.read(path)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(_runlog.RunLogError, match="no start record"):
        _runlog.read(tmp_path / "empty.jsonl")
    with pytest.raises(_runlog.RunLogError, match="cannot read"):
        _runlog.read(tmp_path / "missing.jsonl")


def test_a_log_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_text(json.dumps({"record": "start", "t": 0, "schema": _runlog.SCHEMA + 1}) + "\n")
    with pytest.raises(_runlog.RunLogError, match="newer evocluster"):
        _runlog.read(path)


def test_records_before_the_first_start_are_skipped_and_said(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_text('{"record":"interval","t":1}\n{"record":"start","t":0,"schema":1}\n')
    runs, note = _runlog.read(path)
    assert len(runs) == 1 and runs[0].records == [] and "line 1" in note


def test_a_log_that_cannot_be_written_stops_and_the_caller_goes_on(tmp_path: Path) -> None:
    log = _runlog.RunLog(tmp_path / "run.jsonl")
    log.write("start", schema=1)
    log._file.close()  # type: ignore[union-attr]  # as a full disk or a lost mount would
    log.write("interval", evaluations=1)  # no exception
    log.close()
    assert len((tmp_path / "run.jsonl").read_text().splitlines()) == 1


# ------------------------------------------------------------------ the progress line
def _figures(**over: Any) -> dict[str, Any]:
    fig = {
        "elapsed": 3723.0,
        "evaluations": 7690,
        "done": 37,
        "total": 64,
        "rate": 61.54,
        "workers": 16,
        "busy": 12,
        "failed": 2,
        "eta": 370.0,
    }
    return fig | over


def test_the_progress_line_says_each_figure() -> None:
    text = _progress.line(_figures(generation=12, generations=50, best=97.25))
    assert text == (
        "1:02:03  gen 12/50  map 37/64 (58%)  61.5 evals/s  workers 12/16 busy  2 failed  "
        "best 97.25  ~0:06:10 left  7690 evals in all"
    )


def test_the_progress_line_leaves_out_what_is_not_known() -> None:
    text = _progress.line(_figures(total=0, done=0, eta=None, best=float("nan")))
    assert "map" not in text and "left" not in text and "best" not in text and "gen" not in text


def test_durations_read_as_clock_times() -> None:
    assert _progress.duration(0) == "0:00:00"
    assert _progress.duration(59.9) == "0:00:59"
    assert _progress.duration(2 * 86400 + 3 * 3600 + 4 * 60 + 5) == "2d 03:04:05"


# ------------------------------------------------------------------ the monitor's arithmetic
class _Pool:
    """What the tally reads of a pool (its snapshot), set by the test: pure logic."""

    def __init__(self, serial: int, **snap: Any) -> None:
        self.serial = serial
        self.snap = {
            "serial": serial,
            "name": "local",
            "workers": 2,
            "busy": 0,
            "put": 0,
            "settled": 0,
            "batch_base": 0,
            "counters": {"failed": 0, "retried": 0},
            "per_worker": {},
        } | snap

        self.asked: list[bool] = []  # per_worker, at each look

    def snapshot(self, per_worker: bool = True) -> dict[str, Any]:
        self.asked.append(per_worker)
        return dict(self.snap)


def test_the_current_map_is_counted_from_the_pools_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = _Pool(101, put=30, settled=25, batch_base=20, busy=2), _Pool(102, put=5, settled=5)
    monkeypatch.setattr(_observe, "pools", [a, b])
    fig = _monitor.Tally().figures()
    assert (fig["done"], fig["total"], fig["evaluations"]) == (5 + 5, 10 + 5, 30)
    assert (fig["workers"], fig["busy"]) == (4, 2)


def test_only_the_logs_workers_record_asks_for_every_workers_stats(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = _Pool(5, put=3, settled=1)
    monkeypatch.setattr(_observe, "pools", [pool])
    tally = _monitor.Tally()
    tally.figures()  # the progress line (twice a second on a terminal): O(1) per pool
    tally.snapshots(per_worker=True)  # the log's workers record, every --log-every s
    assert pool.asked == [False, True]


def test_a_closed_pool_keeps_its_last_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    tally = _monitor.Tally()
    monkeypatch.setattr(_observe, "pools", [])
    last = _Pool(7, put=9, settled=9, counters={"failed": 3, "retried": 1}).snapshot()
    tally.on_event("pool_closed", last)
    fig = tally.figures()
    assert fig["evaluations"] == 9 and fig["failed"] == 3 and fig["retried"] == 1
    assert fig["workers"] == 0  # a closed pool has no workers left


def test_an_engine_loop_gives_the_generation_best_and_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_observe, "pools", [])
    tally = _monitor.Tally()
    tally.on_event("loop", {"loop": "generational", "seed": 1, "generations": 10})
    tally.generation_started = tally.t0 - 10.0  # 10 s ago, in effect
    tally.on_event("generation", {"generation": 4, "best": 2.5})
    fig = tally.figures()
    assert (fig["generation"], fig["generations"], fig["best"]) == (4, 10, 2.5)
    # 5 rows (generations 0..4) in ~10 s: 6 generations left take ~12 s
    assert 11.0 < fig["eta"] < 13.5


def test_bad_settings_from_the_environment_name_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVOCLUSTER_PROGRESS_EVERY", "0")
    with pytest.raises(ConfigurationError, match="EVOCLUSTER_PROGRESS_EVERY='0'"):
        _monitor.Settings.from_env()
    monkeypatch.setenv("EVOCLUSTER_PROGRESS_EVERY", "2.5")
    monkeypatch.setenv("EVOCLUSTER_QUIET", "maybe")
    with pytest.raises(ConfigurationError, match="EVOCLUSTER_QUIET='maybe'"):
        _monitor.Settings.from_env()
    monkeypatch.setenv("EVOCLUSTER_QUIET", "yes")
    monkeypatch.setenv("EVOCLUSTER_LOG", "x.jsonl")
    monkeypatch.setenv("EVOCLUSTER_LOG_EVERY", "nan")
    with pytest.raises(ConfigurationError, match="EVOCLUSTER_LOG_EVERY='nan'"):
        _monitor.Settings.from_env()
    monkeypatch.setenv("EVOCLUSTER_LOG_EVERY", "4")
    s = _monitor.Settings.from_env()
    assert (s.quiet, s.progress_every, s.log, s.log_every) == (True, 2.5, "x.jsonl", 4.0)
    assert math.isclose(_monitor.Settings().progress_every, 30.0)


def test_a_burst_of_failures_is_flushed_with_the_next_record(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    log = _runlog.RunLog(path)
    log.BURST = 3600.0  # no flush by time in this test
    log.write("start", schema=1)
    for i in range(3):
        log.write("failure", soon=True, item=i)
    assert len(path.read_text().splitlines()) == 1  # still buffered
    log.write("interval", evaluations=3)  # any other record flushes them
    assert [r["record"] for r in _runlog.read(path)[0][0].records] == [*["failure"] * 3, "interval"]
    log.BURST = 0.0  # and a failure after BURST seconds flushes itself
    log.write("failure", soon=True, item=3)
    assert len(path.read_text().splitlines()) == 6
    log.close()
