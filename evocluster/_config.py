"""Options: a keyword argument wins over an ``EVOCLUSTER_*`` environment variable, which wins over
the default.  Every option is validated here, once, with a message that says what to change.
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Callable
from typing import Any, NamedTuple

from .errors import ConfigurationError

__all__ = [
    "BACKENDS",
    "EVAL_TIMEOUT_MAX",
    "ON_ERROR",
    "ON_WORKER_LOSS",
    "OTHER_VARIABLES",
    "POLICIES",
    "Options",
    "check",
    "environment",
    "mpi_outlives_a_rank",
    "mpi_rank_from_env",
    "mpi_world_size_from_env",
    "resolve",
    "slurm_restart_count",
]

#: Backend names accepted by ``--backend`` / ``EVOCLUSTER_BACKEND`` / ``Executor(backend=...)``.
BACKENDS = ("auto", "mpi", "local", "serial", "scoop")
#: Serialisation policies (see :mod:`evocluster._serialization`), the default first.
POLICIES = ("upgrade", "strict", "cloudpickle")
#: What a failed evaluation becomes (``--on-error``): ``raise``, ``penalize`` or ``retry:N``.
ON_ERROR = ("raise", "penalize", "retry:N")
#: What a pool does when a worker's process is lost (``--on-worker-loss``), the default first.
ON_WORKER_LOSS = ("fail", "continue")


def retries_of(on_error: object) -> int | None:
    """The one reading of an ``on_error`` value (the launcher's, the Executor's and the engine
    loops'): N of ``"retry:N"``, 0 for ``"raise"`` and ``"penalize"``, ``None`` for anything
    else (``"retry:"``, ``"retry:-1"``, ``"Raise"``, not a string)."""
    if on_error in ("raise", "penalize"):
        return 0
    if isinstance(on_error, str) and on_error.startswith("retry:"):
        n = on_error[6:]
        if n.isascii() and n.isdigit():
            return int(n)
    return None


#: The longest ``eval_timeout`` (seconds, 11.6 days).  Every timer that counts it holds this:
#: the isolated worker's ``poll()`` takes whole milliseconds in a C int (2**31 - 1 ms, 24.8 days;
#: beyond, OverflowError), ``signal.setitimer`` (the in-process alarm) and ``threading`` waits
#: 2**63 ns (292 years).  A larger value, inf or NaN is refused where it is given: an option, the
#: environment, ``Executor(eval_timeout=)`` or ``with_policy`` (f035c23 accepted ``inf``, and
#: every worker died of OverflowError in setitimer).
EVAL_TIMEOUT_MAX = 1_000_000.0


#: The most chunks in flight per worker: more keeps no worker busier, and the scheduler keeps a
#: queue per level (EVOCLUSTER_PREFETCH=1000000000 made the master allocate until it was killed).
PREFETCH_MAX = 64


class Options(NamedTuple):
    """The resolved options of one executor (plain data: picklable, immutable).

    A NamedTuple, not a dataclass: every worker rank imports this module, and ``dataclasses``
    pulls in ``inspect`` (10-16 ms per rank, times thousands of ranks at start-up:
    benchmarks/RESULTS.md F5, 2026-12-02)."""

    backend: str = "auto"
    #: how callables and arguments are serialised: "upgrade", "strict" or "cloudpickle".
    serialization: str = "upgrade"
    #: local pool size; ``None`` means ``os.cpu_count()``.
    workers: int | None = None
    #: chunks in flight per worker (1: no prefetch); 2 keeps a worker busy while its result travels
    prefetch: int = 2
    #: a chunk whose serialised size exceeds this many bytes is sent only to an idle worker, so a
    #: large transfer never waits behind a long evaluation (in the master's memory, tied to a
    #: busy worker while another may free up first).
    prefetch_max_bytes: int = 256 * 1024
    #: no prefetch for evaluations of chunk_min / 10 seconds or more whose durations spread more
    #: than this (mean relative deviation): on W3 (lognormal, sigma 1) it lifted a generational
    #: map from 0.46 to 0.49-0.50 efficiency (benchmarks/RESULTS.md F19, 2026-11-23); fixed-length
    #: tasks keep it
    prefetch_spread: float = 0.3
    #: a waiting rank sleeps ``poll_fraction`` of the time it has been waiting, between poll_min
    #: and poll_max (a worker waiting for work) or master_poll_max (the master waiting for
    #: results).  A sleep-and-wake costs 10-60 us of CPU: so an idle rank wakes ever more rarely
    #: (~55-60 times in 5 s), yet answers within ~20 % of the time it waited (a worker idle while
    #: the master breeds a generation for 40 ms answers within 8 ms).  benchmarks/RESULTS.md F7,
    #: F8, F9, 2026-12-02.
    poll_min: float = 2e-5
    poll_max: float = 0.25
    master_poll_max: float = 0.05
    poll_fraction: float = 0.2
    #: while results are expected, the master sleeps at most this fraction of the typical chunk
    #: duration between looks (its wake-up delays the next dispatch: 0.05 costs a worker ~3 %,
    #: benchmarks/RESULTS.md F10, 2026-12-02)
    result_latency: float = 0.05
    #: MPI: wake a waiting worker through a TCP "doorbell" when work is sent to it, instead of
    #: letting it notice on its next poll (``backends/doorbell.py``); off: poll only
    doorbell: bool = True
    #: target duration of one chunk under automatic chunking (seconds): each chunk costs a round
    #: trip, ~0.5 ms of a worker's time on 2 cores (two processes to wake), so chunks of one
    #: 10 ms item held W2 at 0.92-0.94, chunks of 0.1 s at 0.96 (benchmarks/RESULTS.md F24,
    #: 2026-12-02).  Evaluations longer than this go one by one...
    chunk_target: float = 0.1
    #: ...and towards the end of a map, chunks shrink (a quarter of an even share of what is
    #: left), so that the workers finish together, down to this many seconds' worth of items
    chunk_min: float = 0.01
    #: a chunk's largest serialised size: past ~1 MiB the per-message cost is paid for (through a
    #: local socket pair from 64-256 KiB: benchmarks/RESULTS.md F16, 2026-12-02), and a
    #: larger chunk only delays the overlap of one chunk's transfer with another's evaluation.
    chunk_max_bytes: int = 1 << 20
    #: a failed evaluation (the fitness raised, timed out, or its process died): "raise" (the
    #: caller gets the exception), "penalize" (its result is ``penalty``; the failure is recorded)
    #: or "retry:N" (evaluated again, up to N more times, on another worker where there is one;
    #: then "penalize" if a penalty is set, else "raise")
    on_error: str = "raise"
    #: the result a failed evaluation gets under "penalize" (any value; never sent to workers)
    penalty: Any = None
    #: seconds one evaluation may run; a longer one is abandoned and fails under ``on_error``
    eval_timeout: float | None = None
    #: evaluate in a child process each worker keeps, so that a crash costs one evaluation
    isolate: bool = False
    #: bytes of address space an isolated evaluation may use (RLIMIT_AS); implies ``isolate``
    eval_memory: int | None = None
    #: start more local workers than ``max_workers_per_core`` times the cores (a warning and a
    #: cap otherwise)
    force_workers: bool = False
    #: a worker's process lost (killed, out of memory, its host gone): "fail" (the pool breaks,
    #: every pending evaluation raises BrokenPool) or "continue" (the local pool and SCOOP: its
    #: evaluations go to the workers left; MPI refuses it unless the launcher outlives a rank:
    #: :func:`mpi_outlives_a_rank`)
    on_worker_loss: str = "fail"


def literal(raw: str) -> Any:
    """A Python literal from the command line or the environment: ``-1``, ``(-1e9, 1e9)``,
    ``inf``, ``-inf`` (``float('inf')`` is not a literal, so these two are read as floats)."""
    import ast

    text = raw.strip()
    if text.lower() in ("inf", "+inf", "-inf", "nan"):
        return float(text)
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError) as e:
        raise ValueError(raw) from e


def memory(raw: str | int) -> int:
    """Bytes from ``2G``, ``512M``, ``1048576`` (K, M, G, T: powers of 1024)."""
    if isinstance(raw, int):
        return raw
    text = raw.strip().upper().removesuffix("B")
    scale = 1
    if text and text[-1] in "KMGT":
        scale = 1024 ** ("KMGT".index(text[-1]) + 1)
        text = text[:-1]
    return int(float(text) * scale)


def _flag(raw: str) -> bool:
    """An on/off environment variable: 1/0, true/false, yes/no, on/off."""
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


class _Variable(NamedTuple):
    """An option's environment variable: its name, how its text is read, what it sets (for
    ``--help``), and its default as ``--help`` shows it where :class:`Options`' own (``None``)
    would say nothing."""

    name: str
    conv: Callable[[str], Any]
    what: str
    default: str | None = None


#: Every option's ``EVOCLUSTER_*`` variable, in one place: ``resolve`` reads them, ``--help`` lists
#: them (``environment()``) with :class:`Options`' defaults.
_ENV: dict[str, _Variable] = {
    "backend": _Variable("EVOCLUSTER_BACKEND", str, "|".join(BACKENDS)),
    "serialization": _Variable("EVOCLUSTER_SERIALIZATION", str, "|".join(POLICIES)),
    "workers": _Variable("EVOCLUSTER_WORKERS", int, "local pool size", "os.cpu_count()"),
    "prefetch": _Variable("EVOCLUSTER_PREFETCH", int, "chunks in flight per worker"),
    "prefetch_max_bytes": _Variable(
        "EVOCLUSTER_PREFETCH_MAX_BYTES", int, "a larger chunk goes to an idle worker only"
    ),
    "prefetch_spread": _Variable(
        "EVOCLUSTER_PREFETCH_SPREAD", float, "no prefetch for durations spread more than this"
    ),
    "poll_min": _Variable("EVOCLUSTER_POLL_MIN", float, "shortest sleep of a waiting rank (s)"),
    "poll_max": _Variable("EVOCLUSTER_POLL_MAX", float, "longest sleep of a waiting worker (s)"),
    "master_poll_max": _Variable(
        "EVOCLUSTER_MASTER_POLL_MAX", float, "longest sleep of the waiting master (s)"
    ),
    "poll_fraction": _Variable(
        "EVOCLUSTER_POLL_FRACTION", float, "each sleep: this fraction of the time waited"
    ),
    "result_latency": _Variable(
        "EVOCLUSTER_RESULT_LATENCY", float, "master's look for results, fraction of a chunk"
    ),
    "doorbell": _Variable("EVOCLUSTER_DOORBELL", _flag, "MPI: wake workers by TCP (0: poll)"),
    "chunk_target": _Variable("EVOCLUSTER_CHUNK_TARGET", float, "target chunk duration (s)"),
    "chunk_min": _Variable(
        "EVOCLUSTER_CHUNK_MIN", float, "smallest chunk as a map ends (s of work)"
    ),
    "chunk_max_bytes": _Variable(
        "EVOCLUSTER_CHUNK_MAX_BYTES", int, "largest serialised chunk (bytes)"
    ),
    "on_error": _Variable("EVOCLUSTER_ON_ERROR", str, "raise|penalize|retry:N"),
    "penalty": _Variable(
        "EVOCLUSTER_PENALTY", literal, "a penalized evaluation's result (a literal)", "none"
    ),
    "eval_timeout": _Variable(
        "EVOCLUSTER_EVAL_TIMEOUT", float, "seconds one evaluation may run", "none"
    ),
    "isolate": _Variable("EVOCLUSTER_ISOLATE", _flag, "evaluate in a child of each worker"),
    "on_worker_loss": _Variable(
        "EVOCLUSTER_ON_WORKER_LOSS", str, "fail|continue: a lost worker (local, SCOOP)"
    ),
    "eval_memory": _Variable(
        "EVOCLUSTER_EVAL_MEMORY", memory, "address space of that child (2G, 512M)", "none"
    ),
    "force_workers": _Variable(
        "EVOCLUSTER_FORCE_WORKERS", _flag, "allow more than 4 local workers per core"
    ),
}

#: The variables read elsewhere than :func:`resolve` (their modules name them too: a test holds
#: every ``EVOCLUSTER_*`` name of the package to this list and ``_ENV``): name -> (default, what).
OTHER_VARIABLES = {
    "EVOCLUSTER_CHECKPOINT": ("none", "checkpoint path of every engine loop (submit sets it)"),
    "EVOCLUSTER_QUIET": ("0", "no progress display (the launcher's --quiet)"),
    "EVOCLUSTER_PROGRESS_EVERY": ("30", "seconds between plain progress lines (no terminal)"),
    "EVOCLUSTER_LOG": ("none", "append a run log to this path (the launcher's --log)"),
    "EVOCLUSTER_LOG_EVERY": ("30", "seconds between the run log's interval records"),
    "EVOCLUSTER_SHARED_MEMORY": (
        "1",
        "0: a large shared array goes to each worker, not once per host in /dev/shm",
    ),
    "EVOCLUSTER_KEY": (
        "key file",
        "signing key, >= 32 chars, the same on every host (else ~/.config/evocluster/key)",
    ),
}


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return "none" if value is None else str(value)


def environment() -> list[tuple[str, str, str]]:
    """Every ``EVOCLUSTER_*`` variable evocluster reads: ``(name, default, what)``, for
    ``--help``."""
    rows = [
        (v.name, v.default or _shown(Options._field_defaults[option]), v.what)
        for option, v in _ENV.items()
    ]
    rows += [(name, default, what) for name, (default, what) in OTHER_VARIABLES.items()]
    return rows


def resolve(**kwargs: Any) -> Options:
    """Build :class:`Options` from keywords (``None`` = not given), the environment and defaults.

    Raises:
        ConfigurationError: an unknown option, or a value out of range, naming its source.
    """
    values: dict[str, Any] = {}
    for name, value in kwargs.items():
        if name not in _ENV:
            raise ConfigurationError(f"unknown option {name!r}; known: {', '.join(sorted(_ENV))}")
        if value is not None:
            values[name] = value
    for name, (var, conv, _, _) in _ENV.items():
        if name in values or var not in os.environ:
            continue
        raw = os.environ[var]
        try:
            values[name] = conv(raw)
        except ValueError as e:
            kind = conv.__name__ if conv is not _flag else "on/off value"
            hint = " (1/0, true/false, yes/no, on/off)" if conv is _flag else ""
            raise ConfigurationError(f"{var}={raw!r} is not a valid {kind}{hint}") from e
    if isinstance(values.get("eval_memory"), str):
        try:
            values["eval_memory"] = memory(values["eval_memory"])
        except ValueError as e:
            raise ConfigurationError(
                f"eval_memory {values['eval_memory']!r} is not a size (e.g. 2G, 512M, bytes)"
            ) from e
    if values.get("eval_memory") is not None:
        values["isolate"] = True  # a memory limit is a limit on the isolated child
    opts = Options(**values)
    check(opts)
    return opts


def check(opts: Options) -> None:
    """Raise :class:`ConfigurationError` if ``opts`` cannot work (what to change, named)."""
    _validate(opts)
    _validate_faults(opts)


def _validate(o: Options) -> None:
    if o.backend not in BACKENDS:
        raise ConfigurationError(f"backend must be one of {', '.join(BACKENDS)}, not {o.backend!r}")
    if o.serialization not in POLICIES:
        raise ConfigurationError(
            f"serialization must be one of {', '.join(POLICIES)}, not {o.serialization!r}"
        )
    if o.workers is not None and not (_whole(o.workers) and o.workers >= 1):
        raise ConfigurationError(f"workers must be a whole number >= 1, not {o.workers!r}")
    if not (_whole(o.prefetch) and 1 <= o.prefetch <= PREFETCH_MAX):
        raise ConfigurationError(
            f"prefetch must be a whole number from 1 to {PREFETCH_MAX} (chunks in flight per "
            f"worker), not {o.prefetch!r}"
        )
    if not 0 < o.poll_min <= min(o.poll_max, o.master_poll_max):
        raise ConfigurationError(
            f"EVOCLUSTER_POLL_MIN ({o.poll_min}) must be > 0 and no larger than "
            f"EVOCLUSTER_POLL_MAX ({o.poll_max}) and EVOCLUSTER_MASTER_POLL_MAX "
            f"({o.master_poll_max}): set them so that min <= max"
        )
    if not 0 < o.poll_fraction <= 1:
        raise ConfigurationError(
            f"EVOCLUSTER_POLL_FRACTION ({o.poll_fraction}) must be > 0 and <= 1"
        )
    if not 0 < o.result_latency <= 1:
        raise ConfigurationError(
            f"EVOCLUSTER_RESULT_LATENCY ({o.result_latency}) must be > 0 and <= 1"
        )
    _validate_positive(o)


def _whole(value: Any) -> bool:
    """An integer (numpy's too), not a bool, a float or a string."""
    if isinstance(value, bool):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def _validate_positive(o: Options) -> None:
    """NaN fails every comparison: ``not x > 0``, never ``x <= 0``.  The chunk sizes must be
    finite too (the scheduler's thread divides by them and rounds: NaN or inf broke the pool)."""
    if not o.master_poll_max > 0:
        raise ConfigurationError(f"master_poll_max must be > 0, not {o.master_poll_max!r}")
    for name in ("chunk_target", "chunk_min"):
        value = getattr(o, name)
        if not 0 < value < math.inf:
            raise ConfigurationError(f"{name} must be > 0 and finite, not {value!r}")


def _seconds(value: Any) -> float:
    """``value`` as seconds (a number: int, float, numpy's); NaN if it is not a number."""
    if isinstance(value, (bool, str, bytes)):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):  # None, complex, an int beyond a float
        return math.nan


