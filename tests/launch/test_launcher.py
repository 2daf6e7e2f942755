"""The launcher end to end, through real processes: ``python -m evocluster`` (a local pool) and
``mpiexec -n 3 python -m evocluster`` (MPI).  Every run has a timeout: a hang fails the test.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import textwrap

import pytest
from helpers import (
    FIXTURES,
    clean_env,
    launcher,
    mpi_command,
    mpi_launcher,
    openmpi_launcher,
    output,
    run,
)

#: Job arguments that look like options, the launcher's included: they must reach the job as is.
JOB_ARGS = ["--seed", "3", "-x", "--backend", "serial", "--workers", "9", "-m", "foo", "--", "z"]

OK_JOB = """
    import evocluster

    def square(x):
        return x * x

    if __name__ == "__main__":
        ex = evocluster.get_executor()
        print("RESULT", evocluster.map(square, range(10)), ex.backend, ex.n_workers)
"""
SQUARES = str([x * x for x in range(10)])

ARGV_JOB = """
    import json
    import sys

    import evocluster

    def square(x):
        return x * x

    if __name__ == "__main__":
        print("ARGV=" + json.dumps(sys.argv[1:]))
        ex = evocluster.get_executor()
        print("RESULT", evocluster.map(square, range(10)), ex.backend, ex.n_workers)
"""

SIBLING_JOB = """
    import evocluster
    from helper import square

    if __name__ == "__main__":
        ex = evocluster.get_executor()
        print("RESULT", evocluster.map(square, range(10)), ex.backend, ex.n_workers)
"""

EXIT_JOB = """
    import sys

    import evocluster

    if __name__ == "__main__":
        evocluster.map(abs, [-1, -2])
        sys.exit({code!r})
"""

RAISING_JOB = """
    import evocluster

    if __name__ == "__main__":
        evocluster.map(abs, [-1, -2])
        raise RuntimeError("the job failed on purpose")
"""

FITNESS_JOB = """
    import evocluster

    def fitness(x):
        if x == 3:
            raise ValueError(f"bad individual {x}")
        return x

    if __name__ == "__main__":
        try:
            evocluster.map(fitness, range(8))
        except ValueError as e:
            print("CAUGHT", repr(e))
            print("CAUSE TYPE", type(e.__cause__).__name__)
            print("CAUSE BEGIN")
            print(e.__cause__)
            print("CAUSE END")
        else:
            print("NOT RAISED")
        print("AFTER", evocluster.map(abs, [-1, -2, -3]))  # the pool still works
"""

UNCAUGHT_FITNESS_JOB = """
    import evocluster

    def fitness(x):
        if x == 3:
            raise ValueError(f"bad individual {x}")
        return x

    if __name__ == "__main__":
        evocluster.map(fitness, range(8))
"""

NO_GUARD_JOB = """
    import evocluster

    def square(x):
        return x * x

    print("RESULT", evocluster.map(square, range(10)))
