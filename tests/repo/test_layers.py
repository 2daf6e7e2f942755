"""The layers ARCHITECTURE.md draws, held by an allow-list and checked on the source.

Data flows job -> engine -> executor -> transport -> worker and back; imports follow it.  These
tests read every module of the package with ``ast`` (nothing is imported).  ``LAYERS`` below is
the allow-list: each layer names the modules it holds and the layers it may import; an import of
any other layer fails, at module level or inside a function, as does a module no layer holds, an
entry that holds no module, a layer allowed to import one above it, and any import circle (inside
functions too).  ARCHITECTURE.md's picture is drawn from the same table.  Imports under
``if TYPE_CHECKING:`` are annotations only and are not counted.
"""

from __future__ import annotations

import ast
import textwrap
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
        # `evocluster._serialization.dumps` -> the module `evocluster._serialization`
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
    assert {"evocluster.engine", "evocluster._executor", "evocluster._backends.mpi"} <= set(GRAPH)
    assert "evocluster._scheduling" in GRAPH["evocluster._pool"].top
    assert "mpi4py" in GRAPH["evocluster._backends.mpi"].top
    assert "evocluster._executor" in GRAPH["evocluster._cli"].lazy


def _circle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle_even_inside_functions() -> None:
    """No module imports itself through others, counting the imports inside functions (the
    package's ``__init__`` too: nothing below it imports it)."""
    edges = {name: {t for t in imp.top | imp.lazy if t in GRAPH} for name, imp in GRAPH.items()}
    circle = _circle(edges)
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_the_circle_check_finds_a_circle() -> None:
    """A guard on the check itself: a planted lazy import of the package from errors is seen."""
    edges = {name: {t for t in imp.top | imp.lazy if t in GRAPH} for name, imp in GRAPH.items()}
    edges["evocluster.errors"] = edges["evocluster.errors"] | {"evocluster"}
    assert _circle(edges) is not None


# ---------------------------------------------------------------------------- the allow-list
#: The layers, top to bottom: name -> (the modules it holds, the layers it may import).  A module
#: may import its own layer's modules and those of the layers its entry names, nothing else.  A
#: name ending in ``.*`` holds a package and every module in it.
LAYERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # what `import evocluster` and `python -m evocluster` load first: names, no work
    "package": (("evocluster", "evocluster.__main__"),
                ("launcher", "executor", "checkpoint", "backends", "wire", "core")),
    # the launcher: options, the master or worker rank, SLURM submission, info (which says where
    # the signing key lives: wire), status and report (read a run log)
    "launcher": (("evocluster._cli", "evocluster._info", "evocluster._slurm",
                  "evocluster._slurm_status", "evocluster._report"),
                 ("executor", "checkpoint", "backends", "jobfile", "wire", "monitor", "core")),
    # the EA loops: handed an executor, never a backend
    "engine": (("evocluster.engine.*",), ("ea", "checkpoint", "jobfile", "core")),
    # pure numpy, no I/O
    "ea": (("evocluster.operators", "evocluster.pareto", "evocluster.rng"), ()),
    # the checkpoint file, its lock, the launcher's checkpoint options
    "checkpoint": (("evocluster.checkpoint", "evocluster._checkpoint_options"), ("wire", "core")),
    # Executor, map, the launcher's shared pool and how it ends
    "executor": (("evocluster._executor", "evocluster._map_results", "evocluster._initializer",
                  "evocluster._ending"),
                 ("backends", "scheduler", "worker", "contract", "jobfile", "wire", "monitor",
                  "core")),
    # the registry and the transports
    "backends": (("evocluster._backends", "evocluster._backends.local", "evocluster._backends.mpi",
                  "evocluster._backends.doorbell", "evocluster._backends.mpi_library",
                  "evocluster._backends.scoop.*"),
                 ("scheduler", "worker", "contract", "jobfile", "wire", "core")),
    # jobs, chunks and the policy (no thread, no transport); the scheduler thread
    "scheduler": (("evocluster._pool", "evocluster._scheduling", "evocluster._jobs",
                   "evocluster._arguments"),
                  ("worker", "contract", "wire", "core")),
    # what every worker runs: the serve loop, the isolated child, what a fitness leaves running
    "worker": (("evocluster._worker", "evocluster._isolation", "evocluster._isolation_child",
                "evocluster._calls", "evocluster._leftovers"),
               ("contract", "jobfile", "wire", "core")),
    # what a transport is, on each side
    "contract": (("evocluster._backends.base", "evocluster._channel"), ("wire", "core")),
    # find, check, run (master) and import (worker) a job
    "jobfile": (("evocluster._jobfile",), ("wire", "core")),
    # what travels and how: records, framing, signatures, pickling, shared data
    "wire": (("evocluster._protocol", "evocluster._framing", "evocluster._signing",
              "evocluster._serialization", "evocluster._picklers", "evocluster._unpicklable",
              "evocluster._main_names", "evocluster._sharing"),
             ("core",)),
    # the master's progress display and run log, fed by the pools' snapshots and events
    "monitor": (("evocluster._monitor", "evocluster._progress", "evocluster._runlog",
                 "evocluster._monitor_options"), ("core",)),
    # options, the exception tree, the failure policy, the version, what observers are told
    "core": (("evocluster._config", "evocluster.errors", "evocluster._error_base",
              "evocluster._broken_pool", "evocluster._failures", "evocluster._version",
              "evocluster._observe"), ()),
}  # fmt: skip