def _validate_faults(o: Options) -> None:
    if retries_of(o.on_error) is None:
        raise ConfigurationError(
            f"on_error must be raise, penalize or retry:N (N a whole number), not {o.on_error!r}"
        )
    if o.on_worker_loss not in ON_WORKER_LOSS:
        raise ConfigurationError(
            f"on_worker_loss must be fail or continue, not {o.on_worker_loss!r}"
        )
    t = o.eval_timeout
    if t is not None and not 0 < _seconds(t) <= EVAL_TIMEOUT_MAX:  # NaN fails both comparisons
        raise ConfigurationError(
            f"eval_timeout must be > 0 and at most {EVAL_TIMEOUT_MAX:.0f} seconds (the longest "
            f"time limit every evaluation timer holds), not {t!r}: leave it unset for no limit"
        )
    if o.eval_memory is not None and o.eval_memory < 1 << 20:
        raise ConfigurationError(
            f"eval_memory must be at least 1M (it limits the whole evaluating process, Python "
            f"included), not {o.eval_memory} bytes"
        )


_MPI_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_SIZE")
_MPI_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")


def _env_int(names: tuple[str, ...]) -> int | None:
    for var in names:
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return None


def mpi_world_size_from_env() -> int | None:
    """The world size an MPI launcher announced in the environment, without starting MPI."""
    return _env_int(_MPI_SIZE_VARS)


def mpi_outlives_a_rank() -> bool:
    """Whether the MPI launcher keeps the job running when a rank dies: Open MPI's ``mpirun
    --enable-recovery`` (4.x, which tells its ranks ``OMPI_MCA_orte_enable_recovery``).  Hydra
    (MPICH) ends every rank, ``-disable-auto-cleanup`` or not; MPICH's ULFM
    (``MPIR_CVAR_ENABLE_FT=1``) aborts every rank of the PyPI wheel 5.0.2 in ``MPI_Init``."""
    flag = os.environ.get("OMPI_MCA_orte_enable_recovery", "")  # noqa: SIM112 - its name
    return flag.strip().lower() in ("1", "true", "yes", "on")


def mpi_rank_from_env() -> int | None:
    """This process's rank as the MPI launcher announced it, without starting MPI."""
    return _env_int(_MPI_RANK_VARS)


def slurm_restart_count() -> int:
    """How many times SLURM has started this job again (``SLURM_RESTART_COUNT``; 0 if unset):
    a requeued job resumes from its checkpoint."""
    return _env_int(("SLURM_RESTART_COUNT",)) or 0
