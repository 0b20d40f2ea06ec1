#!/usr/bin/env bash
# Bring up a one-node Slurm (Debian's slurmctld + slurmd + munge) on this machine, for the tests.
#
#   bash tests/slurm/up.sh        # as root; idempotent; ~10 s after the first apt install
#   bash tests/slurm/down.sh      # stops exactly the daemons this script started
#
# The node is this host with all its CPUs, its memory and one scheduler-only GPU
# (gres.conf `File=/dev/null`), so `gpu=1` rules are scheduled as on a real cluster.
# No cgroups (proctrack/linuxproc, task/none) and no accounting database: the Snakemake
# profile therefore asks the executor to poll with `squeue`, which sees finished jobs for
# MinJobAge seconds (set here far above 3 x the profile's first status check).
#
# Environment:
#   KNEESYNTH_SLURM_DIR   state, spool, logs and the PID file (default /tmp/kneesynth-slurm)
#
# Slurm's job step drops SLURM_CONF, so the config must live at /etc/slurm/slurm.conf. An
# existing slurm.conf that this script did not write is never overwritten.
set -euo pipefail

RUN_DIR=${KNEESYNTH_SLURM_DIR:-/tmp/kneesynth-slurm}
PID_FILE="$RUN_DIR/pids"
CONF=/etc/slurm/slurm.conf
GRES_CONF=/etc/slurm/gres.conf
MARKER="# written by kneesynth tests/slurm/up.sh"

log() { echo "slurm-up: $*" >&2; }
die() { echo "slurm-up: error: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and starts daemons)"

# --- already running? -----------------------------------------------------------------------
alive() { [[ -n "$1" && -d "/proc/$1" ]]; }
if [[ -f "$PID_FILE" ]]; then
    all_alive=1
    while read -r name pid; do
        alive "$pid" || all_alive=0
    done <"$PID_FILE"
    if [[ $all_alive -eq 1 ]] && timeout 10 sinfo -h >/dev/null 2>&1; then
        log "already up (PIDs in $PID_FILE)"
        exit 0
    fi
    die "$PID_FILE lists daemons that are not all running; run tests/slurm/down.sh first"
fi

# --- install --------------------------------------------------------------------------------
missing=()
for pair in slurmctld:slurmctld slurmd:slurmd sinfo:slurm-client munged:munge; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- configuration --------------------------------------------------------------------------
node=$(hostname -s)
cpus=$(nproc)
mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
mkdir -p "$RUN_DIR"/{state,spool,log} /etc/slurm

if [[ -f "$CONF" ]] && ! grep -qF "$MARKER" "$CONF"; then
    die "$CONF exists and was not written by this script; refusing to overwrite a site config"
fi

cat >"$CONF" <<EOF
$MARKER
ClusterName=kneesynth
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# no cgroups: plain process tracking, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
GresTypes=gpu
ReturnToService=2
# finished jobs stay visible to squeue this long (the executor polls with squeue)
MinJobAge=600
# a job past its time limit gets SIGTERM, then SIGKILL KillWait seconds later
KillWait=5
OverTimeLimit=0
StateSaveLocation=$RUN_DIR/state
SlurmdSpoolDir=$RUN_DIR/spool
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$RUN_DIR/log/slurmctld.log
SlurmdLogFile=$RUN_DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
cat >"$GRES_CONF" <<EOF
$MARKER
NodeName=$node Name=gpu File=/dev/null
EOF

# --- daemons --------------------------------------------------------------------------------
: >"$PID_FILE.tmp"
start() {  # start NAME CMD...: run in the foreground of a new session, record its PID
    local name=$1
    shift
    setsid "$@" >"$RUN_DIR/log/$name.out" 2>&1 </dev/null &
    echo "$name $!" >>"$PID_FILE.tmp"
    log "started $name (PID $!)"
}

if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "munged already running; not starting another"
else
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    if [[ ! -s /etc/munge/munge.key ]]; then  # Debian's postinst normally makes one
        mungekey --create --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key
        chmod 0600 /etc/munge/munge.key
    fi
    start munged setpriv --reuid=munge --regid=munge --clear-groups /usr/sbin/munged --foreground
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.2
    done
    munge -n | unmunge >/dev/null || die "munged did not start; see $RUN_DIR/log/munged.out"
fi

# -c: start from a clean job state (no jobs left from an earlier run)
start slurmctld /usr/sbin/slurmctld -D -c -f "$CONF"
start slurmd /usr/sbin/slurmd -D -N "$node" -f "$CONF"
mv "$PID_FILE.tmp" "$PID_FILE"

# --- wait for the node ----------------------------------------------------------------------
state=""
for i in $(seq 120); do
    state=$(sinfo -h -n "$node" -o %T 2>/dev/null || true)
    case "$state" in
        idle*) break ;;
        down* | drain* | unknown*)
            ((i % 10 == 0)) && scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true
            ;;
    esac
    sleep 0.5
done
[[ "$state" == idle* ]] || die "node $node not idle after 60 s (state '$state'); logs in $RUN_DIR/log"
log "node $node idle: $(sinfo -h -N -o '%N %c CPUs %m MB %G')"