def _holds(pattern: str, module: str) -> bool:
    if pattern.endswith(".*"):
        return module == pattern[:-2] or module.startswith(pattern[:-1])
    return module == pattern


def _layers_of(module: str) -> list[str]:
    return [name for name, (held, _) in LAYERS.items() if any(_holds(p, module) for p in held)]


def _layer_of(module: str) -> str:
    (layer,) = _layers_of(module)
    return layer


def test_every_module_is_held_by_one_layer_and_every_entry_holds_a_module() -> None:
    unheld = sorted(m for m in GRAPH if not _layers_of(m))
    assert not unheld, f"modules no layer holds (add each to LAYERS): {unheld}"
    twice = sorted(m for m in GRAPH if len(_layers_of(m)) > 1)
    assert not twice, f"modules held by two layers: {twice}"
    stale = [
        (name, p) for name, (held, _) in LAYERS.items() for p in held
        if not any(_holds(p, m) for m in GRAPH)
    ]  # fmt: skip
    assert not stale, f"entries that hold no module: {stale}"


def test_a_layer_may_import_only_layers_below_it() -> None:
    order = list(LAYERS)
    for name, (_, allowed) in LAYERS.items():
        for other in allowed:
            assert other in LAYERS, f"{name} names {other!r}, which is not a layer"
            assert order.index(other) > order.index(name), f"{name} may not import {other} (up)"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_a_module_imports_only_what_its_layer_allows(module: str) -> None:
    layer = _layer_of(module)
    allowed = {layer, *LAYERS[layer][1]}
    imp = GRAPH[module]
    wrong = sorted(
        f"{t} ({_layer_of(t)})"
        for t in imp.top | imp.lazy
        if t in GRAPH and _layer_of(t) not in allowed
    )
    assert not wrong, (
        f"{module} (layer {layer}) imports {wrong}; {layer} may import {sorted(allowed)}: "
        "see LAYERS here and ARCHITECTURE.md"
    )


def test_the_allow_list_catches_an_import_in_a_function() -> None:
    """A guard on the check: a planted lazy import of the executor by operators is refused."""
    GRAPH["evocluster.operators"].lazy.add("evocluster._executor")
    try:
        with pytest.raises(AssertionError, match=r"operators \(layer ea\) imports"):
            test_a_module_imports_only_what_its_layer_allows("evocluster.operators")
    finally:
        GRAPH["evocluster.operators"].lazy.discard("evocluster._executor")


def _path(module: str) -> str:
    if module.endswith(".*"):
        return module[:-2].replace("evocluster.", "").replace(".", "/") + "/"
    rel = module.replace("evocluster", "", 1).lstrip(".").replace(".", "/")
    if (PACKAGE / rel).is_dir():
        return f"{rel}/__init__.py" if rel else "__init__.py"
    return f"{rel}.py"


def picture() -> str:
    """The layers as ARCHITECTURE.md draws them: a line per layer (its modules, then ``->`` and
    the layers it may import), top to bottom."""
    lines = []
    for name, (held, allowed) in LAYERS.items():
        paths = textwrap.wrap(" ".join(_path(m) for m in held), 100 - 11)
        lines += [f"{name if i == 0 else '':<11}{part}" for i, part in enumerate(paths)]
        lines.append(f"{'':<11}-> {' '.join(allowed) if allowed else '(nothing)'}")
    return "\n".join(lines)


def test_architecture_md_draws_these_layers() -> None:
    text = (PACKAGE.parent / "ARCHITECTURE.md").read_text(encoding="utf-8")
    block = text.split("```text\n", 1)[1].split("```", 1)[0].rstrip("\n")
    assert block == picture(), "ARCHITECTURE.md's first text block must read:\n" + picture()


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


def test_the_engine_is_a_package() -> None:
    engine = {m for m in GRAPH if m.startswith("evocluster.engine.")}
    assert {
        "evocluster.engine.evaluation",
        "evocluster.engine.checkpointing",
        "evocluster.engine.loop_entries",
        "evocluster.engine.stopping",
    } <= engine


def test_only_the_registry_the_launcher_and_the_executor_choose_a_backend() -> None:
    """A concrete backend is imported by the registry (and its own package), by ``_cli`` and
    ``_executor`` -- and by ``evocluster/__init__``, which starts SCOOP's guards in a SCOOP run."""
    allowed = {"evocluster._backends", "evocluster._cli", "evocluster._executor", "evocluster"}
    for backend in ("local", "mpi", "scoop"):
        target = f"evocluster._backends.{backend}"
        outside = {m for m in _importers(target) if m not in allowed and not m.startswith(target)}
        if backend == "local":
            outside.discard("evocluster._backends.mpi")  # neither: checked below
        assert not outside, f"{sorted(outside)} import {target}"


def test_only_mpi_modules_import_mpi4py_and_only_scoop_modules_scoop() -> None:
    assert _importers("mpi4py") <= {
        "evocluster._backends.mpi",
        "evocluster._backends.doorbell",
        "evocluster._backends.mpi_library",  # info: the library's version, MPI not started
    }
    scoop_users = _importers("scoop")
    assert scoop_users, "the parser found no import of scoop at all"
    assert all(m.startswith("evocluster._backends.scoop") for m in scoop_users), scoop_users
