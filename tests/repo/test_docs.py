"""Every shell command the user's documentation shows (README.md, docs/*.md) is exercised.

The extractor is strict, so that a command cannot slip in unseen:

* fenced blocks are ```` ```sh ```` (commands, one a line: a trailing `` # comment`` is not part
  of it, a ``\\`` continues it on the next line), ```` ```python ```` or ```` ```text ```` (output,
  diagrams: a line there that starts like a command is refused); any other fence, a fence that
  does not start its line, and an indented code block are refused;
* inline code, in prose and tables, is a command when its first word (after ``NAME=value``
  assignments) is a program (``PROGRAMS``) followed by at least one argument: `python job.py` is
  one, `mpiexec` alone is a name.

A command joined by ``&&`` is checked part by part.  Each part must be

* run here as shown (``RUN``), in a temporary directory holding a small ``job.py``
  (``DOCS_JOB``, also as ``package/module.py``) and a copy of ``jobs/onemax.py``; or
* registered in ``REGISTRY``: the tests that run it in substance, by node id (which
  ``test_registered_tests_exist`` collects, so that a renamed test fails here); or
* registered in ``CI``: a command that ``.ci/run`` (or a script it runs) runs itself, by the line
  that does it; an install's packages must be among that line's.

The checks also hold README's test command to ``.ci/run``'s, the links between the pages to
existing files and headings, and ``python -m evocluster --help`` to every ``EVOCLUSTER_*``
variable the package reads.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from helpers import ROOT, clean_env, launches, output, require_mpiexec, run

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Pages whose links are checked too (their commands are CI's own: CONTRIBUTING.md).
LINKED = [*DOCS, ROOT / "CONTRIBUTING.md", ROOT / "ARCHITECTURE.md"]
CI_RUN = ROOT / ".ci" / "run"

#: A span or line whose first word is one of these, with an argument, is a command.
PROGRAMS = frozenset(
    {
        "apt-get",
        "bash",
        "env",
        "export",
        "git",
        "mpiexec",
        "mpirun",
        "mypy",
        "nohup",
        "pip",
        "pip3",
        "pytest",
        "python",
        "python3",
        "ruff",
        "salloc",
        "sbatch",
        "scancel",
        "scontrol",
        "sh",
        "squeue",
        "srun",
        "sudo",
    }
)
FENCES = ("sh", "python", "text")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S*$")


class Shown(NamedTuple):
    command: str
    where: str  # "docs/launching.md:12"


class Run(NamedTuple):
    """A command ``test_command_runs_as_shown`` runs: what its output must contain."""

    expect: str
    code: int = 0
    before: tuple[str, ...] = ()  # commands run first, in the same directory
    slow: bool = False


class Covered(NamedTuple):
    """Tests that run a command in substance, and why not as shown."""

    nodes: tuple[str, ...]
    why: str


class ByCI(NamedTuple):
    """A command ``.ci/run`` (or ``script``, which it runs) runs itself: ``line`` does it (no
    line: the command runs ``script`` itself, CI's entry point)."""

    script: str
    line: str


# --------------------------------------------------------------------------- what runs how
DOCS_JOB = """\
import functools

import evocluster
from evocluster import engine, operators as ops


def fitness(genome):
    return float(genome.sum())


if __name__ == "__main__":
    values = evocluster.map(abs, [-1, -2, -3])
    result = engine.generational(
        fitness,
        lambda rng: ops.random_bits(8, 12, rng),
        executor=evocluster.get_executor(),
        generations=3,
        seed=1,
        crossover=ops.two_point,
        mutate=functools.partial(ops.bit_flip, p=0.1),
    )
    ex = evocluster.get_executor()
    print("DOCS-JOB", ex.backend, ex.n_workers, values, result.best_fitness)
"""

CORES = os.cpu_count() or 1

#: Commands run as shown, in a fresh directory (``_workdir``).
RUN: dict[str, Run] = {
    "mpiexec -n 5 python -m evocluster jobs/onemax.py": Run(
        "evaluated by backend mpi with 4 worker(s)"
    ),
    "python -m evocluster job.py": Run(f"DOCS-JOB local {CORES} [1, 2, 3]"),
    "python -m evocluster --workers 8 job.py": Run(f"DOCS-JOB local {min(8, 4 * CORES)} [1, 2, 3]"),
    "python -m evocluster --backend serial job.py": Run("DOCS-JOB serial 1 [1, 2, 3]"),
    "python -m evocluster -m package.module": Run(f"DOCS-JOB local {CORES} [1, 2, 3]"),
    "python job.py": Run(f"DOCS-JOB local {CORES} [1, 2, 3]"),
    "python -m scoop job.py": Run(f"DOCS-JOB scoop {max(CORES - 1, 1)} [1, 2, 3]"),
    "python -m evocluster --checkpoint run.ckpt job.py": Run("DOCS-JOB local"),
    "python -m evocluster --checkpoint run.ckpt --resume job.py": Run(
        "DOCS-JOB local", before=("python -m evocluster --checkpoint run.ckpt job.py",)
    ),
    "python -m evocluster --log run.jsonl job.py": Run("DOCS-JOB local"),
    "python -m evocluster report run.jsonl -o report.png": Run(
        "picture of run 1: report.png", before=("python -m evocluster --log run.jsonl job.py",)
    ),
    "python -m evocluster --help": Run("EVOCLUSTER_KEY"),
    "python -m evocluster info": Run(f"backend: local, {CORES} worker processes (auto)"),
    "python -m evocluster info --json": Run('"mpiexec/mpi4py match": '),
    "python -m evocluster submit job.py --ntasks 64 --time 12:00:00 --checkpoint run.ckpt "
    "--dry-run": Run("#SBATCH --ntasks=64"),
}

_LAUNCHER = "tests/launch/test_launcher.py"
_SLURM = "tests/slurm/test_slurm.py"
_SLURM_CLUSTER = Covered(
    (f"{_SLURM}::test_the_cluster_runs_what_the_templates_need",),
    "root, and a SLURM cluster: test_slurm.py's session fixture brings one up and down with "
    "these scripts (its own state directory)",
)

_MULTIHOST = "tests/multihost/test_mpi_multihost.py"
#: docs/launching.md's hosts on one machine: global names, and root
_HOSTS = Covered(
    (f"{_MULTIHOST}::test_every_host_evaluates[mpich]",),
    "root, and namespaces with fixed names: tests/multihost.py makes the same hosts, bridge, names "
    "and ssh stand-in with names of its own (and brings them down), for every test there",
)

_SLURM_NODES = "tests/multihost/test_slurm_multinode.py"
#: docs/checkpoints-and-slurm.md's SLURM over those hosts: global names, root, SLURM's daemons
_SLURM_HOSTS = Covered(
    (
        f"{_SLURM_NODES}::test_a_job_on_2_nodes_runs_on_both_with_the_population_of_one_host",
        f"{_SLURM_NODES}::test_a_lost_node_ends_the_job_saying_where_and_it_resumes_after_a_requeue",
    ),
    "root, SLURM, and the hosts' fixed names: tests/multihost/slurm_nodes.py brings up the same "
    "cluster (bridge address, up.sh with on-host, clients through nsenter) over hosts with names "
    "of their own, submits, requeues, and brings it down",
)

_SIMULATE = "tests/unit/test_simulate.py"
_SIMULATOR = Covered(
    (
        f"{_SIMULATE}::test_prefetch_hides_the_round_trip_as_the_policy_says",
        f"{_SIMULATE}::test_chunk_sizes_follow_the_measured_cost",
        f"{_SIMULATE}::test_a_master_cost_above_the_work_serialises_the_run",
    ),
    "a benchmark (minutes to an hour): the tests run the same simulator, on the real scheduler, "
    "at sizes worked out by hand",
)
_SCALE_REAL = Covered(
    (f"{_SIMULATE}::test_scale_real_runs_under_mpiexec",),
    "17 ranks of 100 ms sleeps are a benchmark: the test runs the same job on 3 ranks",
)

#: Commands the documentation shows that cannot run here as shown, and the tests that run them
#: in substance.
REGISTRY: dict[str, Covered] = {
    "mpirun --enable-recovery": Covered(
        (
            "tests/faults/test_worker_loss.py::"
            "test_open_mpi_with_recovery_and_continue_a_killed_rank_costs_the_run_nothing",
        ),
        "a flag of Open MPI's launcher, named in prose; the test runs a job with it",
    ),
    "python benchmarks/simulate.py --workers 10000 --tasks-per-worker 2 --duration const:0.1 "
    "--warmup same": _SIMULATOR,
    "python benchmarks/simulate.py --validate": _SIMULATOR,
    "python benchmarks/simulate.py --table": _SIMULATOR,
    "mpiexec -n 17 python -m evocluster benchmarks/scale_real.py --tasks-per-worker 200 --sleep 0 "
    "--maps 3 --chunksize 1": _SCALE_REAL,
    "mpiexec -n 17 python -m evocluster benchmarks/scale_real.py --tasks-per-worker 20 "
    "--sleep 0.1": _SCALE_REAL,
    "ip -n sw addr add 10.214.0.1/24 dev br0": _SLURM_HOSTS,
    "ip -n sw link set lo up": _SLURM_HOSTS,
    'EVOSLURM_ROOT=/tmp/evonodes EVOSLURM_NODES="h1=10.214.0.11 h2=10.214.0.12 h3=10.214.0.13" '
    "EVOSLURM_CONTROLLER=localhost=10.214.0.1 "
    'EVOSLURM_NODE_EXEC="$PWD/slurm/cluster/on-host {name}" nsenter --net=/run/netns/sw bash '
    "slurm/cluster/up.sh": _SLURM_HOSTS,
    "export SLURM_CONF=/tmp/evonodes/etc/slurm.conf": _SLURM_HOSTS,
    "nsenter --net=/run/netns/sw python -m evocluster submit jobs/onemax_builtin.py -N 2 "
    "--ntasks 4 --time 00:10:00": _SLURM_HOSTS,
    "EVOSLURM_ROOT=/tmp/evonodes nsenter --net=/run/netns/sw bash slurm/cluster/down.sh": (
        _SLURM_HOSTS
    ),
    "scontrol requeue JOBID": _SLURM_HOSTS,
    "sudo -s": _HOSTS,
    "ip netns add sw": _HOSTS,
    "ip -n sw link add br0 type bridge": _HOSTS,
    "ip -n sw link set br0 up": _HOSTS,
    "for i in 1 2 3; do ip netns add h$i; "
    "ip -n sw link add p$i type veth peer name eth0 netns h$i; "
    "ip -n sw link set p$i master br0 up; ip -n h$i addr add 10.214.0.1$i/24 dev eth0; "
    "ip -n h$i link set eth0 up; ip -n h$i link set lo up; mkdir -p /etc/netns/h$i; "
    "printf '127.0.0.1 localhost\\n10.214.0.11 h1\\n10.214.0.12 h2\\n10.214.0.13 h3\\n' > "
    "/etc/netns/h$i/hosts; done": _HOSTS,
    "chmod +x nsexec": _HOSTS,
    'ip netns exec h1 unshare --uts sh -c "hostname h1; mpiexec -launcher ssh -launcher-exec '
    "$PWD/nsexec -iface eth0 -hosts h1:3,h2:2,h3:2 -n 7 python -m evocluster --log run.jsonl "
    'jobs/onemax.py"': Covered(
        (
            f"{_MULTIHOST}::test_the_run_log_names_the_hosts[mpich]",
            f"{_MULTIHOST}::test_a_job_gives_the_same_population_across_hosts_as_on_one[onemax.py-mpich]",
        ),
        "root and namespaces: the same launch over the tests' own 3 hosts (tests/multihost.py's "
        "mpiexec()), onemax at a small size, its population compared with one host's",
    ),
    "for i in 1 2 3; do ip netns del h$i; rm -r /etc/netns/h$i; done; ip netns del sw": _HOSTS,
    "mpiexec -n 9 python -m evocluster --progress-every 3 jobs/heavy_tail.py": Covered(
        (
            "tests/launch/test_monitor.py::test_without_a_terminal_progress_is_plain_lines"
            "[mpich-wheel]",
        ),
        "9 ranks do not fit 2 cores: the test prints plain progress lines of an MPI run on 3 ranks",
    ),
    "mpiexec -n 64 python -m evocluster job.py": Covered(
        (
            f"{_LAUNCHER}::test_success[mpi]",
            f"{_LAUNCHER}::test_success[openmpi]",
            "tests/conformance/test_onemax.py::test_run_succeeds_and_reports[mpi-5]",
        ),
        "64 ranks do not fit 2 cores: the same launch with 3 and 5 ranks, MPICH and Open MPI",
    ),
    "mpiexec -n 9 python -m evocluster --log run.jsonl jobs/heavy_tail.py --evaluations 800 "
    "--mean 0.05 --sigma 1.2 --pop 64": Covered(
        (
            "tests/launch/test_report.py::"
            "test_summary_and_picture_of_a_real_run_and_of_its_log_cut_short[mpi]",
        ),
        "9 ranks for 17 s do not fit 2 cores: the test logs heavy_tail.py on 4 ranks, reports it",
    ),
    "srun -n 64 python -m evocluster job.py": Covered(
        (f"{_SLURM}::test_onemax_on_5_tasks_completes_with_the_serial_population[srun]",),
        "needs a SLURM allocation: submit's script runs srun with 5 tasks on the test cluster",
    ),
    "python -m scoop -n 16 job.py": Covered(
        (
            "tests/scoop/test_scoop.py::test_a_run_that_ends_normally_exits_0[ok]",
            "tests/conformance/test_jobs.py::test_job_gives_the_same_population_everywhere[onemax.py-scoop-4]",
        ),
        "16 SCOOP processes on 2 cores: the same launch with 3 and 4",
    ),
    "python -m scoop --hostfile hosts job.py": Covered(
        (
            "tests/scoop/test_scoop_multihost.py::test_a_run_on_every_host_leaves_no_process_on_any_host",
        ),
        "several hosts: emulated with network namespaces (root)",
    ),
    "python -m scoop -n 64 job.py": Covered(
        (f"{_SLURM}::test_onemax_on_5_tasks_completes_with_the_serial_population[scoop]",),
        "in a SLURM allocation: slurm/scoop.sbatch runs `python -m scoop -n $SLURM_NTASKS`",
    ),
    "python -m evocluster submit job.py --ntasks 64 --time 12:00:00 --checkpoint run.ckpt": (
        Covered(
            (
                f"{_SLURM}::test_onemax_on_5_tasks_completes_with_the_serial_population[srun]",
                f"{_SLURM}::test_the_warning_checkpoints_requeues_and_resumes_to_the_same_"
                "population[srun]",
                "tests/slurm/test_slurm_submit.py::test_submit_hands_the_dry_run_script_to_sbatch_and_"
                "prints_the_job_id",
            ),
            "needs SLURM: submitted to the test cluster with 5 tasks and --checkpoint",
        )
    ),
    "python -m evocluster status JOBID": Covered(
        (
            f"{_SLURM}::test_onemax_on_5_tasks_completes_with_the_serial_population[srun]",
            f"{_SLURM}::test_status_of_a_task_of_an_array_and_of_a_task_it_does_not_have",
            f"{_SLURM}::test_status_of_a_job_slurm_does_not_know",
            f"{_SLURM}::test_status_of_a_running_job_shows_the_progress_in_its_run_log",
            f"{_SLURM}::test_status_of_a_running_array_shows_each_tasks_progress",
        ),
        "needs a SLURM job",
    ),
    "scancel --signal=USR1 --batch JOBID": Covered(
        (
            f"{_SLURM}::test_the_warning_checkpoints_requeues_and_resumes_to_the_same_"
            "population[srun]",
        ),
        "needs a SLURM job",
    ),
    "sudo bash slurm/cluster/up.sh": _SLURM_CLUSTER,
    "export SLURM_CONF=/tmp/evocluster-slurm/etc/slurm.conf": _SLURM_CLUSTER,
    "sudo bash slurm/cluster/down.sh": _SLURM_CLUSTER,
    "mpiexec -n 1": Covered(
        (
            f"{_LAUNCHER}::test_mpi_single_rank_warns_and_evaluates_serially[mpich-wheel]",
            f"{_LAUNCHER}::test_mpi_single_rank_warns_and_evaluates_serially[openmpi]",
        ),
        "a fragment: one rank evaluates serially, with a warning",
    ),
    "mpiexec -n N": Covered(
        (
            f"{_LAUNCHER}::test_mpi_world_with_a_non_mpi_backend_is_a_usage_error[local]",
            f"{_LAUNCHER}::test_mpi_world_with_a_non_mpi_backend_is_a_usage_error[serial]",
        ),
        "a fragment: --backend local or serial under mpiexec is refused",
    ),
    "mpiexec -n N python job.py": Covered(
        (
            "tests/faults/test_exit_paths.py::test_plain_mpiexec_of_a_job_is_one_message_and_exit_code_2",
        ),
        "refused with exit code 2: run with 5 ranks",
    ),
    "mpiexec --allow-run-as-root --oversubscribe": Covered(
        (f"{_LAUNCHER}::test_success[openmpi]",),
        "a fragment: the flags every Open MPI launch of the tests passes (helpers.OPENMPI_FLAGS)",
    ),
}

_CI_INSTALL = ByCI(".ci/run", "pip install -e '.[mpi,test]' && python -m pytest")
#: Commands CI runs itself (installs, the test suite, the machine's set-up), by the line that
#: does it.
CI: dict[str, ByCI] = {
    "pip install -e '.[mpi]'": _CI_INSTALL,
    "pip install -e '.[mpi,test]'": _CI_INSTALL,
    "python -m pytest": _CI_INSTALL,
    "pip install -e .": _CI_INSTALL,
    "pip install 'evocluster[scoop]'": _CI_INSTALL,
    "pip install 'evocluster[plot]'": _CI_INSTALL,
    "pip install cma": _CI_INSTALL,
    "env MPICC=mpicc pip install --no-binary mpi4py mpi4py": ByCI(
        ".ci/openmpi",
        'MPICC="$mpicc" "$venv/bin/python" -m pip install --quiet --no-binary mpi4py '
        "'mpi4py>=4.0'",
    ),
    "sudo bash .ci/slurm": ByCI(".ci/run", "bash .ci/slurm"),
    "bash .ci/run": ByCI(".ci/run", ""),
}


# --------------------------------------------------------------------------- the extractor
def _words(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError:
        return command.split()


def _is_command(text: str) -> bool:
    """``text`` starts like a command: a program with at least one argument, after assignments."""
    words = _words(text)
    while words and _ASSIGNMENT.match(words[0]):
        words.pop(0)
    return len(words) >= 2 and words[0] in PROGRAMS


def _classify(text: str, name: str, problems: list[str]) -> list[tuple[int, str | None, str]]:
    """Each line as ``(number, info, line)``: ``info`` is its fenced block's (``sh``, ...), None
    for prose; the fence lines themselves are left out."""
    found: list[tuple[int, str | None, str]] = []
    fence: str | None = None
    info = ""
    for number, line in enumerate(text.splitlines(), 1):
        opening = re.match(r"^(\s*)(```+|~~~+)\s*(\S*)\s*$", line)
        if fence is None and opening:
            indent, fence, info = opening.groups()
            if indent:
                problems.append(f"{name}:{number}: a fence that does not start its line")
            if info not in FENCES:
                problems.append(
                    f"{name}:{number}: a ```{info} block: commands go in ```sh, output and "
                    "diagrams in ```text, code in ```python"
                )
        elif fence is not None and line.strip() == fence:
            fence = None
        else:
            found.append((number, None if fence is None else info, line))
    if fence is not None:
        problems.append(f"{name}: a fenced block that never ends")
    return found


def _block_commands(
    lines: list[tuple[int, str | None, str]], name: str, problems: list[str]
) -> list[Shown]:
    """The commands of the ```sh blocks; a command-like line in a ```text block is a problem."""
    shown = []
    pending = ""  # an sh line continued with a backslash
    previous = 0
    for number, info, line in lines:
        where = f"{name}:{number}"
        if pending and (info != "sh" or number != previous + 1):
            problems.append(f"{name}:{previous}: a command continued past its block")
            pending = ""
        previous = number
        if info == "sh":
            body = pending + line.strip()
            pending = body[:-1].rstrip() + " " if body.endswith("\\") else ""
            command = "" if pending else re.sub(r"\s+#\s.*$", "", body).strip()
            if command.startswith("$"):
                problems.append(f"{where}: no prompt in ```sh blocks: {command}")
            elif command and not command.startswith("#"):
                shown.append(Shown(command, where))
        elif info == "text" and _is_command(line.strip().removeprefix("$ ")):
            problems.append(f"{where}: a command outside a ```sh block: {line.strip()}")
        elif info is None and re.match(r"^( {4}|\t)", line):
            problems.append(
                f"{where}: an indented code block (or a line indented 4 or more): use a fenced "
                f"```sh block for commands: {line.strip()}"
            )
    return shown


def _span_commands(lines: list[tuple[int, str | None, str]], name: str) -> list[Shown]:
    """The inline code of the prose (a span may cross a line, not a paragraph) that is a
    command."""
    numbers = {n: line for n, info, line in lines if info is None}
    last = max([n for n, _, _ in lines], default=0)
    body = "\n".join(numbers.get(n, "") for n in range(1, last + 1))
    shown = []
    for m in re.finditer(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", body, re.S):
        span = " ".join(m.group(2).replace("\\|", "|").split())
        if "\n\n" not in m.group(2) and _is_command(span):
            shown.append(Shown(span, f"{name}:{body.count(chr(10), 0, m.start()) + 1}"))
    return shown


def scan(text: str, name: str) -> tuple[list[Shown], list[str]]:
    """The commands ``text`` (the page ``name``) shows, and what breaks the format's rules."""
    problems: list[str] = []
    lines = _classify(text, name, problems)
    shown = _block_commands(lines, name, problems) + _span_commands(lines, name)
    return shown, problems


def _pages() -> list[tuple[Path, str]]:
    return [(p, str(p.relative_to(ROOT))) for p in DOCS]


def shown_commands() -> tuple[list[Shown], list[str]]:
    """Every command part (``&&`` split) of every page, and every format problem."""
    commands: list[Shown] = []
    problems: list[str] = []
    for path, name in _pages():
        found, bad = scan(path.read_text(encoding="utf-8"), name)
        problems += bad
        for item in found:
            commands += [Shown(p.strip(), item.where) for p in item.command.split(" && ")]
    return commands, problems


# --------------------------------------------------------------------------- the extractor's own
def test_the_extractor_finds_every_form_and_refuses_the_others() -> None:
    page = "\n".join(
        [
            "Run `python -m evocluster job.py` or `mpiexec`, `--workers 8`, `X=1`.",
            "| `srun -n 2 python \\| x` | table |",
            "A span `python -m scoop",
            "job.py` across lines.",
            "```sh",
            "pip install -e . && python -m pytest   # comment",
            "# a comment line",
            "python -m evocluster \\",
            "  --backend serial job.py",
            "```",
            "```text",
            "mpiexec -n 2 python job.py",
            "```",
            "```bash",
            "ls",
            "```",
            "    python job.py",
            "```python",
            "python = 3",
            "```",
        ]
    )
    shown, problems = scan(page, "page.md")
    assert [s.command for s in shown] == [
        "pip install -e . && python -m pytest",
        "python -m evocluster --backend serial job.py",
        "python -m evocluster job.py",
        "srun -n 2 python | x",
        "python -m scoop job.py",
    ]
    assert sorted(p.split(": ")[0] + ": " + p.split(": ")[1][:12] for p in problems) == [
        "page.md:12: a command ou",
        "page.md:14: a ```bash bl",
        "page.md:17: an indented ",
    ], problems


# --------------------------------------------------------------------------- the checks
def test_the_pages_follow_the_format() -> None:
    _, problems = shown_commands()
    assert not problems, "\n".join(problems)


def test_every_command_shown_is_run_or_registered() -> None:
    commands, _ = shown_commands()
    assert commands, "no command found: is the extractor broken?"
    missing = [s for s in commands if s.command not in RUN | REGISTRY | CI]
    assert not missing, "\n".join(
        f"{s.where}: `{s.command}` is neither run nor registered by tests/repo/test_docs.py. "
        f"Run it as shown: RUN[{s.command!r}] = Run(expect='what its output contains'); or name"
        f" the tests that run it in substance: REGISTRY[{s.command!r}] = "
        "Covered(('tests/kind/test_x.py::test_y[param]',), 'why not as shown'); or, for what CI "
        "runs itself (an install): "
        f"CI[{s.command!r}] = ByCI('.ci/run', 'the line that does it')"
        for s in missing
    )


def test_no_registered_command_is_stale() -> None:
    commands = {s.command for s in shown_commands()[0]}
    commands |= {b for r in RUN.values() for b in r.before}
    stale = sorted((set(RUN) | set(REGISTRY) | set(CI)) - commands)
    assert not stale, f"registered here but shown nowhere any more: {stale}"


def test_registered_tests_exist() -> None:
    """Collect every node id ``REGISTRY`` names: a renamed or removed test fails here."""
    nodes = sorted({n for c in REGISTRY.values() for n in c.nodes})
    collect = ["--collect-only", "-q", "-n", "0", "-p", "no:cacheprovider"]
    r = subprocess.run(
        [sys.executable, "-m", "pytest", *collect, *nodes],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    collected = set(r.stdout.splitlines())
    assert not [n for n in nodes if n not in collected], (
        f"not collected: {[n for n in nodes if n not in collected]}\n{r.stdout}\n{r.stderr}"
    )


def _ci_scripts() -> set[str]:
    """``.ci/run`` and the scripts it runs (``bash .ci/NAME``)."""
    text = CI_RUN.read_text()
    return {".ci/run", *re.findall(r"^\s*bash (\.ci/\S+)\s*$", text, re.M)}


def _requirement_names(spec: str, pyproject: dict[str, Any]) -> set[str]:
    """The distributions ``spec`` (a pip target) installs: evocluster's own (``.``,
    ``.[extras]``, ``evocluster[extras]``) expanded through pyproject.toml, else its name."""
    project = pyproject["project"]
    m = re.fullmatch(r"(\.|evocluster)(?:\[([\w,-]+)\])?", spec)
    if m is None:
        return {re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0].lower()}
    reqs = list(project["dependencies"])
    for extra in (m.group(2) or "").split(","):
        if extra:
            reqs += project["optional-dependencies"][extra]
    return {"evocluster"} | {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in reqs}


def installs(command: str) -> set[str] | None:
    """The distributions a ``pip install`` command installs; None if it is not one."""
    words = _words(command)
    if "pip" not in words or "install" not in words[words.index("pip") :]:
        return None
    args = words[words.index("install", words.index("pip")) + 1 :]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    names: set[str] = set()
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("--no-binary", "--only-binary", "-r", "-c", "-i", "--index-url"):
            skip = True
        elif not arg.startswith("-"):
            names |= _requirement_names(arg, pyproject)
    return names


@pytest.mark.parametrize("command", sorted(CI))
def test_ci_runs_it(command: str) -> None:
    by = CI[command]
    assert by.script in _ci_scripts(), f"{by.script} is not run by .ci/run"
    if not by.line:
        assert _words(command)[-1] == by.script, f"`{command}` does not run {by.script}"
        return
    lines = [line.strip() for line in (ROOT / by.script).read_text().splitlines()]
    assert by.line in lines, f"{by.script} has no line {by.line!r}"
    shown = installs(command)
    if shown is not None:
        done = installs(by.line)
        assert done is not None, f"{by.line!r} installs nothing"
        assert shown <= done, f"`{command}` installs {sorted(shown - done)}, which CI does not"
    else:
        assert command.removeprefix("sudo ") in by.line, f"{by.line!r} does not run `{command}`"


def test_readme_test_command_is_what_ci_runs() -> None:
    """README's test command is exactly .ci/run's last command."""
    readme, _ = scan((ROOT / "README.md").read_text(), "README.md")
    tests = [s.command for s in readme if "pytest" in s.command]
    assert tests == ["pip install -e '.[mpi,test]' && python -m pytest"], tests
    lines = [x.strip() for x in CI_RUN.read_text().splitlines()]
    commands = [x for x in lines if x and not x.startswith("#")]
    assert commands[-1] == tests[0], f".ci/run ends with {commands[-1]!r}, README has {tests[0]!r}"


def test_readme_run_command_is_the_one_run_here() -> None:
    readme, _ = scan((ROOT / "README.md").read_text(), "README.md")
    first = [s.command for s in readme if "jobs/onemax.py" in s.command]
    assert first == ["pip install -e '.[mpi]' && mpiexec -n 5 python -m evocluster jobs/onemax.py"]


# --------------------------------------------------------------------------- running them
def _argv(command: str) -> tuple[list[str], dict[str, str]]:
    """The argv and extra environment of ``command`` as a shell would run it here."""
    words = _words(command)
    env: dict[str, str] = {}
    while words and _ASSIGNMENT.match(words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    if words[0] in ("python", "python3"):
        words[0] = sys.executable
    elif words[0] == "mpiexec":
        words[0] = require_mpiexec()
    return words, env


def _workdir(where: Path) -> None:
    (where / "job.py").write_text(DOCS_JOB)
    (where / "package").mkdir()
    (where / "package" / "__init__.py").write_text("")
    (where / "package" / "module.py").write_text(DOCS_JOB)
    (where / "jobs").mkdir()
    shutil.copy(ROOT / "jobs" / "onemax.py", where / "jobs" / "onemax.py")
    (where / "xdg").mkdir()  # the signing key of checkpoints and SCOOP: not the real home's


def _run_params() -> list[Any]:
    params = []
    for command, spec in RUN.items():
        marks = [getattr(pytest.mark, m) for m in {launches(_words(command))} if m]
        if spec.slow:
            marks.append(pytest.mark.slow)
        params.append(pytest.param(command, marks=marks, id=command))
    return params


@pytest.mark.parametrize("command", _run_params())
def test_command_runs_as_shown(command: str, tmp_path: Path) -> None:
    _workdir(tmp_path)
    spec = RUN[command]
    for step in (*spec.before, command):
        argv, extra = _argv(step)
        env = clean_env(XDG_CONFIG_HOME=str(tmp_path / "xdg"), **extra)
        r = run(argv, cwd=tmp_path, env=env, no_leftovers=True)
        want = spec.code if step == command else 0
        assert r.returncode == want, f"`{step}`\n{output(r)}"
    assert spec.expect in r.stdout + r.stderr, f"`{command}`\n{output(r)}"


# --------------------------------------------------------------------------- links
def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    return {_slug(h) for h in re.findall(r"^#+\s+(.*)$", text, re.M)}


def test_links_between_the_pages_resolve() -> None:
    bad = []
    for page in LINKED:
        text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            path = (page.parent / file).resolve() if file else page
            if not path.exists():
                bad.append(f"{page.name}: ({target}): no such file")
            elif anchor and anchor not in _anchors(path):
                bad.append(f"{page.name}: ({target}): no heading #{anchor} in {path.name}")
    assert not bad, "\n".join(bad)


# --------------------------------------------------------------------------- --help
def _variables_in_the_package() -> set[str]:
    found = set()
    for path in (ROOT / "evocluster").rglob("*.py"):
        found |= set(re.findall(r"\bEVOCLUSTER_[A-Z][A-Z0-9_]*", path.read_text()))
    return found


def test_help_lists_the_subcommands_and_every_variable() -> None:
    r = run([sys.executable, "-m", "evocluster", "--help"])
    assert r.returncode == 0, output(r)
    names = _variables_in_the_package()
    assert len(names) > 20, names
    missing = sorted(n for n in names if not re.search(rf"^\s+{n}\s+\S", r.stdout, re.M))
    assert not missing, f"--help does not list (with a default): {missing}\n{r.stdout}"
    for sub in ("submit", "status", "info"):
        assert re.search(rf"^\s+python -m evocluster {sub} ", r.stdout, re.M), r.stdout
    documented = (ROOT / "docs" / "configuration.md").read_text()
    assert not [n for n in names if f"`{n}`" not in documented], "docs/configuration.md"
