#!/usr/bin/env bash
# Start a real one-node Slurm on this machine (munged, slurmctld, slurmd; node 'localhost').
# Installs the Debian packages if missing, writes the config (CPUs and memory read from the
# machine, no cgroups), starts the daemons and waits until `sinfo` shows the node ready.
# Idempotent: when the cluster already runs it returns at once. Stop it with slurm/stop.sh.
# Settings (environment): HPCSR_SLURM_DIR (state folder, default /tmp/hpcsr-slurm),
# HPCSR_SLURMCTLD_PORT / HPCSR_SLURMD_PORT (default 6817 / 6818), HPCSR_SLURM_WAIT_S (default 30),
# HPCSR_SLURM_NO_INSTALL=1 (report missing Debian packages instead of installing them).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
t_start=$(date +%s.%N)

ready_state() { case "$1" in idle|mixed|allocated|completing) return 0 ;; esac; return 1; }

install_bridge() {  # the sacct bridge (slurm/bin/sacct) on PATH, refreshed when the repo's copy changed
  cmp -s "$SLURM_HOME/bin/sacct" "$SACCT_SHIM" && return 0
  install -m 755 "$SLURM_HOME/bin/sacct" "$SACCT_SHIM.tmp" && mv "$SACCT_SHIM.tmp" "$SACCT_SHIM" \
    || die "cannot install the sacct bridge at $SACCT_SHIM"
}

# Dies unless /etc/slurm/slurm.conf is absent, ours, or a leftover of a stopped hpcsr cluster.
check_conf_link() {
  local target
  [ -e "$ETC_CONF" ] || return 0   # absent, or a dangling link: nothing to lose
  target=$(readlink -f "$ETC_CONF")
  [ "$target" = "$(readlink -f "$CONF")" ] && return 0
  grep -q "$MARKER" "$ETC_CONF" || die "$ETC_CONF exists and was not written by this script (a site \
Slurm?). Refusing to replace it. Move it away, or use that cluster directly (see slurm/README.md)"
  if cluster_alive "$(dirname "$target")"; then
    die "another hpcsr cluster runs from $(dirname "$target") and owns $ETC_CONF. Use it, or stop it \
first: HPCSR_SLURM_DIR=$(dirname "$target") bash slurm/stop.sh"
  fi
}

# ---- already running? (the fast path of a second call) ------------------------------------------
if live_pid munged >/dev/null && live_pid slurmctld >/dev/null && live_pid slurmd >/dev/null; then
  state=$(node_state)
  if ready_state "$state"; then
    if [ "$(id -u)" = 0 ]; then
      check_conf_link
      ln -sfn "$CONF" "$ETC_CONF"
      install_bridge
    fi
    say "already running (node localhost $state, config $CONF); stop with: bash slurm/stop.sh"
    exit 0
  fi
fi

# ---- preconditions ------------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || die "must run as root: the daemons run as SlurmUser=root and the script writes \
$ETC_CONF and $SACCT_SHIM. Run: sudo bash slurm/start.sh"

