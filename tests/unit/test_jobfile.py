"""How the launcher takes a job it cannot run (issue 20, item 11): a directory was said to be "not
found"; it is a directory, and one with a ``__main__.py`` gets the two ways to run it."""

from __future__ import annotations

from pathlib import Path

from helpers import launcher, output, run


def test_a_directory_with_a_main_is_named_with_the_ways_to_run_it(tmp_path: Path) -> None:
    package = tmp_path / "search"
    package.mkdir()
    (package / "__main__.py").write_text("print('the job')\n")
    r = run(launcher(str(package)), timeout=60, cwd=tmp_path)
    assert r.returncode == 2, output(r)
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"evocluster: the job '{package}' is a directory, not a Python file")
    assert str(package / "__main__.py") in line and "-m search" in line, output(r)
    assert "not found" not in line, output(r)


def test_a_directory_without_a_main_is_named_as_a_directory(tmp_path: Path) -> None:
    r = run(launcher(str(tmp_path)), timeout=60, cwd=tmp_path)
    assert r.returncode == 2, output(r)
    assert r.stderr.strip() == (
        f"evocluster: the job '{tmp_path}' is a directory, not a Python file: name the job's "
        ".py file"
    ), output(r)
