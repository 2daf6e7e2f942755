#!/usr/bin/env bash
# Bring up a throw-away SLURM cluster on this machine: one controller (slurmctld), one slurmd per
# node, and a munged of its own, all started here and recorded by PID under $EVOSLURM_ROOT/run.
# For evocluster's tests (tests/slurm/test_slurm.py) and for trying `python -m evocluster submit` on a
# laptop.  `down.sh` stops exactly what this started.
#
#     sudo bash slurm/cluster/up.sh               # Debian/Ubuntu, as root (the daemons run as root)
#     export SLURM_CONF=/tmp/evocluster-slurm/etc/slurm.conf      # or: . /tmp/evocluster-slurm/env
#     sbatch ... / python -m evocluster submit ...
#     sudo bash slurm/cluster/down.sh
#
# Needs SLURM's and munge's Debian packages (`sudo bash .ci/slurm` installs them); it installs
# nothing itself and exits 3 when they are missing.  Nothing outside $EVOSLURM_ROOT is written:
# the configuration is not /etc/slurm/slurm.conf (so SLURM_CONF must point at it), and munged has
# its own key and socket (a munged already running on the machine is left alone).
#
# Settings (environment):
#   EVOSLURM_ROOT   configuration, state, logs, PIDs       (default /tmp/evocluster-slurm; wiped)
#   EVOSLURM_CPUS   CPUs each node advertises              (default 16, more than the cores: see
#                   SlurmdParameters below; 16 MPI ranks on 2 cores run, slowly)
#   EVOSLURM_NODES  the nodes, "name=address ..."          (default "localhost=127.0.0.1")
#   EVOSLURM_NODE_EXEC  a command prefix that runs a program "on" node {name}, for emulated hosts,
#                   e.g. "ip netns exec {name}"            (default: none, every node is this host)
#   EVOSLURM_CONTROLLER  where slurmctld listens, "name=address" (default: the first node's; a
#                   name that is not a node is no node: "localhost=10.0.0.1" for a controller
#                   outside the nodes, as tests/multihost/slurm_nodes.py runs it)
#   EVOSLURM_CLUSTER    the ClusterName                    (default evocluster)
#   EVOSLURM_FIRST_JOB_ID  the first job id                (default: from the clock, see FirstJobId)
#
# Pitfalls this script avoids (observed on Debian 12, SLURM 22.05, 2026-12-02):
#   * The node is named `localhost`, not $(hostname): slurmd is told its name (-N), and SCOOP
#     starts workers on a host named `localhost` locally instead of through ssh.
#   * MpiDefault=pmi2: PyPI's MPICH wires its ranks through PMI-2; with `none`, `srun -n 5 python`
#     silently starts 5 independent singletons.
#   * CPUs above the real core count need SlurmdParameters=config_overrides, or the node drains
#     ("Low socket*core*thread count").
#
# Several nodes: every node in EVOSLURM_NODES gets a NodeName line and a slurmd of its own
# (started through EVOSLURM_NODE_EXEC, with its own PID, spool and log file); the controller runs
# on the first node's address unless EVOSLURM_CONTROLLER says otherwise.  Several emulated hosts
# are tested by tests/multihost/test_slurm_multinode.py.
set -euo pipefail

ROOT=${EVOSLURM_ROOT:-/tmp/evocluster-slurm}
CPUS=${EVOSLURM_CPUS:-16}
NODES=${EVOSLURM_NODES:-localhost=127.0.0.1}
NODE_EXEC=${EVOSLURM_NODE_EXEC:-}
CONF=$ROOT/etc/slurm.conf
T0=$(date +%s%N)

