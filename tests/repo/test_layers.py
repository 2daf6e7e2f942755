"""The direction of imports that ARCHITECTURE.md draws, checked on the source.

Data flows job -> engine -> executor -> transport -> worker and back; imports follow it.  These
tests read every module of the package with ``ast`` (nothing is imported) and check that no
module-level import closes a circle and that no module reaches up a layer, at module level or
inside a function.  Imports under ``if TYPE_CHECKING:`` are annotations only and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "evocluster"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


class _Imports(ast.NodeVisitor):
    """The imports of one module: ``top`` at module level, ``lazy`` inside functions."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.module, self.is_package = module, is_package
        self.top: set[str] = set()
        self.lazy: set[str] = set()
        self._depth = 0

    def _add(self, name: str) -> None:
        (self.lazy if self._depth else self.top).add(name)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node):
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.module.split(".")
            if not self.is_package:
                base.pop()
            base = base[: len(base) - (node.level - 1)]
            target = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:  # `from . import x`: x may be a module
                self._add(f"{target}.{alias.name}")
        else:
            for alias in node.names:
                self._add(f"{node.module}.{alias.name}")


def _graph() -> dict[str, _Imports]:
    found: dict[str, _Imports] = {}
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    for path in paths:
        name = _module_name(path)
        visitor = _Imports(name, path.name == "__init__.py")
        visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
        # `evocluster.serialization.dumps` -> the module `evocluster.serialization`
        for kind in ("top", "lazy"):
            names = set()
            for imported in getattr(visitor, kind):
                target = imported
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target.split(".")[0] in ("evocluster", "mpi4py", "scoop"):
                    names.add(target)
            setattr(visitor, kind, names - {name})
        found[name] = visitor
    return found


GRAPH = _graph()


def _importers(target: str) -> set[str]:
    """The modules importing ``target`` or one of its submodules, at any level."""
    return {
        name
        for name, imp in GRAPH.items()
        for t in imp.top | imp.lazy
        if t == target or t.startswith(target + ".")
    }


def test_the_graph_sees_the_package() -> None:
    """A guard on the parser: the modules and a few known imports are there."""
    assert {"evocluster.engine", "evocluster.executor", "evocluster.backends.mpi"} <= set(GRAPH)
    assert "evocluster._scheduling" in GRAPH["evocluster._pool"].top
    assert "mpi4py" in GRAPH["evocluster.backends.mpi"].top
    assert "evocluster.executor" in GRAPH["evocluster.cli"].lazy


