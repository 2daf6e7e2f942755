# The pieces of the batch script that `python -m evocluster submit` writes (render() in
# evocluster/_slurm.py): not a script to run.  Each piece starts after a line `#>>> NAME` and ends
# before the next one; render() joins the pieces a request needs and fills in its @VALUES@
# (shell-quoted).  A piece used inside a line (CHECKPOINTED_*) loses its last newline.  The
# templates in the repository's slurm/ folder are renderings: change this file, then write them
# again (tests/test_slurm_submit.py says how).
#>>> HEADER
#!/bin/bash
# @TITLE@
#
# Written by `python -m evocluster submit`; also a template: edit the lines marked EDIT and run
# `sbatch THIS_FILE`.  What happens at the wall-time limit:
#   1. SLURM sends SIGUSR1 to this batch shell @LEAD@ s before the limit (--signal below).  It
#      checks its timers about every 30 s, so the warning may come up to a minute earlier.  Send
#      it yourself with `scancel --signal=USR1 --batch JOBID`.
#   2. @WHO@
#   3. The job (evocluster.Checkpoint in its loop, as in jobs/onemax.py) saves its state at the
#      end of the generation and exits with code 75 (EX_TEMPFAIL, "run me again").
#   4. On exit code 75 this script requeues the job (scontrol requeue).  SLURM starts it again
#      (by default 2 minutes later, or when `scontrol update jobid=JOBID StartTime=now`), the job
#      finds its checkpoint and resumes.  Every run appends to the same output file.
# Any other exit code ends the job with it, without a requeue: a crash would only repeat.  Submit
# the job again to resume from its last checkpoint.
#
# EDIT: the resources.  Relative paths are relative to the directory sbatch was run in.
@SBATCH@
# Every run of the job appends to the output file of the runs before it
#SBATCH --open-mode=append
# The job may run again: requeued by this script after a checkpoint, or by SLURM after a node
# failure or a preemption
#SBATCH --requeue
# The warning: SIGUSR1 to this batch shell only (B:), @LEAD@ s before the wall-time limit.
# EDIT: a lead of at least one generation's time plus a minute.
#SBATCH --signal=B:USR1@@LEAD@

