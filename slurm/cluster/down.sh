#!/usr/bin/env bash
# Stop the cluster slurm/cluster/up.sh started: its jobs, then the daemons whose PIDs it recorded
# under $EVOSLURM_ROOT/run (never a process found by its name), then remove $EVOSLURM_ROOT
# (EVOSLURM_KEEP=1 keeps it, logs included, for a post-mortem).  Safe to run twice, or after a
# failed up.sh.
#
#     sudo bash slurm/cluster/down.sh
set -uo pipefail

ROOT=${EVOSLURM_ROOT:-/tmp/evocluster-slurm}
CONF=$ROOT/etc/slurm.conf
export SLURM_CONF=$CONF
PATH=$PATH:/usr/sbin:/sbin
T0=$(date +%s%N)

say() { printf '[down %6.2fs] %s\n' "$(( ($(date +%s%N) - T0) / 1000000 ))e-3" "$*"; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

[ -d "$ROOT/run" ] || { say "no cluster at $ROOT"; exit 0; }

# 1. Cancel every job while the controller and slurmd still run: each job's slurmstepd then
#    signals and reaps the job's processes itself, so nothing is orphaned.
if alive "$(cat "$ROOT/run/slurmctld.pid" 2>/dev/null)" && [ -e "$CONF" ]; then
    jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
        say "cancelling jobs $jobs"
        # shellcheck disable=SC2086  # one word per job id
        scancel $jobs 2>/dev/null
        for _ in $(seq 150); do  # KillWait (10 s) and a little more
            [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break
            sleep 0.1
        done
    fi
fi

# 2. A slurmstepd outlives its slurmd when a step is stuck (it re-parents to PID 1): one of this
#    cluster's is recognised by its PID's program and its working directory, which is in this
#    cluster's spool (slurmstepd chdirs there).  Its job's processes die with it (linuxproc).
for proc in /proc/[0-9]*; do
    case "$(readlink "$proc/exe" 2>/dev/null)" in
        */slurmstepd*) ;;
        *) continue ;;
    esac
    case "$(readlink "$proc/cwd" 2>/dev/null)" in
        "$ROOT"/*)
            pid=${proc#/proc/}
            say "stray slurmstepd pid $pid"
            kill -KILL "$pid" 2>/dev/null
            ;;
    esac
done

# 3. The daemons: SIGTERM to all at once (each took ~2 s to go: benchmarks/RESULTS.md F22,
#    2026-12-02), SIGKILL to what is left after 15 s.  munged last in spirit but in the same
#    round: nothing needs it any more.
pids=()
for pidfile in "$ROOT"/run/*.pid; do
    [ -e "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null && pids+=("$pid") && say "SIGTERM $(basename "$pidfile" .pid) pid $pid"
    fi
done
for _ in $(seq 150); do
    left=()
    for pid in "${pids[@]}"; do alive "$pid" && left+=("$pid"); done
    [ "${#left[@]}" = 0 ] && break
    sleep 0.1
done
for pid in "${left[@]}"; do
    say "pid $pid ignored SIGTERM for 15 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null
done

if [ "${EVOSLURM_KEEP:-0}" = 1 ]; then
    rm -f "$ROOT"/run/*.pid
    say "stopped; kept $ROOT (logs in $ROOT/log)"
else
    rm -rf "$ROOT"
    say "stopped; removed $ROOT"
fi