"""


def write(directory, name, source):
    path = directory / name
    path.write_text(textwrap.dedent(source))
    return path


@pytest.fixture(
    params=[
        "local",
        pytest.param("mpi", marks=pytest.mark.mpi),
        pytest.param("openmpi", marks=pytest.mark.mpi),
    ]
)
def launch(request):
    """``launch(*args)``: the command line of the launcher for a local pool of 2 workers or for
    ``mpiexec -n 3`` (rank 0 runs the job, 2 workers), with the MPICH wheel or with the system's
    Open MPI.  ``launch.mode`` is the backend's name.  (The ``mpi`` marker of the MPI ones:
    conftest.py's rule, from the fixture's parameter.)"""
    if request.param == "mpi":
        mpi_launcher(3)  # skips (or fails under CI) when there is no mpiexec

        def cmd(*args):
            return mpi_launcher(3, *args)

    elif request.param == "openmpi":
        openmpi_launcher(3)  # skips (or fails under CI) when there is no such environment

        def cmd(*args):
            return openmpi_launcher(3, *args)

    else:

        def cmd(*args):
            return launcher("--workers", "2", *args)

    cmd.mode = "mpi" if request.param == "openmpi" else request.param
    return cmd


def stderr_says(r, *words):
    """Whether one ``evocluster:`` line of stderr contains every word."""
    lines = [line for line in r.stderr.splitlines() if line.startswith("evocluster:")]
    return any(all(w in line for w in words) for line in lines)


# ---------------------------------------------------------------------------- running a job
def test_success(tmp_path, launch):
    write(tmp_path, "ok.py", OK_JOB)
    r = run(launch("ok.py"), cwd=tmp_path)  # a relative path: workers must find it too
    assert r.returncode == 0, output(r)
    assert r.stdout.splitlines() == [f"RESULT {SQUARES} {launch.mode} 2"], output(r)


def test_default_backend_is_a_local_pool_of_cpu_count_workers(tmp_path):
    job = write(tmp_path, "ok.py", OK_JOB)
    r = run(launcher(str(job)), cwd=tmp_path)
    assert r.returncode == 0, output(r)
    assert r.stdout.splitlines() == [f"RESULT {SQUARES} local {os.cpu_count()}"], output(r)


def test_job_args_reach_sys_argv_unchanged(tmp_path, launch):
    job = write(tmp_path, "argv.py", ARGV_JOB)
    r = run(launch(str(job), *JOB_ARGS), cwd=tmp_path)
    assert r.returncode == 0, output(r)
    assert r.stdout.splitlines() == [
        "ARGV=" + json.dumps(JOB_ARGS),
        f"RESULT {SQUARES} {launch.mode} 2",  # launcher options after the job did not apply
    ], output(r)


def test_launcher_options_before_the_job_are_the_launchers(tmp_path):
    job = write(tmp_path, "argv.py", ARGV_JOB)
    r = run(launcher("--backend=serial", "--", str(job), "--backend", "local"), cwd=tmp_path)
    assert r.returncode == 0, output(r)
    assert r.stdout.splitlines() == [
        "ARGV=" + json.dumps(["--backend", "local"]),
        f"RESULT {SQUARES} serial 1",
    ], output(r)


def test_module_job(tmp_path, launch):
    package = tmp_path / "evopkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    write(package, "job.py", ARGV_JOB)
    r = run(launch("-m", "evopkg.job", "--seed", "3", "-x"), cwd=tmp_path)
    assert r.returncode == 0, output(r)
    assert r.stdout.splitlines() == [
        "ARGV=" + json.dumps(["--seed", "3", "-x"]),
        f"RESULT {SQUARES} {launch.mode} 2",
    ], output(r)


def test_job_imports_a_module_next_to_it(tmp_path, launch):
    # the fitness lives in a module beside the job; the run starts from another directory
    (tmp_path / "jobdir").mkdir()
    (tmp_path / "elsewhere").mkdir()
    write(tmp_path / "jobdir", "helper.py", "def square(x):\n    return x * x\n")
    write(tmp_path / "jobdir", "job.py", SIBLING_JOB)
    r = run(launch("../jobdir/job.py"), cwd=tmp_path / "elsewhere")
    assert r.returncode == 0, output(r)
    assert r.stdout.splitlines() == [f"RESULT {SQUARES} {launch.mode} 2"], output(r)


def test_module_job_that_is_a_package_with_main(tmp_path, launch):
    package = tmp_path / "evopkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    write(package, "__main__.py", OK_JOB)
    r = run(launch("-m", "evopkg"), cwd=tmp_path)
    assert r.returncode == 0, output(r)
    assert r.stdout.splitlines() == [f"RESULT {SQUARES} {launch.mode} 2"], output(r)


def test_plain_python_without_launcher_uses_a_local_pool(tmp_path):
    job = write(tmp_path, "ok.py", OK_JOB)
    r = run([sys.executable, str(job)], cwd=tmp_path)
    assert r.returncode == 0, output(r)
    assert r.stdout.splitlines() == [f"RESULT {SQUARES} local {os.cpu_count()}"], output(r)


# ---------------------------------------------------------------------------- exit codes
@pytest.mark.parametrize("code", [3, "goodbye from the job"])
def test_sys_exit_gives_the_runs_exit_code(tmp_path, launch, code):
    job = write(tmp_path, "exits.py", EXIT_JOB.format(code=code))
    r = run(launch(str(job)), cwd=tmp_path)
    if isinstance(code, int):
        assert r.returncode == code, output(r)
    else:  # like the interpreter: the message on stderr, exit code 1
        assert r.returncode == 1, output(r)
        assert code in r.stderr, output(r)


def test_job_that_raises_ends_with_exit_code_1(tmp_path, launch):
    job = write(tmp_path, "raises.py", RAISING_JOB)
    r = run(launch(str(job)), cwd=tmp_path)
    if launch.mode == "mpi":
        assert r.returncode != 0, output(r)  # MPI_Abort(1): mpiexec passes the code on
    else:
        assert r.returncode == 1, output(r)
    assert "RuntimeError: the job failed on purpose" in r.stderr, output(r)
    assert f'File "{job}", line 6' in r.stderr, output(r)
    assert stderr_says(r, "raises.py", "RuntimeError"), output(r)


def test_missing_job_file_is_a_usage_error(tmp_path, launch):
    r = run(launch("no_such_job.py"), cwd=tmp_path)
    assert r.returncode == 2, output(r)
    assert stderr_says(r, "no_such_job.py", "not found"), output(r)


def test_syntax_error_is_a_usage_error(tmp_path, launch):
    job = write(tmp_path, "broken.py", "x = 1\ndef f(:\n    pass\n")
    r = run(launch(str(job)), cwd=tmp_path)
    assert r.returncode == 2, output(r)
    assert stderr_says(r, str(job), "line 2"), output(r)
    assert "def f(:" in r.stderr


def test_unknown_backend_is_a_usage_error(tmp_path, launch):
    job = write(tmp_path, "ok.py", OK_JOB)
    r = run(launch("--backend", "bogus", str(job)), cwd=tmp_path)
    assert r.returncode == 2, output(r)
    assert "bogus" in r.stderr
    assert "RESULT" not in r.stdout


def test_unknown_backend_from_the_environment_is_a_usage_error(tmp_path, launch):
    job = write(tmp_path, "ok.py", OK_JOB)
    r = run(launch(str(job)), cwd=tmp_path, env=clean_env(EVOCLUSTER_BACKEND="bogus"))
    assert r.returncode == 2, output(r)
    assert stderr_says(r, "bogus"), output(r)
    assert "RESULT" not in r.stdout


def test_no_job_is_a_usage_error(tmp_path, launch):
    r = run(launch(), cwd=tmp_path)
    assert r.returncode == 2, output(r)
    assert stderr_says(r, "job file"), output(r)


def test_missing_job_module_is_a_usage_error(tmp_path, launch):
    r = run(launch("-m", "no_such_pkg.job"), cwd=tmp_path)
    assert r.returncode == 2, output(r)
    assert stderr_says(r, "no_such_pkg.job"), output(r)


# ---------------------------------------------------------------------------- fitness errors
def cause_text(stdout):
    return stdout.split("CAUSE BEGIN\n", 1)[-1].split("CAUSE END", 1)[0]


def test_fitness_exception_is_reraised_with_worker_traceback(tmp_path, launch):
    job = write(tmp_path, "fitness.py", FITNESS_JOB)
    r = run(launch(str(job)), cwd=tmp_path)
    assert r.returncode == 0, output(r)
    assert "CAUGHT ValueError('bad individual 3')" in r.stdout, output(r)
    assert "CAUSE TYPE RemoteTraceback" in r.stdout, output(r)
    cause = cause_text(r.stdout)
    assert "worker" in cause and "ValueError: bad individual 3" in cause, output(r)
    assert f'File "{job}", line 6, in fitness' in cause, output(r)  # the worker's frames
    if launch.mode == "mpi":
        assert "rank" in cause
    assert "AFTER [1, 2, 3]" in r.stdout, output(r)


def short_host():
    return socket.gethostname().split(".")[0]


@pytest.mark.parametrize(
    "mode",
    [
        "local",
        pytest.param("mpi", marks=pytest.mark.mpi),
    ],
)
def test_worker_traceback_names_the_host(tmp_path, mode):
    job = write(tmp_path, "fitness.py", FITNESS_JOB)
    cmd = mpi_launcher(3, str(job)) if mode == "mpi" else launcher("--workers", "2", str(job))
    r = run(cmd, cwd=tmp_path)
    assert r.returncode == 0, output(r)
    assert f"host {short_host()}" in cause_text(r.stdout), output(r)


def test_uncaught_fitness_exception_ends_the_run(tmp_path, launch):
    job = write(tmp_path, "fitness.py", UNCAUGHT_FITNESS_JOB)
    r = run(launch(str(job)), cwd=tmp_path)
    if launch.mode == "mpi":
        assert r.returncode != 0, output(r)
    else:
        assert r.returncode == 1, output(r)
    # the master's traceback, caused by the worker's
    assert "ValueError: bad individual 3" in r.stderr, output(r)
    assert "direct cause of the following exception" in r.stderr, output(r)
    assert f'File "{job}", line 6, in fitness' in r.stderr, output(r)
    assert stderr_says(r, "fitness.py", "ValueError"), output(r)


# ---------------------------------------------------------------------------- MPI specifics
@pytest.mark.mpi
@pytest.mark.parametrize("mpi", ["mpich-wheel", "openmpi"])
def test_mpi_single_rank_warns_and_evaluates_serially(tmp_path, mpi):
    job = write(tmp_path, "ok.py", OK_JOB)
    r = run(mpi_command(mpi, 1, str(job)), cwd=tmp_path)
    assert r.returncode == 0, output(r)
    assert r.stdout.splitlines() == [f"RESULT {SQUARES} serial 1"], output(r)
    warnings = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1, output(r)
    assert stderr_says(r, "1 rank", "serial"), output(r)


@pytest.mark.mpi
@pytest.mark.parametrize("mpi", ["mpich-wheel", "openmpi"])
def test_mpi_worker_ranks_do_not_load_the_masters_modules(mpi):
    # each of these costs every rank milliseconds at start-up, and 17 ranks share 2 cores
    r = run(mpi_command(mpi, 3, str(FIXTURES / "jobs" / "worker_modules.py")))
    assert r.returncode == 0, output(r)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["backend"] == "mpi" and out["workers"] == [[]] * 8, out


def test_job_without_main_guard_fails_with_a_clear_message(tmp_path, launch):
    # What it does: the master runs the module-level map; each worker imports the job, runs the
    # same map at module level, refuses to start a pool there and reports it; the master's map
    # raises BrokenPool quoting the worker's JobError, which names `if __name__ == '__main__':`.
    job = write(tmp_path, "noguard.py", NO_GUARD_JOB)
    r = run(launch(str(job)), cwd=tmp_path)
    assert r.returncode != 0, output(r)
    if launch.mode == "local":
        assert r.returncode == 1, output(r)
    assert "RESULT" not in r.stdout, output(r)
    assert "could not import the job" in r.stderr, output(r)
    assert "__main__" in r.stderr and "JobError" in r.stderr, output(r)
    assert stderr_says(r, "noguard.py", "BrokenPool"), output(r)


@pytest.mark.mpi
@pytest.mark.parametrize("backend", ["local", "serial"])
def test_mpi_world_with_a_non_mpi_backend_is_a_usage_error(tmp_path, backend):
    # README: refused with exit code 2 and a message, since it would run the whole job N times
    job = write(tmp_path, "ok.py", OK_JOB)
    r = run(mpi_launcher(2, "--backend", backend, str(job)), cwd=tmp_path)
    assert r.returncode == 2, output(r)
    assert "RESULT" not in r.stdout, output(r)  # the job never ran, not even once
    says = stderr_says(r, f"--backend {backend}", "whole job", "2 ranks", "--backend mpi")
    assert says, output(r)


# ---------------------------------------------------------------------------- importing
CHECK_IMPORT = "import sys, evocluster; print('mpi4py' in sys.modules)"


@pytest.mark.parametrize("env", [{}, {"PMI_SIZE": "4", "PMI_RANK": "0"}], ids=["plain", "mpi-env"])
def test_import_does_not_import_mpi4py(env):
    r = run([sys.executable, "-c", CHECK_IMPORT], env=clean_env(**env))
    assert r.returncode == 0, output(r)
    assert r.stdout.strip() == "False", output(r)


def test_import_check_can_see_mpi4py():
    # the check above would notice: importing mpi4py does put it in sys.modules
    r = run([sys.executable, "-c", "import mpi4py; " + CHECK_IMPORT])
    assert r.returncode == 0, output(r)
    assert r.stdout.strip() == "True", output(r)
