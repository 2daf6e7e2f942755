"""``python -m evocluster submit`` and ``status`` without a cluster: the rendered batch scripts (the
templates in ``slurm/`` are renderings), every usage error in one line with exit code 2 before
anything reaches ``sbatch``, the hand-over to ``sbatch`` (a stand-in that records what it got),
and ``evocluster.run_seed``.  tests/slurm/test_slurm.py runs the scripts on a real SLURM."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, clean_env, output, run

import evocluster
from evocluster import _slurm as slurm
from evocluster.checkpoint import EXIT_TEMPFAIL
from evocluster.errors import ConfigurationError

ONEMAX = "jobs/onemax.py"
BASE = [ONEMAX, "--ntasks", "5", "--time", "01:00:00", "--checkpoint", "onemax.ckpt"]

#: slurm/NAME: the options it is rendered from (with PYTHON=python3), from the repository's root
TEMPLATES = {
    "mpi-srun.sbatch": BASE,
    "mpi-mpiexec.sbatch": [*BASE, "--launcher", "mpiexec"],
    "scoop.sbatch": [*BASE, "--backend", "scoop"],
    "array.sbatch": [*BASE, "--array", "0-29", "--checkpoint", "onemax-%a.ckpt"],
}


@pytest.fixture
def at_root(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(ROOT)
    return ROOT


def submit_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "evocluster", "submit", *args]


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_the_templates_are_what_submit_renders(at_root: Path, name: str) -> None:
    rendered = slurm.render(slurm.parse_submit(TEMPLATES[name]), python="python3")
    on_disk = (ROOT / "slurm" / name).read_text()
    command = shlex.join(["python -m evocluster submit", *TEMPLATES[name], "--dry-run"])
    assert rendered == on_disk, (
        f"slurm/{name} is not what submit renders: change evocluster/_slurm.py or "
        f"evocluster/templates/slurm_batch.sh, then write the template again with `{command}` "
        "(PYTHON=python3 in the file)"
    )


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_every_template_is_valid_bash_and_fits_the_line_length(name: str) -> None:
    bash = shutil.which("bash")
    assert bash is not None
    path = ROOT / "slurm" / name
    checked = subprocess.run([bash, "-n", str(path)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr
    text = path.read_text()
    assert [line for line in text.splitlines() if len(line) > 100] == []
    for needed in (
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
        "#SBATCH --signal=B:USR1@120",
        "trap warn USR1",
        'scontrol requeue "$SLURM_JOB_ID"',
        '"$run" || code=$?',
    ):
        assert needed in text, needed
    # the #SBATCH lines come before the first command, or sbatch ignores them
    first_command = next(
        i for i, line in enumerate(text.splitlines()) if line and not line.startswith("#")
    )
    assert all(
        i < first_command for i, line in enumerate(text.splitlines()) if line.startswith("#SBATCH")
    )


def test_the_scripts_requeue_on_the_checkpoint_exit_code() -> None:
    for name in TEMPLATES:
        assert f'[ "$code" = {EXIT_TEMPFAIL} ]' in (ROOT / "slurm" / name).read_text()


def test_the_launch_lines(at_root: Path) -> None:
    srun = slurm.render(slurm.parse_submit(TEMPLATES["mpi-srun.sbatch"]))
    assert 'srun --mpi=pmi2 --kill-on-bad-exit=1 bash -c "$ignore_usr1" evocluster' in srun
    assert '"$PYTHON" -m evocluster --backend mpi "$JOB" "${ARGS[@]}" &' in srun
    mpiexec = slurm.render(slurm.parse_submit(TEMPLATES["mpi-mpiexec.sbatch"]))
    assert 'mpiexec -n "$SLURM_NTASKS" bash -c "$ignore_usr1" evocluster' in mpiexec
    scoop = slurm.render(slurm.parse_submit(TEMPLATES["scoop.sbatch"]))
    assert '(trap "" USR1; exec "$PYTHON" -m scoop -n "$SLURM_NTASKS" "$JOB"' in scoop
    assert "ignore_usr1=" not in scoop and "srun" not in scoop.split("# EDIT: the job\n")[1]
    array = slurm.render(slurm.parse_submit(TEMPLATES["array.sbatch"]))
    assert "#SBATCH --array=0-29\n#SBATCH --output=onemax-%A_%a.out" in array
    assert 'CHECKPOINT=${CHECKPOINT//"%a"/$SLURM_ARRAY_TASK_ID}' in array


def test_dry_run_prints_the_script_stably_with_every_option(at_root: Path) -> None:
    args = [
        ONEMAX,
        "--ntasks",
        "64",
        "--nodes",
        "4",
        "--time",
        "1-02:03:04",
        "--partition",
        "short",
        "--account",
        "proj-42",
        "--array",
        "0-9%2",
        "--checkpoint",
        "runs/r-%a.ckpt",
        "--dry-run",
        "--",
        "--ngen",
        "50",
        "a b",
        "$HOME",
    ]
    first = run(submit_cmd(*args), cwd=ROOT, timeout=60)
    second = run(submit_cmd(*args), cwd=ROOT, timeout=60)
    assert first.returncode == 0 and first.stderr == "", output(first)
    assert first.stdout == second.stdout
    script = first.stdout
    for line in (
        "#SBATCH --job-name=onemax",
        "#SBATCH --ntasks=64",
        "#SBATCH --nodes=4",
        "#SBATCH --time=1-02:03:04",
        "#SBATCH --partition=short",
        "#SBATCH --account=proj-42",
        "#SBATCH --array=0-9%2",
        "#SBATCH --output=onemax-%A_%a.out",
        "#SBATCH --signal=B:USR1@120",
        f"PYTHON={shlex.quote(sys.executable)}",
        "JOB=jobs/onemax.py",
        "CHECKPOINT=runs/r-%a.ckpt",
        'export EVOCLUSTER_CHECKPOINT="$CHECKPOINT"',
        """ARGS=(--ngen 50 'a b' '$HOME')""",
    ):
        assert f"\n{line}\n" in script, line
    assert script.startswith("#!/bin/bash\n")


def test_a_short_time_limit_gets_half_of_it_as_the_lead(at_root: Path) -> None:
    script = slurm.render(slurm.parse_submit([ONEMAX, "-n", "2", "-t", "00:01:30"]))
    assert "#SBATCH --signal=B:USR1@45\n" in script
    assert "CHECKPOINT" not in script  # no --checkpoint: nothing about one
    assert "ARGS=()\n" in script


#: (arguments after `submit`, a piece of the one-line message)
USAGE_ERRORS = [
    ([ONEMAX, "--time", "01:00:00"], "needs --ntasks"),
    ([ONEMAX, "--ntasks", "5"], "needs --time"),
    ([ONEMAX, "--ntasks", "0", "--time", "01:00:00"], "--ntasks 0"),
    ([ONEMAX, "--ntasks", "five", "--time", "01:00:00"], "invalid int value"),
    ([ONEMAX, "--ntasks", "5", "--time", "90"], "is not HH:MM:SS"),
    ([ONEMAX, "--ntasks", "5", "--time", "00:00:30"], "under a minute"),
    ([ONEMAX, "--ntasks", "5", "--time", "01:00:00", "--nodes", "6"], "--nodes 6 with --ntasks 5"),
    ([ONEMAX, "-n", "5", "-t", "01:00:00", "--backend", "local"], "invalid choice: 'local'"),
    ([ONEMAX, "-n", "5", "-t", "01:00:00", "--launcher", "mpirun"], "invalid choice: 'mpirun'"),
    (
        [ONEMAX, "-n", "5", "-t", "01:00:00", "--backend", "scoop", "--launcher", "srun"],
        "--launcher srun is for --backend mpi",
    ),
    ([ONEMAX, "-n", "5", "-t", "01:00:00", "--array", "1-x"], "--array '1-x'"),
    ([ONEMAX, "-n", "5", "-t", "01:00:00", "--partition", "a b"], "--partition 'a b'"),
    ([ONEMAX, "-n", "5", "-t", "01:00:00", "--account", "x;rm"], "--account 'x;rm'"),
    (
        [ONEMAX, "-n", "5", "-t", "01:00:00", "--array", "0-2", "--checkpoint", "r.ckpt"],
        "put %a in the path",
    ),
    ([ONEMAX, "-n", "5", "-t", "01:00:00", "--checkpoint", "r-%a.ckpt"], "needs --array"),
    ([ONEMAX, "-n", "5", "-t", "01:00:00", "--workers", "3"], "unknown option or argument '--w"),
    ([ONEMAX, "-n", "5", "-t", "01:00:00", "--check", "r.ckpt"], "unknown option or argument '--c"),
    ([ONEMAX, "-n", "5", "-t", "01:00:00", "--ngen", "3"], "give the job's own arguments after --"),
    ([ONEMAX, "extra", "-n", "5", "-t", "01:00:00"], "unknown option or argument 'extra'"),
    (["missing.py", "-n", "5", "-t", "01:00:00"], "job file 'missing.py' not found"),
    (["jobs", "-n", "5", "-t", "01:00:00"], "job file 'jobs' is a directory"),
    (["-n", "5", "-t", "01:00:00"], "required: JOB.py"),
]


@pytest.fixture
def fake_sbatch(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose ``sbatch`` records its arguments and script and answers job 4242."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "sbatch-got"
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(
        f'#!/bin/sh\necho "$*" > {shlex.quote(str(record))}.args\n'
        f"cat > {shlex.quote(str(record))}\necho '4242;cluster'\n"
    )
    sbatch.chmod(0o755)
    return clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"), record


@pytest.mark.parametrize(("args", "says"), USAGE_ERRORS)
def test_a_usage_error_is_one_line_exit_2_and_submits_nothing(
    fake_sbatch: tuple[dict[str, str], Path], args: list[str], says: str
) -> None:
    env, record = fake_sbatch
    r = run(submit_cmd(*args), cwd=ROOT, env=env, timeout=60)
    assert r.returncode == 2, output(r)
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("evocluster: submit: "), output(r)
    assert says in lines[0], output(r)
    assert not record.exists()  # sbatch never ran


def test_without_sbatch_submit_says_so_and_dry_run_still_works(tmp_path: Path) -> None:
    env = clean_env(PATH=str(tmp_path))  # no sbatch there
    r = run(submit_cmd(*BASE), cwd=ROOT, env=env, timeout=60)
    assert r.returncode == 2, output(r)
    assert r.stderr.count("\n") == 1 and "sbatch is not on PATH" in r.stderr, output(r)
    dry = run(submit_cmd(*BASE, "--dry-run"), cwd=ROOT, env=env, timeout=60)
    assert dry.returncode == 0 and dry.stdout.startswith("#!/bin/bash"), output(dry)


def test_submit_hands_the_dry_run_script_to_sbatch_and_prints_the_job_id(
    fake_sbatch: tuple[dict[str, str], Path],
) -> None:
    env, record = fake_sbatch
    r = run(submit_cmd(*BASE, "--", "--ngen", "3"), cwd=ROOT, env=env, timeout=60)
    assert r.returncode == 0, output(r)
    assert r.stdout == "4242\n"
    assert "submitted job 4242" in r.stderr and "status 4242" in r.stderr
    dry = run(submit_cmd(*BASE, "--dry-run", "--", "--ngen", "3"), cwd=ROOT, env=env, timeout=60)
    assert record.read_text() == dry.stdout  # the script went to sbatch's standard input
    assert record.with_suffix(".args").read_text().split() == ["--parsable"]


def test_an_sbatch_refusal_is_one_line_exit_1(tmp_path: Path) -> None:
    sbatch = tmp_path / "sbatch"
    sbatch.write_text(
        "#!/bin/sh\necho 'sbatch: error: Invalid partition name specified' >&2\nexit 1\n"
    )
    sbatch.chmod(0o755)
    env = clean_env(PATH=f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    r = run(submit_cmd(*BASE, "--partition", "nope"), cwd=ROOT, env=env, timeout=60)
    assert r.returncode == 1, output(r)
    assert r.stderr.splitlines() == [
        "evocluster: submit: sbatch refused the job: sbatch: error: Invalid partition name "
        "specified"
    ]


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["12x"], 2, "'12x' is not a job id"),
        ([], 2, "give one job id"),
        (["1", "2"], 2, "give one job id"),
    ],
)
def test_status_usage_errors(args: list[str], code: int, says: str) -> None:
    r = run([sys.executable, "-m", "evocluster", "status", *args], timeout=60)
    assert r.returncode == code, output(r)
    assert len(r.stderr.splitlines()) == 1 and says in r.stderr, output(r)


def test_status_without_scontrol(tmp_path: Path) -> None:
    env = clean_env(PATH=str(tmp_path))
    r = run([sys.executable, "-m", "evocluster", "status", "12"], env=env, timeout=60)
    assert r.returncode == 2 and "scontrol is not on PATH" in r.stderr, output(r)


@pytest.mark.parametrize(
    "teardown",
    [
        "srun: error: localhost: task 0: Exited with exit code 3\n"
        "srun: launch/slurm: _step_signal: Terminating StepId=12.0\n",
        "slurmstepd: error: *** STEP 12.0 ON n1 CANCELLED AT 2026-12-07T06:00:00 ***\n"
        "slurmstepd-n1: error: *** JOB 12 ON n1 CANCELLED AT 2026-12-07T06:00:00 ***\n",
        "[mpiexec@n1] HYDU_sock_write (lib/utils/sock.c:250): write error (Bad file descriptor)\n"
        + "=" * 83
        + "\n=   BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES\n"
        + "=   RANK 0 PID 4242 RUNNING AT n1\n=   KILLED BY SIGNAL: 9 (Killed)\n"
        + "=" * 83
        + "\n",
        "[2026-12-07 06:00:00,000] launcher  INFO    Finished cleaning spawned subprocesses.\n",
    ],
)
def test_the_last_line_is_the_jobs_not_the_launchers(teardown: str, tmp_path: Path) -> None:
    from evocluster import _slurm_status as status

    out = tmp_path / "job.out"
    out.write_text(
        "evocluster batch: job 12, run 1, 2 task(s) on n1\n"
        "gen 10 ...\n= the job's own line, with equals signs =\n"
        f"{teardown}evocluster batch: the run ended with exit code 3\n"
    )
    assert status._last_line(str(out)) == "= the job's own line, with equals signs ="


def test_run_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    assert evocluster.run_seed(42) == 42
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    assert evocluster.run_seed(42) == 42
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "17")
    assert evocluster.run_seed(42) == 59
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "x")
    with pytest.raises(ConfigurationError, match="SLURM_ARRAY_TASK_ID"):
        evocluster.run_seed(42)
    with pytest.raises(TypeError):
        evocluster.run_seed("42")  # type: ignore[arg-type]


def test_import_evocluster_does_not_load_the_slurm_module() -> None:
    code = (
        "import sys, evocluster; assert 'evocluster._slurm' not in sys.modules; "
        "evocluster.run_seed(1); assert 'evocluster._slurm' in sys.modules; "
        "assert 'mpi4py' not in sys.modules; print('ok')"
    )
    r = run([sys.executable, "-c", code], timeout=60)
    assert r.returncode == 0 and r.stdout == "ok\n", output(r)


def test_a_job_file_named_like_a_subcommand_needs_a_path(tmp_path: Path) -> None:
    # `submit`/`status` are subcommands; a job file of that name is run as ./submit
    job = tmp_path / "status"
    job.write_text("print('ran')\n")
    r = run(
        [sys.executable, "-m", "evocluster", "--backend", "serial", "./status"],
        cwd=tmp_path,
        timeout=60,
    )
    assert r.returncode == 0 and "ran" in r.stdout, output(r)


def test_parse_submit_raises_configuration_error(at_root: Path) -> None:
    with pytest.raises(ConfigurationError, match="needs --ntasks"):
        slurm.parse_submit([ONEMAX, "--time", "01:00:00"])
