#!/usr/bin/env bash
# Stop exactly the daemons tests/slurm/up.sh started, by the PIDs it recorded.
#   bash tests/slurm/down.sh
# Jobs still running are cancelled first; the config files up.sh wrote are removed. Safe to
# run twice (no PID file: nothing to do).
set -uo pipefail

RUN_DIR=${KNEESYNTH_SLURM_DIR:-/tmp/kneesynth-slurm}
PID_FILE="$RUN_DIR/pids"
log() { echo "slurm-down: $*" >&2; }

if [[ ! -f "$PID_FILE" ]]; then
    log "no $PID_FILE: nothing started by up.sh"
    exit 0
fi

# cancel our cluster's jobs so that slurmd leaves no job processes behind
timeout 10 scancel --full --state=RUNNING,PENDING -u "$(id -un)" >/dev/null 2>&1 || true

# stop in reverse order of start: slurmd, slurmctld, munged
mapfile -t entries < <(tac "$PID_FILE")
for entry in "${entries[@]}"; do
    name=${entry%% *}
    pid=${entry##* }
    if [[ ! -d "/proc/$pid" ]]; then
        log "$name (PID $pid) already gone"
        continue
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        [[ -d "/proc/$pid" ]] || break
        sleep 0.2
    done
    if [[ -d "/proc/$pid" ]]; then
        log "$name (PID $pid) ignored SIGTERM for 10 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped $name (PID $pid)"
done
rm -f "$PID_FILE"

# remove the config up.sh wrote, so that sinfo fails at once instead of retrying a dead controller
MARKER="# written by kneesynth tests/slurm/up.sh"
for conf in /etc/slurm/slurm.conf /etc/slurm/gres.conf; do
    if [[ -f "$conf" ]] && grep -qF "$MARKER" "$conf"; then
        rm -f "$conf"
    fi
done
