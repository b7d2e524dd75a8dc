# Shared settings and helpers for slurm/start.sh and slurm/stop.sh (sourced, not run).
# Every path, port, address and limit of the test cluster is defined here once.

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
NODES_FILE="$RUN_DIR/nodes"               # node count of the cluster started last (absent: none yet)

# Test hosts of a cluster with --nodes N > 1: host i is node<i> in network namespace hpcsr-node<i>,
# at $SUBNET.(10+i) on bridge $BRIDGE (the machine side, $SUBNET.1, is where slurmctld listens).
SUBNET=${HPCSR_SLURM_SUBNET:-10.213.70}   # first three octets of a /24 nobody else uses here
BRIDGE=hpcsr-br0
NS_PREFIX=hpcsr-node                      # namespaces named so are this project's, also after a crash
VETH_PREFIX=hpcsr-v                       # machine side of host i's veth pair: hpcsr-v<i>
HOSTS_FILE="$HPCSR_SLURM_DIR/hosts"       # /etc/hosts as the test hosts see it (bind-mounted there)
node_name() { echo "node$1"; }
node_addr() { echo "$SUBNET.$((10 + $1))"; }

# daemon name -> its pid file and log file
pid_file() { echo "$RUN_DIR/$1.pid"; }
log_file() { echo "$LOG_DIR/$1.log"; }

say() { printf '[slurm] %s\n' "$*"; }
die() { printf '[slurm] ERROR: %s\n' "$*" >&2; exit 1; }

# Prints the pid of daemon $1 if its pid file (in run folder $2, default ours) names a live
# process of that program, else nothing. A per-node daemon is named program-node ('slurmd-node2').
live_pid() {
  local f pid comm
  f=${2:-$RUN_DIR}/$1.pid
  [ -r "$f" ] || return 1
  pid=$(tr -dc '0-9' 2>/dev/null < "$f")
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
  [ "$comm" = "${1%%-*}" ] || return 1   # a recycled pid of another program is not our daemon
  grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null && return 1   # exited, not yet reaped
  echo "$pid"
}

# The slurmd names of a cluster with state folder $1 (default ours): 'slurmd' for one node,
# 'slurmd-node1 slurmd-node2 ...' otherwise; from its nodes file, one node when there is none.
slurmd_names() {
  local n i
  n=$(cat "${1:-$HPCSR_SLURM_DIR}/run/nodes" 2>/dev/null || echo 1)
  if [ "$n" = 1 ]; then echo slurmd; return; fi
  for ((i = 1; i <= n; i++)); do printf 'slurmd-%s ' "$(node_name "$i")"; done
}

# True when any daemon of the hpcsr cluster with state folder $1 runs.
cluster_alive() {
  local d
  for d in munged slurmctld $(slurmd_names "$1"); do live_pid "$d" "$1/run" >/dev/null && return 0; done
  return 1
}

# Lines 'node state' as sinfo reports them (idle, mixed, allocated, down*, ...), empty if unreachable.
node_states() {
  SLURM_CONF="$CONF" timeout 5 sinfo -h -N -o '%N %T' 2>/dev/null
}

# The namespaces, links and bridge of test hosts that exist now (made by any earlier start).
our_namespaces() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$NS_PREFIX[0-9]+\$"; }
our_links() { ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E "^($VETH_PREFIX[0-9]+|$BRIDGE)\$"; }