def test_no_circle_at_module_level() -> None:
    """Module-level imports between the package's modules form no circle (the package itself,
    always imported first, is left out: a submodule may read its ``__version__``)."""
    edges = {
        name: {t for t in imp.top if t in GRAPH and t != "evocluster"}
        for name, imp in GRAPH.items()
    }
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                circle = [*path[path.index(nxt) :], nxt]
                pytest.fail("import circle: " + " -> ".join(circle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


#: Imports inside functions that still close a circle, each with why it is left: none may be added.
#: (_isolation <-> worker is untied: what both use is in _calls, and the child's side in
#: _isolation_child.)
LAZY_CIRCLES: set[tuple[str, str]] = set()


def test_no_circle_even_inside_functions() -> None:
    """Counting the imports inside functions too, no module imports itself through others
    (``errors`` and ``_broken_pool`` did: the base class now lives in ``_error_base``)."""
    edges = {
        name: {
            t
            for t in imp.top | imp.lazy
            if t in GRAPH and t != "evocluster" and (name, t) not in LAZY_CIRCLES
        }
        for name, imp in GRAPH.items()
    }
    for start in sorted(edges):
        seen: set[str] = set()
        todo = [start]
        while todo:
            for nxt in edges[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        assert start not in seen, f"{start} imports itself through the modules it imports"


def test_the_bottom_modules_import_nothing_above_them() -> None:
    """The version and the base of the errors import nothing of the package; ``BrokenPool``'s
    module only the base (not ``errors``, which loads it on first use)."""
    for name, allowed in (
        ("evocluster._version", set()),
        ("evocluster._error_base", set()),
        ("evocluster._broken_pool", {"evocluster._error_base"}),
    ):
        imp = GRAPH[name]
        assert imp.top | imp.lazy == allowed, name


# module -> what it must never import, at module level or in a function
FORBIDDEN = {
    # the EA is handed an Executor (or a map): it never chooses or drives a backend
    "evocluster.engine": ("evocluster.executor", "evocluster._pool", "evocluster._scheduling",
                          "evocluster.backends", "evocluster.worker", "evocluster.cli"),
    "evocluster.operators": ("evocluster.executor", "evocluster.backends", "evocluster.engine"),
    "evocluster.pareto": ("evocluster.executor", "evocluster.backends", "evocluster.engine"),
    "evocluster.rng": ("evocluster.executor", "evocluster.backends", "evocluster.engine"),
    "evocluster.checkpoint": ("evocluster.executor", "evocluster.backends", "evocluster.engine",
                              "evocluster._pool", "evocluster.cli"),
    # one model of a failure, below both the engine and the executor
    "evocluster._failures": ("evocluster.engine", "evocluster.executor", "evocluster._pool",
                             "evocluster._scheduling", "evocluster.backends", "evocluster.worker",
                             "evocluster.protocol", "evocluster.serialization", "evocluster.cli"),
    # how a master's pools end: below the executor, above nothing it registers
    "evocluster._ending": ("evocluster.executor", "evocluster.engine", "evocluster.cli",
                           "evocluster.backends"),
    # the records of the work: below the policy and the pools
    "evocluster._jobs": ("evocluster._scheduling", "evocluster._pool", "evocluster.executor",
                         "evocluster.backends", "evocluster.worker", "evocluster.engine",
                         "evocluster.cli"),
    # the launcher's options and the early-signal window: below the checkpoint file
    "evocluster._checkpoint_options": ("evocluster.checkpoint", "evocluster.engine",
                                       "evocluster.executor", "evocluster.backends",
                                       "evocluster._pool", "evocluster.cli"),
    # the policy knows no thread and no transport
    "evocluster._scheduling": ("evocluster._pool", "evocluster.executor", "evocluster.backends",
                               "evocluster.cli", "evocluster.engine"),
    "evocluster._pool": ("evocluster.executor", "evocluster.cli", "evocluster.engine"),
    # what workers run, and what travels: below the executor
    "evocluster.worker": ("evocluster.executor", "evocluster._pool", "evocluster._scheduling",
                          "evocluster.engine", "evocluster.cli", "evocluster.backends"),
    # what a worker and its isolated child share, and the worker's side of a backend: below both
    "evocluster._calls": ("evocluster.worker", "evocluster._isolation", "evocluster.backends",
                          "evocluster.executor", "evocluster._pool", "evocluster.engine"),
    "evocluster._channel": ("evocluster.worker", "evocluster.backends", "evocluster.executor",
                            "evocluster._pool", "evocluster.engine"),
    # the isolated child sits below the worker that starts it
    "evocluster._isolation": ("evocluster.worker", "evocluster.backends", "evocluster.executor",
                              "evocluster._pool", "evocluster._scheduling", "evocluster.engine",
                              "evocluster.cli"),
    "evocluster._isolation_child": ("evocluster.worker", "evocluster._isolation",
                                    "evocluster.backends", "evocluster.executor",
                                    "evocluster._pool", "evocluster.engine", "evocluster.cli"),
    # one framing of messages on a stream socket: below whatever sends them
    "evocluster._framing": ("evocluster.worker", "evocluster._isolation", "evocluster.backends",
                            "evocluster.executor", "evocluster._pool", "evocluster.engine",
                            "evocluster.serialization", "evocluster.protocol"),
    "evocluster.protocol": ("evocluster",),
    "evocluster.errors": ("evocluster.executor", "evocluster.backends", "evocluster.config"),
    "evocluster.config": ("evocluster.executor", "evocluster.backends", "evocluster.serialization"),
    # the serialisation layer's mechanism, below its surface (serialization) and below jobfile
    "evocluster._main_names": ("evocluster.serialization", "evocluster._picklers",
                               "evocluster._unpicklable", "evocluster.jobfile",
                               "evocluster.executor", "evocluster.backends", "evocluster.cli"),
    "evocluster._picklers": ("evocluster.serialization", "evocluster._unpicklable",
                             "evocluster.jobfile", "evocluster.executor", "evocluster.backends",
                             "evocluster.cli"),
    "evocluster._unpicklable": ("evocluster.serialization", "evocluster.jobfile",
                                "evocluster.executor", "evocluster.backends", "evocluster.cli"),
    "evocluster.serialization": ("evocluster.executor", "evocluster.backends", "evocluster._pool",
                                 "evocluster.worker", "evocluster.protocol", "evocluster.jobfile",
                                 "evocluster.cli"),
    "evocluster.jobfile": ("evocluster.executor", "evocluster.backends", "evocluster._pool",
                           "evocluster.worker", "evocluster.cli"),
}  # fmt: skip


def _below_backends(name: str) -> bool:
    return name.startswith("evocluster.backends")


def _rules(module: str) -> tuple[str, ...]:
    """What ``module`` must never import: its own rule, or its package's (``evocluster.engine``'s
    for each module of the engine)."""
    while module not in FORBIDDEN:
        module = module.rsplit(".", 1)[0]
    return FORBIDDEN[module]


ENGINE = sorted(m for m in GRAPH if m.startswith("evocluster.engine."))


def test_the_engine_is_a_package() -> None:
    assert {
        "evocluster.engine.evaluation",
        "evocluster.engine.checkpointing",
        "evocluster.engine.loop_entries",
        "evocluster.engine.stopping",
    } <= set(ENGINE)


@pytest.mark.parametrize("module", sorted(FORBIDDEN) + ENGINE)
def test_no_module_reaches_up(module: str) -> None:
    imp = GRAPH[module]
    wrong = sorted(
        t
        for t in imp.top | imp.lazy
        for banned in _rules(module)
        if (t == banned or t.startswith(banned + "."))
        and not (banned == "evocluster" and t in ("evocluster.errors",))
    )
    assert not wrong, f"{module} imports {wrong}: against the direction in ARCHITECTURE.md"


def test_backends_never_import_the_executor_or_the_pool() -> None:
    wrong = {
        (name, t)
        for name, imp in GRAPH.items()
        if _below_backends(name)
        for t in imp.top | imp.lazy
        if t in ("evocluster.executor", "evocluster._pool", "evocluster.cli", "evocluster.engine")
    }
    assert not wrong


def test_only_the_registry_the_launcher_and_the_executor_choose_a_backend() -> None:
    """A concrete backend is imported by the registry (and its own package), by ``cli`` and
    ``executor`` -- and by ``evocluster/__init__``, which starts SCOOP's guards in a SCOOP run."""
    allowed = {"evocluster.backends", "evocluster.cli", "evocluster.executor", "evocluster"}
    for backend in ("local", "mpi", "scoop"):
        target = f"evocluster.backends.{backend}"
        outside = {m for m in _importers(target) if m not in allowed and not m.startswith(target)}
        if backend == "local":
            outside.discard("evocluster.backends.mpi")  # neither: checked below
        assert not outside, f"{sorted(outside)} import {target}"


def test_only_mpi_modules_import_mpi4py_and_only_scoop_modules_scoop() -> None:
    assert _importers("mpi4py") <= {"evocluster.backends.mpi", "evocluster.backends.doorbell"}
    scoop_users = _importers("scoop")
    assert scoop_users, "the parser found no import of scoop at all"
    assert all(m.startswith("evocluster.backends.scoop") for m in scoop_users), scoop_users