# EDIT: the Python that has evocluster (and mpi4py, for MPI) installed; or load your environment
# here (module load ..., source ~/venv/bin/activate) and set PYTHON=python3
PYTHON=@PYTHON@
# EDIT: the job
JOB=@JOB@
#>>> CHECKPOINT
# EDIT: the run's checkpoint file: every evocluster engine loop of the job, and
# evocluster.Checkpoint() without a path, save there and resume from it
CHECKPOINT=@CHECKPOINT@
export EVOCLUSTER_CHECKPOINT="$CHECKPOINT"
#>>> ARRAY_CHECKPOINT
# EDIT: the run's checkpoint file: every evocluster engine loop of the job, and
# evocluster.Checkpoint() without a path, save there and resume from it.  %a is the task's
# index in the array, so that each task has a file of its own
CHECKPOINT=@CHECKPOINT@
CHECKPOINT=${CHECKPOINT//"%a"/$SLURM_ARRAY_TASK_ID}
export EVOCLUSTER_CHECKPOINT="$CHECKPOINT"
#>>> LOG
# EDIT: the run log (docs/observability.md), which `python -m evocluster status JOBID` reads
# beside the output file; every run of the job appends to it.  %j is the job's id, %A and %a the
# array's and the task's, as in --output.  Without these lines, no run log
LOG=@LOG@
LOG=${LOG//"%j"/$SLURM_JOB_ID}
LOG=${LOG//"%A"/$SLURM_ARRAY_JOB_ID}
LOG=${LOG//"%a"/$SLURM_ARRAY_TASK_ID}
export EVOCLUSTER_LOG="$LOG"
#>>> ARRAY_SEED
# Each task of the array runs the same command; in the job, evocluster.run_seed(BASE) is
# BASE + SLURM_ARRAY_TASK_ID: a seed of its own for each task.
#>>> ARGS
# EDIT: the job's own arguments
ARGS=(@ARGS@)
#>>> START

echo "evocluster batch: job $SLURM_JOB_ID${SLURM_ARRAY_TASK_ID:+ (task $SLURM_ARRAY_TASK_ID)}," \
    "run $((${SLURM_RESTART_COUNT:-0} + 1)), $SLURM_NTASKS task(s) on $SLURM_JOB_NODELIST"
#>>> RESUME
if [ -e "$CHECKPOINT" ]; then
    echo "evocluster batch: $CHECKPOINT exists: the job resumes from it"
fi
#>>> TRAP

# Step 2.  The run goes to the background and this shell waits for it: bash runs a trap only
# between commands, and a trapped signal cuts a `wait` short, where a command in the foreground
# would hold the trap back until it ended.
@WARNED@warn() {
@FORWARD@}
trap warn USR1
#>>> FORWARD_MPI
    echo "evocluster batch: SIGUSR1: asking the run to checkpoint and stop"
    kill -USR1 "$run" 2>/dev/null
#>>> FORWARD_SCOOP
    warned=1
    echo "evocluster batch: SIGUSR1: asking the run to checkpoint and stop"
    local pid
    pid=$(origin "$run") && kill -USR1 "$pid" 2>/dev/null
#>>> ORIGIN

# SCOOP's origin, the process that runs the job: the launcher's descendant that runs
# scoop.bootstrap with --origin.  Only it gets the warning.
origin() {
    local child
    for child in $(pgrep -P "$1"); do
        if tr '\0' '\n' < "/proc/$child/cmdline" 2>/dev/null | grep -qx -- --origin \
            && tr '\0' ' ' < "/proc/$child/cmdline" 2>/dev/null | grep -q scoop.bootstrap; then
            echo "$child"
            return 0
        fi
        origin "$child" && return 0
    done
    return 1
}
#>>> IGNORE_USR1

# Every rank starts with SIGUSR1 ignored (an ignored signal stays ignored across exec): the job's
# handler on the master (evocluster.Checkpoint) takes it over, so the warning that the launcher
# passes on to every rank stops the master only.  A job that does not checkpoint runs on.
# shellcheck disable=SC2016  # expanded by each rank's bash
ignore_usr1='trap "" USR1; exec "$@"'
#>>> RUN_SRUN

# srun passes the warning on to every task of the step.  --mpi=pmi2: how PyPI's MPICH finds its
# ranks (with MpiDefault=none, srun would start N separate one-rank runs).  --kill-on-bad-exit:
# when a rank dies (the master killed, say), srun ends the others at once; they would otherwise
# wait for the master until the time limit.
srun --mpi=pmi2 --kill-on-bad-exit=1 bash -c "$ignore_usr1" evocluster \
    "$PYTHON" -m evocluster --backend mpi "$JOB" "${ARGS[@]}" &
#>>> RUN_MPIEXEC

# mpiexec (MPICH's hydra) takes the allocation's hosts from SLURM, starts its proxies through
# srun, and passes the warning on to every rank.  When a rank dies (the master killed, say), it
# ends the others.
mpiexec -n "$SLURM_NTASKS" bash -c "$ignore_usr1" evocluster \
    "$PYTHON" -m evocluster --backend mpi "$JOB" "${ARGS[@]}" &
#>>> RUN_SCOOP

# SCOOP reads the hosts and their task counts from the allocation (SLURM_NODELIST and
# SLURM_TASKS_PER_NODE) and starts its processes itself, over ssh on other nodes: a job on
# several nodes needs passwordless ssh between them.  The origin runs the job, the others evaluate.
# They start with SIGUSR1 ignored (it stays ignored across fork and exec): the job's handler on the
# origin (evocluster.Checkpoint) takes it over; a job that does not checkpoint runs on.
(trap "" USR1; exec "$PYTHON" -m scoop -n "$SLURM_NTASKS" "$JOB" "${ARGS[@]}") &
#>>> WAIT
run=$!
code=0
wait "$run" || code=$?
while kill -0 "$run" 2>/dev/null; do  # that wait was cut short by the trap: the run goes on
    code=0
    wait "$run" || code=$?
done

# Step 4.
@CHECKPOINTED@; then
    echo "evocluster batch: the run checkpointed (exit code 75): requeueing job $SLURM_JOB_ID"
    if scontrol requeue "$SLURM_JOB_ID"; then
        exit 0
    fi
    echo "evocluster batch: the requeue failed: submit the job again to resume from its checkpoint"
fi
echo "evocluster batch: the run ended with exit code $code"
exit "$code"
#>>> CHECKPOINTED_MPI
if [ "$code" = 75 ]
#>>> CHECKPOINTED_SCOOP
# SCOOP's launcher exits 0 whatever the job does, and can never exit 75: evocluster's exit guard
# ends it with SIGUSR2 when the job exits 75, so 140 (128 + SIGUSR2) means 75; with SIGTERM (143)
# when the job fails.
if [ "$code" = 75 ] || [ "$code" = 140 ]
