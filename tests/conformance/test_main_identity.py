"""A function or class of the job redefined under its main guard is not the workers' one.

Workers import the job file, so under a name of the job's module level they find the module-level
definition.  A function (or class) of ``__main__`` that the main guard defines again under the
same name is another object: sent by reference, the workers would run their namesake and the job
would get wrong results without a word (issue 20, item 11).  It is recognised by identity (its
source lines against the module-level definitions), not by name: ``upgrade`` sends it by value,
``strict`` refuses it naming both definitions; the same on every backend, serial included, in
either order of mapping the module-level one and the redefined one.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import FIXTURES, launcher, output, run

JOB = FIXTURES / "jobs" / "shadowed.py"
BACKENDS = {
    "serial": (["--backend", "serial"], None),
    "local": (["--backend", "local", "--workers", "2"], None),
    "mpi": ([], 3),
}
BACKEND_PARAMS = [pytest.param(b, marks=[pytest.mark.mpi] if b == "mpi" else []) for b in BACKENDS]


def outcome(backend: str, order: str, policy: str, tmp_path: Any) -> dict[str, Any]:
    args, ranks = BACKENDS[backend]
    out = tmp_path / "out.json"
    r = run(launcher(*args, str(JOB), order, policy, str(out), mpi=ranks), timeout=120)
    assert r.returncode == 0, output(r)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


@pytest.mark.parametrize("order", ["old-first", "new-first"])
@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_upgrade_sends_the_redefined_function_and_class_by_value(
    backend: str, order: str, tmp_path: Any
) -> None:
    got = outcome(backend, order, "upgrade", tmp_path)
    assert got["NEW"] == {"values": [-1, -2, -3]}, got  # f035c23: [2, 3, 4], the workers' own
    assert got["OLD"] == {"values": [2, 3, 4]}, got
    assert got["CLASS"] == {"values": [100, 200]}, got  # f035c23: [1, 2]


@pytest.mark.parametrize("order", ["old-first", "new-first"])
@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_strict_refuses_the_redefined_function_and_class_naming_both(
    backend: str, order: str, tmp_path: Any
) -> None:
    got = outcome(backend, order, "strict", tmp_path)
    message = got["NEW"].get("refused", "")
    assert "fn -> function fitness defined at shadowed.py:45" in message, got
    assert "is not the 'fitness' that the job defines at module level (shadowed.py:15)" in message
    message = got["CLASS"].get("refused", "")
    assert "args[0] (individual 0) -> Point object" in message, got
    assert "class __main__.Point is not the 'Point' that the job defines at module level" in message
    if order == "old-first":  # mapped while the module-level name was still bound to it
        assert got["OLD"] == {"values": [2, 3, 4]}, got
    else:  # pickle itself refuses it now: __main__.fitness is another object
        assert "fn -> function fitness defined at shadowed.py:15" in got["OLD"]["refused"], got
