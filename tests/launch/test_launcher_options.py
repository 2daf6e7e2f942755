"""The launcher's options reach the job's executors explicitly, not through the environment."""

from __future__ import annotations

from pathlib import Path

from helpers import launcher, output, run

JOB = """
import os
import evocluster

def main():
    print("env:", os.environ.get("EVOCLUSTER_SERIALIZATION"))
    for name, call in [
        ("default map", lambda: evocluster.map(lambda x: x, [1])),
        ("own executor", lambda: list(evocluster.Executor(backend="serial").map(lambda x: x, [1]))),
        ("own executor, upgrade", lambda: list(
            evocluster.Executor(backend="serial", serialization="upgrade").map(lambda x: x, [1])
        )),
    ]:
        try:
            call()
            print(name, "ok")
        except evocluster.SerializationError:
            print(name, "refused")

if __name__ == "__main__":
    main()
"""


def test_serialization_option_applies_to_every_executor_of_the_job(tmp_path: Path) -> None:
    job = tmp_path / "job.py"
    job.write_text(JOB)
    r = run(launcher("--serialization", "strict", "--workers", "1", str(job)), timeout=60)
    assert r.returncode == 0, output(r)
    lines = r.stdout.splitlines()
    assert "env: None" in lines, output(r)  # nothing written into the job's environment
    assert "default map refused" in lines, output(r)
    assert "own executor refused" in lines, output(r)  # the launcher's policy is its default
    assert "own executor, upgrade ok" in lines, output(r)  # and a keyword still wins


def test_without_the_option_the_default_policy_upgrades(tmp_path: Path) -> None:
    job = tmp_path / "job.py"
    job.write_text(JOB)
    r = run(launcher("--workers", "1", str(job)), timeout=60)
    assert r.returncode == 0, output(r)
    assert "default map ok" in r.stdout and "own executor ok" in r.stdout, output(r)