missing=()
for pair in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "${HPCSR_SLURM_NO_INSTALL:-0}" = 1 ] && die "missing Debian packages: ${missing[*]} (HPCSR_SLURM_NO_INSTALL=1 \
forbids installing them here). Install them: apt-get install --no-install-recommends ${missing[*]}"
  command -v apt-get >/dev/null 2>&1 || die "missing programs from packages ${missing[*]} and no \
apt-get here: install Slurm (slurmctld, slurmd, client tools) and MUNGE with your package manager"
  say "installing Debian packages: ${missing[*]} (log /tmp/hpcsr-slurm-apt.log)"
  export DEBIAN_FRONTEND=noninteractive
  { timeout 300 apt-get update -qq && timeout 300 apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
    >/tmp/hpcsr-slurm-apt.log 2>&1 || die "apt-get install ${missing[*]} failed; log: /tmp/hpcsr-slurm-apt.log \
(check network access and 'apt-get update', then rerun)"
fi

for sock in "$MUNGE_SOCKET" "$HPCSR_SLURM_DIR/d/localhost_0000000.0000"; do
  [ ${#sock} -le 100 ] || die "HPCSR_SLURM_DIR='$HPCSR_SLURM_DIR' is too long: Unix socket paths \
such as '$sock' must stay under ~108 characters. Use a short folder, e.g. HPCSR_SLURM_DIR=/tmp/hpcsr-slurm"
done

# A half-running cluster (e.g. a daemon crashed) is stopped first so we start from a known state.
if live_pid munged >/dev/null || live_pid slurmctld >/dev/null || live_pid slurmd >/dev/null; then
  say "found a partly running or unready cluster; stopping it first"
  bash "$SLURM_HOME/stop.sh" || die "could not stop the old daemons (see above)"
fi

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for pair in "slurmctld:$SLURMCTLD_PORT:HPCSR_SLURMCTLD_PORT" "slurmd:$SLURMD_PORT:HPCSR_SLURMD_PORT"; do
  IFS=: read -r daemon port var <<<"$pair"
  if port_busy "$port"; then
    who=$(ss -ltnpH "sport = :$port" 2>/dev/null | sed -n 's/.*users:((\(.*\)))/\1/p' | head -n1)
    die "port $port (for $daemon) is already in use${who:+ by $who}. Stop that program (another \
Slurm? 'systemctl stop $daemon') or choose a free port: $var=<port> bash slurm/start.sh"
  fi
done

# Installed files that are not ours are never overwritten.
check_conf_link
if [ -e "$SACCT_SHIM" ] && ! grep -q "$MARKER" "$SACCT_SHIM"; then
  die "$SACCT_SHIM exists and is not the hpcsr sacct bridge; move it away and rerun"
fi

# ---- folders, munge key, config -----------------------------------------------------------------
umask 022
mkdir -p "$HPCSR_SLURM_DIR" "$LOG_DIR" "$RUN_DIR" "$HPCSR_SLURM_DIR/ctld" "$HPCSR_SLURM_DIR/d" \
  "$HPCSR_SLURM_DIR/munge" || die "cannot create folders under $HPCSR_SLURM_DIR"
chmod 755 "$HPCSR_SLURM_DIR" "$HPCSR_SLURM_DIR/munge"   # munged refuses group/world-writable folders
chmod 700 "$HPCSR_SLURM_DIR/ctld"
key="$HPCSR_SLURM_DIR/munge/munge.key"
if [ ! -s "$key" ]; then
  (umask 077 && head -c 1024 /dev/urandom > "$key.tmp" && mv "$key.tmp" "$key") || die "cannot write $key"
fi
chmod 600 "$key"

cpus=$(nproc)
mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
# Job ids of a fresh state folder start from the clock (10 per minute since 2025), so a cluster
# rebuilt after its folder was wiped does not hand out ids that old submitit folders still hold.
first_id=$(( ( ($(date +%s) - 1735689600) / 60 * 10 ) % 60000000 + 1 ))

tmp_conf="$CONF.tmp.$$"
cat > "$tmp_conf" <<EOF
# Written $MARKER; rewritten on every start, do not edit (edit slurm/start.sh).
ClusterName=hpcsr
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$SLURMCTLD_PORT
SlurmdPort=$SLURMD_PORT
# daemons and jobs run as root; no mail
SlurmUser=root
SlurmdUser=root
MailProg=/bin/true
# munge with its own key and socket in the state folder
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
# no cgroups: track processes by parent pid, no task binding, no accounting gatherer
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
# CPUs are the consumable unit, so several 1-CPU jobs share the node
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# finished jobs stay visible to squeue/scontrol (and the sacct bridge) for a day
MinJobAge=86400
FirstJobId=$first_id
ReturnToService=2
SlurmdParameters=config_overrides
# short waits so cancel and requeue are quick on one node
KillWait=5
InactiveLimit=0
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=60
# files of the daemons
StateSaveLocation=$HPCSR_SLURM_DIR/ctld
SlurmdSpoolDir=$HPCSR_SLURM_DIR/d
SlurmctldPidFile=$(pid_file slurmctld)
SlurmdPidFile=$(pid_file slurmd)
SlurmctldLogFile=$(log_file slurmctld)
SlurmdLogFile=$(log_file slurmd)
SlurmctldDebug=info
SlurmdDebug=info
# the one node, sized from this machine
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
mv "$tmp_conf" "$CONF" || die "cannot write $CONF"
mkdir -p "$(dirname "$ETC_CONF")"
ln -sfn "$CONF" "$ETC_CONF" || die "cannot link $ETC_CONF -> $CONF"
install_bridge

# ---- start the daemons --------------------------------------------------------------------------
# Waits up to WAIT_S seconds for command (or function) "$2..." to succeed; on timeout explains which daemon failed.
wait_for() {
  local daemon=$1; shift
  local deadline=$(( $(date +%s) + WAIT_S ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ] || ! live_pid "$daemon" >/dev/null; then
      printf '[slurm] ERROR: %s did not become ready within %ss (%s).\n' "$daemon" "$WAIT_S" \
        "$(live_pid "$daemon" >/dev/null && echo 'still running' || echo 'process exited')" >&2
      printf '[slurm] its log is %s; last lines:\n' "$(log_file "$daemon")" >&2
      tail -n 15 "$(log_file "$daemon")" 2>/dev/null | sed 's/^/    /' >&2
      printf '[slurm] fix the cause shown above, then run: bash slurm/stop.sh && bash slurm/start.sh\n' >&2
      bash "$SLURM_HOME/stop.sh" >/dev/null 2>&1
      exit 1
    fi
    sleep 0.2
  done
}

launch() {  # runs a daemon detached from our stdout/stderr (a test's pipe must not stay open)
  local daemon=$1; shift
  "$@" </dev/null >>"$(log_file "$daemon")" 2>&1 \
    || { say "ERROR: '$*' exited with an error; log $(log_file "$daemon"):"; tail -n 15 "$(log_file "$daemon")" >&2; \
         bash "$SLURM_HOME/stop.sh" >/dev/null 2>&1; exit 1; }
}

launch munged munged --socket="$MUNGE_SOCKET" --key-file="$key" --pid-file="$(pid_file munged)" \
  --log-file="$(log_file munged)" --seed-file="$HPCSR_SLURM_DIR/munge/seed"
munge_ok() { munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET"; }
wait_for munged munge_ok

export SLURM_CONF="$CONF"
launch slurmctld slurmctld
wait_for slurmctld scontrol ping

launch slurmd slurmd -N localhost
node_ready() { ready_state "$(node_state)"; }
wait_for slurmd node_ready

t_end=$(date +%s.%N)
say "up in $(awk -v a="$t_start" -v b="$t_end" 'BEGIN{printf "%.1f", b-a}') s: node localhost, \
$cpus CPUs, $mem_mb MB, partition debug; config $CONF (linked from $ETC_CONF); logs $LOG_DIR; \
new job ids from $first_id up"
