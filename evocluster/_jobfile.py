"""Finding, checking and running a job: a file (``job.py``) or a module (``-m package.module``).

On the master the job runs as ``__main__``.  On a worker it is imported as a module named
``__mp_main__`` -- so its module-level definitions exist but its ``if __name__ == "__main__"``
block does not run -- and that module is also installed as ``sys.modules["__main__"]``, so that a
function pickled by reference on the master as ``__main__.fitness`` resolves on the worker.

``__mp_main__`` is the name ``multiprocessing`` gives the main module in the processes it spawns,
for the same reason: a fitness that starts a ``spawn`` or ``forkserver`` pool sends it the job's
functions as ``__mp_main__.f``, which its processes find (under another name they could not:
they re-run the job's file as ``__mp_main__``, and the pool waited for ever for processes that
died unpickling their first task).

The way back is aliased too, as ``multiprocessing`` aliases its main module: a worker pickles an
instance of the job's class ``Score`` as ``__mp_main__.Score``, so on the master ``__mp_main__``
is a stand-in module (:func:`alias_worker_module`, in :mod:`evocluster._main_names` with the rest
of the serialisation layer's handling of ``__main__`` names, below this module).  A master calls
:func:`prepare_master` once, before its pool starts.
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import sys
import types
from typing import TYPE_CHECKING, Any, NamedTuple

from . import _serialization as serialization
from ._main_names import WORKER_NAME, alias_worker_module, is_main_guard
from .errors import JobError

if TYPE_CHECKING:
    import ast

__all__ = [
    "WORKER_NAME",
    "JobSpec",
    "alias_worker_module",
    "check",
    "import_for_worker",
    "is_main_guard",
    "module_level_names",
    "prepare_master",
    "run_as_main",
    "spec_for_current_main",
]

#: True while (and after) a worker imports the job: creating a pool there would recurse.
in_worker = False


class JobSpec(NamedTuple):
    """What a worker needs to import the job the master runs; travels to every worker.

    At most one of ``path`` and ``module`` is set; neither for a master without a script (an
    interactive session, ``python -c``), whose workers get only the import path."""

    path: str | None  # the job file, absolute
    module: str | None  # or the module run with ``-m``
    args: tuple[str, ...]  # the job's own arguments (its ``sys.argv[1:]``)
    cwd: str  # the master's working directory (``-m`` jobs import from it)
    # the master's import path: workers append it, so modules the master imported resolve there
    sys_path: tuple[str, ...]


def spec(path: str | None, module: str | None, args: list[str] | tuple[str, ...]) -> JobSpec:
    """The spec of a job started in this process, as this process sees its paths now."""
    return JobSpec(
        path=os.path.abspath(path) if path is not None else None,
        module=module,
        args=tuple(args),
        cwd=os.getcwd(),
        sys_path=tuple(os.path.abspath(p) if p else os.getcwd() for p in sys.path),
    )


def spec_for_current_main() -> JobSpec:
    """The job spec of a script started with plain ``python job.py`` (no launcher).

    Without a script file (an interactive session, ``python -c``) there is nothing to import:
    workers then get only the master's import path."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not path or not os.path.exists(path):
        return spec(None, None, sys.argv[1:])
    mod_spec = getattr(main, "__spec__", None)
    # a worker's __main__ is the job imported under another name (ours, or SCOOP's): its file
    if mod_spec is not None and mod_spec.name not in (
        None,
        "",
        "__main__",
        WORKER_NAME,
        "SCOOP_WORKER",
    ):
        return spec(None, mod_spec.name, sys.argv[1:])
    return spec(path, None, sys.argv[1:])


def check(job: JobSpec) -> None:
    """Fail early, on the master, if the job cannot be found or does not compile.

    Raises:
        JobError: with a message that names the file or module and what is wrong.
    """
    if job.module is not None:
        try:
            found = importlib.util.find_spec(job.module)
        except (ImportError, ValueError) as e:
            raise JobError(f"cannot find job module {job.module!r}: {e}") from e
        if found is None:
            raise JobError(
                f"no module named {job.module!r}: check the name and that its package is on "
                "sys.path (run from the directory that contains it, or install it)"
            )
        return
    path = job.path
    if path is None:
        raise JobError("no job file or module was named")
    if os.path.isdir(path):
        raise JobError(_directory_job(path))
    if not os.path.isfile(path):
        raise JobError(f"job file {path!r} not found (current directory: {os.getcwd()})")
    with open(path, "rb") as fh:
        source = fh.read()
    try:
        compile(source, path, "exec")
    except SyntaxError as e:
        where = f"{e.filename}, line {e.lineno}"
        line = (e.text or "").rstrip()
        raise JobError(
            f"job file has a syntax error at {where}: {e.msg}\n    {line}\n"
            "fix the file and launch again"
        ) from e