say() { printf '[up %6.2fs] %s\n' "$(( ($(date +%s%N) - T0) / 1000000 ))e-3" "$*"; }
die() { say "error: $*" >&2; exit "${2:-1}"; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
# wait_for SECONDS COMMAND...: poll COMMAND every 0.1 s until it succeeds; fail after SECONDS
wait_for() {
    local tries=$(( $1 * 10 )); shift
    for _ in $(seq "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    return 1
}
# on_node NAME COMMAND...: run COMMAND on node NAME (here, or through EVOSLURM_NODE_EXEC)
on_node() {
    local name=$1; shift
    if [ -n "$NODE_EXEC" ]; then ${NODE_EXEC//\{name\}/$name} "$@"; else "$@"; fi
}

[ "$(id -u)" = 0 ] || die "run as root: slurmd starts jobs as their user, and munged as munge" 2
for program in slurmctld slurmd sbatch scontrol munged; do
    command -v "$program" >/dev/null || PATH=$PATH:/usr/sbin:/sbin
    command -v "$program" >/dev/null \
        || die "$program is not installed: run \`sudo bash .ci/slurm\` (Debian: slurmctld slurmd slurm-client munge)" 3
done
getent passwd munge >/dev/null || die "no user munge: reinstall the munge package" 3

# A cluster of ours already running: refuse (down.sh stops it).  Someone else's: refuse too, its
# daemons hold the ports ours need.
for pidfile in "$ROOT"/run/*.pid; do
    [ -e "$pidfile" ] || continue
    if alive "$(cat "$pidfile")"; then
        die "$(basename "$pidfile" .pid) of a cluster started earlier is running (pid $(cat "$pidfile")): run slurm/cluster/down.sh first"
    fi
done
if command -v ss >/dev/null && ss -Hltn 2>/dev/null | awk '{print $4}' | grep -qE ':(6817|6818)$'; then
    die "port 6817 or 6818 is in use: another SLURM runs on this machine"
fi

rm -rf "$ROOT"
mkdir -p "$ROOT"/{etc,run,log,state/ctld,munge}
chmod 755 "$ROOT"

# ---------------------------------------------------------------------------------------- munge
# Our own key, socket and daemon: nothing of a system munged is touched.  munged checks that its
# files belong to its user and that no one else can write to their directories.
# The directory is searchable by everyone (every user's sbatch talks to the socket) and
# writable by munge only.
chown munge:munge "$ROOT/munge"
chmod 711 "$ROOT/munge"
dd if=/dev/urandom of="$ROOT/munge/munge.key" bs=1024 count=1 status=none
chown munge:munge "$ROOT/munge/munge.key"
chmod 400 "$ROOT/munge/munge.key"
SOCKET=$ROOT/munge/munge.socket
runuser -u munge -- munged --key-file="$ROOT/munge/munge.key" --socket="$SOCKET" \
    --pid-file="$ROOT/munge/munged.pid" --log-file="$ROOT/munge/munged.log" \
    --seed-file="$ROOT/munge/munged.seed"
wait_for 5 test -s "$ROOT/munge/munged.pid" || die "munged did not start: see $ROOT/munge/munged.log"
cp "$ROOT/munge/munged.pid" "$ROOT/run/munged.pid"
munge --socket="$SOCKET" -n | unmunge --socket="$SOCKET" >/dev/null || die "munge does not answer"
say "munged pid $(cat "$ROOT/run/munged.pid")"

# ----------------------------------------------------------------------------------- slurm.conf
read -r -a node_list <<< "$NODES"
first=${node_list[0]}
controller=${EVOSLURM_CONTROLLER:-$first}
ctld_name=${controller%%=*}
ctld_addr=${controller#*=}
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) * 8 / 10 / 1024 ))
first_job_id=${EVOSLURM_FIRST_JOB_ID:-$(( $(date +%s) % 6000000 * 10 + 1 ))}
{
    cat <<EOF
# Written by evocluster's slurm/cluster/up.sh: a throw-away test cluster.  down.sh removes it.
ClusterName=${EVOSLURM_CLUSTER:-evocluster}
SlurmctldHost=$ctld_name($ctld_addr)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$ROOT/state/ctld
SlurmctldPidFile=$ROOT/run/slurmctld.pid
SlurmctldLogFile=$ROOT/log/slurmctld.log
# %n: the node's name, so that several slurmd (emulated hosts) keep apart
SlurmdSpoolDir=$ROOT/state/%n
SlurmdPidFile=$ROOT/run/slurmd-%n.pid
SlurmdLogFile=$ROOT/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups (containers and VMs often have none to give): processes tracked by parentage
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# PyPI's MPICH wires its ranks with PMI-2: with "none", srun starts N singletons
MpiDefault=pmi2
ReturnToService=2
# seconds between a job's SIGTERM and SIGKILL (time limit, scancel): short on a test cluster
KillWait=10
# finished jobs stay visible to scontrol (and so to python -m evocluster status) this long
MinJobAge=600
# Job ids that no earlier cluster of this machine used (10 a second since 1970, modulo 6e6):
# MPICH names its shared memory after the job and step id under srun (/dev/shm/mpich_shm_*), a
# killed run leaves its segment behind, and a later job with the same id would attach to it.
FirstJobId=$first_job_id
# believe the CPUs below although the machine has fewer cores
SlurmdParameters=config_overrides
EOF
    names=()
    for node in "${node_list[@]}"; do
        echo "NodeName=${node%%=*} NodeAddr=${node#*=} CPUs=$CPUS RealMemory=$mem_mb State=UNKNOWN"
        names+=("${node%%=*}")
    done
    echo "PartitionName=debug Nodes=$(IFS=,; echo "${names[*]}") Default=YES MaxTime=INFINITE State=UP"
} > "$CONF"
export SLURM_CONF=$CONF
echo "export SLURM_CONF=$CONF" > "$ROOT/env"
say "wrote $CONF (${#node_list[@]} node(s), CPUs=$CPUS each)"

# -------------------------------------------------------------------------------------- daemons
# Both daemonise and write their PID files (named in slurm.conf) before they serve.
slurmctld -f "$CONF"
wait_for 10 test -s "$ROOT/run/slurmctld.pid" || die "slurmctld did not start: see $ROOT/log/slurmctld.log"
wait_for 10 sh -c 'scontrol ping | grep -q UP' || die "slurmctld does not answer: see $ROOT/log/slurmctld.log"
say "slurmctld pid $(cat "$ROOT/run/slurmctld.pid")"
for node in "${node_list[@]}"; do
    name=${node%%=*}
    mkdir -p "$ROOT/state/$name"
    on_node "$name" slurmd -f "$CONF" -N "$name"
    wait_for 10 test -s "$ROOT/run/slurmd-$name.pid" || die "slurmd $name did not start: see $ROOT/log/slurmd-$name.log"
    say "slurmd $name pid $(cat "$ROOT/run/slurmd-$name.pid")"
done
idle() { [ "$(sinfo -h -t idle -o %D)" = "${#node_list[@]}" ]; }
wait_for 30 idle || die "the nodes are not idle: $(sinfo -h -N -o '%N %T' | tr '\n' ' ')(see $ROOT/log)"

# A first job, so that a broken cluster shows here and not in the first test
out=$(timeout 30 srun -N "${#node_list[@]}" --ntasks-per-node=1 --mpi=none hostname 2>&1) \
    || die "srun hostname failed: $out"
wait_for 10 idle || true
say "cluster up: ${#node_list[@]} node(s), $(( CPUS * ${#node_list[@]} )) CPUs; export SLURM_CONF=$CONF"
