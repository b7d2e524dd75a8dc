# Shared settings and helpers for slurm/start.sh and slurm/stop.sh (sourced, not run).
# Every path, port and limit of the one-node cluster is defined here once.

# Throwaway folder for state, logs, pid files and sockets (keep it short: socket paths <= 107 chars).
HPCSR_SLURM_DIR=${HPCSR_SLURM_DIR:-/tmp/hpcsr-slurm}
# TCP ports of the two Slurm daemons (Slurm's defaults; change when another Slurm uses them).
SLURMCTLD_PORT=${HPCSR_SLURMCTLD_PORT:-6817}
SLURMD_PORT=${HPCSR_SLURMD_PORT:-6818}
# Seconds any single wait may take before the script gives up and explains why.
WAIT_S=${HPCSR_SLURM_WAIT_S:-30}

SLURM_HOME=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CONF="$HPCSR_SLURM_DIR/slurm.conf"
ETC_CONF=/etc/slurm/slurm.conf            # where Slurm's commands look without SLURM_CONF
SACCT_SHIM=/usr/local/bin/sacct           # ahead of /usr/bin/sacct on the default PATH
MARKER="by hpcsr slurm/start.sh"      # identifies files this project may overwrite or remove
MUNGE_SOCKET="$HPCSR_SLURM_DIR/munge/sock"
LOG_DIR="$HPCSR_SLURM_DIR/log"
RUN_DIR="$HPCSR_SLURM_DIR/run"

# daemon name -> its pid file and log file
pid_file() { echo "$RUN_DIR/$1.pid"; }
log_file() { echo "$LOG_DIR/$1.log"; }

say() { printf '[slurm] %s\n' "$*"; }
die() { printf '[slurm] ERROR: %s\n' "$*" >&2; exit 1; }

# Prints the pid of daemon $1 if its pid file (in run folder $2, default ours) names a live
# process of that program, else nothing.
live_pid() {
  local f pid comm
  f=${2:-$RUN_DIR}/$1.pid
  [ -r "$f" ] || return 1
  pid=$(tr -dc '0-9' 2>/dev/null < "$f")
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
  [ "$comm" = "$1" ] || return 1   # a recycled pid of another program is not our daemon
  grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null && return 1   # exited, not yet reaped
  echo "$pid"
}

# True when any daemon of the hpcsr cluster with state folder $1 runs.
cluster_alive() {
  local d
  for d in munged slurmctld slurmd; do live_pid "$d" "$1/run" >/dev/null && return 0; done
  return 1
}

# The node's state as sinfo reports it (idle, mixed, allocated, down*, ...), empty if unreachable.
node_state() {
  SLURM_CONF="$CONF" timeout 5 sinfo -h -n localhost -o '%T' 2>/dev/null | head -n1
}