def _directory_job(path: str) -> str:
    """What to say of a job named by a directory (``python job_dir/`` would run its
    ``__main__.py``; a job here is a file or ``-m`` a module)."""
    main = os.path.join(path, "__main__.py")
    if not os.path.isfile(main):
        return f"the job {path!r} is a directory, not a Python file: name the job's .py file"
    package = os.path.basename(os.path.normpath(path))
    return (
        f"the job {path!r} is a directory, not a Python file: to run its __main__.py, name "
        f"that file ({main}), or run the package as a module (-m {package}, from the "
        "directory that contains it)"
    )


def _bound_names(body: list[ast.stmt]) -> set[str]:
    import ast

    names: set[str] = set()
    for stmt in body:
        if isinstance(stmt, ast.If) and is_main_guard(stmt.test):
            names |= _bound_names(stmt.orelse)  # the guarded body never runs on a worker
            continue
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(stmt.name)
            continue
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in stmt.names)
            continue
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)  # defined inside if/try/with at module level
    return names


def module_level_names(job: JobSpec) -> set[str]:
    """The names the job binds at module level outside its main guard: what a worker's
    ``__main__`` (the job imported as ``__mp_main__``) will have.  Empty if there is no source."""
    source: str | bytes | None = None
    try:
        if job.path is not None:
            with open(job.path, "rb") as fh:
                source = fh.read()
        elif job.module is not None:
            name = job.module
            found = importlib.util.find_spec(name)
            if found is not None and found.submodule_search_locations is not None:
                found = importlib.util.find_spec(name + ".__main__")
            loader: Any = found.loader if found is not None else None
            source = loader.get_source(found.name) if loader is not None else None  # type: ignore[union-attr]
        # here: only the master reads the job's source (~2.5 ms per worker rank:
        # benchmarks/RESULTS.md F2, 2026-12-02)
        import ast

        return _bound_names(ast.parse(source).body) if source is not None else set()
    except (OSError, SyntaxError, ImportError, ValueError):
        return set()


def prepare_master(job: JobSpec) -> None:
    """On the master, before its pool starts: tell the serialisation layer which of the job's
    ``__main__`` names the workers will have (those :func:`module_level_names` finds), and make the
    names workers give the job's objects (``__mp_main__.X``) resolve here
    (:func:`alias_worker_module`, which ``set_worker_main_names`` calls)."""
    serialization.set_worker_main_names(module_level_names(job))


def same_job(a: JobSpec, b: JobSpec) -> bool:
    """Whether two specs run the same code (their import paths may differ)."""
    return a._replace(sys_path=()) == b._replace(sys_path=())


def add_import_path(job: JobSpec) -> None:
    """Append the job's import path (the master's) to this process's."""
    sys.path.extend(p for p in job.sys_path if p not in sys.path)


def _prepare_sys(job: JobSpec) -> None:
    add_import_path(job)
    if job.path is not None:
        sys.argv = [job.path, *job.args]
        sys.path.insert(0, os.path.dirname(job.path))
    elif job.module is not None:
        sys.argv = [job.module, *job.args]
        sys.path.insert(0, job.cwd)


def run_as_main(job: JobSpec) -> None:
    """Run the job as ``__main__`` in this process (the master).  Exceptions propagate."""
    _prepare_sys(job)
    if job.module is not None:
        runpy.run_module(job.module, run_name="__main__", alter_sys=True)
    elif job.path is not None:
        runpy.run_path(job.path, run_name="__main__")


def import_for_worker(job: JobSpec) -> types.ModuleType | None:
    """Import the job under :data:`WORKER_NAME` and alias it as ``__main__`` (a worker)."""
    global in_worker
    in_worker = True
    _prepare_sys(job)
    if job.path is None and job.module is None:
        return None
    if job.module is not None:
        name = job.module
        found = importlib.util.find_spec(name)
        if found is not None and found.submodule_search_locations is not None:
            name += ".__main__"  # a package runs as its __main__ submodule, as runpy does
            found = importlib.util.find_spec(name)
        if found is None or found.loader is None:
            raise JobError(f"no module named {name!r} on this worker")
        module = importlib.util.module_from_spec(found)
        module.__name__ = WORKER_NAME
        loader: Any = found.loader
        code = loader.get_code(name)
    else:
        path = str(job.path)  # set: a spec names a path, a module, or neither (returned above)
        module = types.ModuleType(WORKER_NAME)
        module.__file__ = path
        with open(path, "rb") as fh:
            code = compile(fh.read(), path, "exec")
    sys.modules[WORKER_NAME] = module
    sys.modules["__main__"] = module
    exec(code, module.__dict__)
    return module
