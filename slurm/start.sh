#!/usr/bin/env bash
# Start a real Slurm on this machine: munged, slurmctld and one slurmd per node. One node (the
# default) is 'localhost' on 127.0.0.1; with --nodes N > 1 every node is a test host of its own:
# a network namespace with its own hostname (node<i>), address ($SUBNET.(10+i), on a bridge) and
# /etc/hosts (bind-mounted for the host's processes only; the machine's file is never touched).
# Installs the Debian packages if missing, writes the config (CPUs and memory read from the
# machine, no cgroups), starts the daemons and waits until `sinfo` shows every node ready.
# Idempotent: when the cluster already runs with N nodes it returns at once; a cluster with
# another node count is stopped first. Stop it with slurm/stop.sh.
# Usage: bash slurm/start.sh [--nodes N]
# Settings (environment): HPCSR_SLURM_DIR (state folder, default /tmp/hpcsr-slurm),
# HPCSR_SLURMCTLD_PORT / HPCSR_SLURMD_PORT (default 6817 / 6818), HPCSR_SLURM_WAIT_S (default 30),
# HPCSR_SLURM_SUBNET (test hosts' /24, default 10.213.70),
# HPCSR_SLURM_NO_INSTALL=1 (report missing Debian packages instead of installing them).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
t_start=$(date +%s.%N)

nodes=1
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) nodes=${2:-}; shift 2 || die "--nodes needs a number, e.g. --nodes 2" ;;
    --nodes=*) nodes=${1#--nodes=}; shift ;;
    *) die "unknown option '$1' (allowed: --nodes N)" ;;
  esac
done
[[ "$nodes" =~ ^[1-9][0-9]?$ ]] && [ "$nodes" -le 50 ] || die "--nodes '$nodes': give a whole number from 1 to 50"
if [ "$nodes" = 1 ]; then node_list=localhost; else node_list="node[1-$nodes]"; fi

ready_state() { case "$1" in idle|mixed|allocated|completing) return 0 ;; esac; return 1; }
# True when sinfo lists exactly the nodes of this start ($nodes of them), each ready (or node $1 alone).
nodes_ready() {
  local states
  states=$(node_states) || return 1
  if [ $# = 1 ]; then ready_state "$(awk -v n="$1" '$1 == n {print $2}' <<<"$states")"; return; fi
  [ "$(wc -l <<<"$states")" = "$nodes" ] || return 1
  while read -r _ state; do ready_state "$state" || return 1; done <<<"$states"
}
all_alive() { local d; for d in munged slurmctld $(slurmd_names); do live_pid "$d" >/dev/null || return 1; done; }
any_alive() { cluster_alive "$HPCSR_SLURM_DIR"; }

# Waits up to WAIT_S seconds for command (or function) "$2..." to succeed; on timeout, or when the
# daemon's pid file names a process that has ended, explains which daemon failed. (The pid file
# appears only once the daemon has forked into the background.)
wait_for() {
  local daemon=$1; shift
  local deadline=$(( $(date +%s) + WAIT_S ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ] || { [ -e "$(pid_file "$daemon")" ] && ! live_pid "$daemon" >/dev/null; }; then
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
  rm -f "$(pid_file "$daemon")"   # a stale one would name the previous, ended process
  "$@" </dev/null >>"$(log_file "$daemon")" 2>&1 \
    || { say "ERROR: '$*' exited with an error; log $(log_file "$daemon"):"; tail -n 15 "$(log_file "$daemon")" >&2; \
         bash "$SLURM_HOME/stop.sh" >/dev/null 2>&1; exit 1; }
}

# Starts the slurmd of test host $1 (1..N) inside its namespace, with its own hostname (UTS
# namespace) and /etc/hosts (bind-mounted in its own mount namespace; jobs inherit both).
# nsenter, not `ip netns exec`: that remounts /sys, hiding /sys/fs/cgroup, which slurmd needs.
start_slurmd() {
  local name; name=$(node_name "$1")
  mkdir -p "$HPCSR_SLURM_DIR/d/$name" || die "cannot create $HPCSR_SLURM_DIR/d/$name"
  launch "slurmd-$name" nsenter --net="/run/netns/$NS_PREFIX$1" unshare --uts --mount \
    sh -c 'hostname "$1" && mount --bind "$2" /etc/hosts && exec slurmd -N "$1"' sh "$name" "$HOSTS_FILE"
}

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
running=$(cat "$NODES_FILE" 2>/dev/null || echo 1)
if [ "$running" = "$nodes" ] && all_alive && nodes_ready; then
  if [ "$(id -u)" = 0 ]; then
    check_conf_link
    ln -sfn "$CONF" "$ETC_CONF"
    install_bridge
  fi
  say "already running ($nodes node(s) $node_list ready, config $CONF); stop with: bash slurm/stop.sh"
  exit 0
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

if [ "$nodes" -gt 1 ]; then
  for tool in ip unshare mount; do
    command -v "$tool" >/dev/null 2>&1 || die "--nodes $nodes needs '$tool' (Debian packages iproute2, util-linux, \
mount) to make the test hosts; install it, or start one node: bash slurm/start.sh"
  done
fi

if [ "$nodes" = 1 ]; then job_sock=d/localhost_0000000.0000; else job_sock="d/node$nodes/node${nodes}_0000000.0000"; fi
for sock in "$MUNGE_SOCKET" "$HPCSR_SLURM_DIR/$job_sock"; do
  [ ${#sock} -le 100 ] || die "HPCSR_SLURM_DIR='$HPCSR_SLURM_DIR' is too long: Unix socket paths \
such as '$sock' must stay under ~108 characters. Use a short folder, e.g. HPCSR_SLURM_DIR=/tmp/hpcsr-slurm"
done

# A test host whose slurmd has died (a crashed node) comes back alone: the controller, the other
# hosts and the jobs keep running; Slurm returns the node to service when it registers.
if [ "$nodes" -gt 1 ] && [ "$running" = "$nodes" ] && live_pid munged >/dev/null && live_pid slurmctld >/dev/null \
   && [ "$(our_namespaces | wc -l)" = "$nodes" ]; then
  for ((i = 1; i <= nodes; i++)); do
    live_pid "slurmd-$(node_name "$i")" >/dev/null && continue
    say "slurmd of $(node_name "$i") is not running: starting it again in $NS_PREFIX$i"
    start_slurmd "$i"
    wait_for "slurmd-$(node_name "$i")" nodes_ready "$(node_name "$i")"
  done
  all_alive && nodes_ready && { say "all $nodes nodes ready again"; exit 0; }
fi

# A cluster of another size, a half-running one (e.g. a daemon crashed) or test hosts left by a
# crash are stopped and removed first, so we start from a known state.
if any_alive || [ -n "$(our_namespaces)$(our_links)" ]; then
  if [ "$running" != "$nodes" ] && any_alive; then say "a cluster of $running node(s) runs; stopping it first"
  else say "found a partly running or unready cluster, or test hosts left behind; stopping it first"; fi
  bash "$SLURM_HOME/stop.sh" || die "could not stop the old daemons (see above)"
fi

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ports=("slurmctld:$SLURMCTLD_PORT:HPCSR_SLURMCTLD_PORT")   # test hosts' slurmd ports are in their own namespaces
[ "$nodes" = 1 ] && ports+=("slurmd:$SLURMD_PORT:HPCSR_SLURMD_PORT")
for pair in "${ports[@]}"; do
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
if [ "$nodes" -gt 1 ] && ip -o addr show 2>/dev/null | grep -q " inet $SUBNET\."; then
  die "the test hosts' network $SUBNET.0/24 is already in use on this machine ($(ip -o addr show \
| grep " inet $SUBNET\." | awk '{print $2, $4}' | head -n1)); choose another: HPCSR_SLURM_SUBNET=10.213.71 bash slurm/start.sh --nodes $nodes"
fi

# ---- folders, munge key, config -----------------------------------------------------------------
umask 022
# slurmctld keeps one state folder per node count, so switching sizes never mixes their node records
if [ "$nodes" = 1 ]; then ctld="$HPCSR_SLURM_DIR/ctld"; else ctld="$HPCSR_SLURM_DIR/ctld-n$nodes"; fi
mkdir -p "$HPCSR_SLURM_DIR" "$LOG_DIR" "$RUN_DIR" "$ctld" "$HPCSR_SLURM_DIR/d" \
  "$HPCSR_SLURM_DIR/munge" || die "cannot create folders under $HPCSR_SLURM_DIR"
chmod 755 "$HPCSR_SLURM_DIR" "$HPCSR_SLURM_DIR/munge"   # munged refuses group/world-writable folders
chmod 700 "$ctld"
echo "$nodes" > "$NODES_FILE" || die "cannot write $NODES_FILE"
key="$HPCSR_SLURM_DIR/munge/munge.key"
if [ ! -s "$key" ]; then
  (umask 077 && head -c 1024 /dev/urandom > "$key.tmp" && mv "$key.tmp" "$key") || die "cannot write $key"
fi
chmod 600 "$key"

cpus=$(nproc)   # every test host offers all CPUs (they share them); memory is split between the hosts
mem_mb=$(awk -v n="$nodes" '/^MemTotal:/ {print int($2 / 1024 / n)}' /proc/meminfo)
# Job ids of a fresh state folder start from the clock (10 per minute since 2025), so a cluster
# rebuilt after its folder was wiped does not hand out ids that old submitit folders still hold.
first_id=$(( ( ($(date +%s) - 1735689600) / 60 * 10 ) % 60000000 + 1 ))

# test hosts: a crashed host is noticed (set DOWN, its jobs requeued) 20 s after it stops answering
if [ "$nodes" = 1 ]; then slurmd_timeout=60; else slurmd_timeout=20; fi
if [ "$nodes" = 1 ]; then
  ctld_addr=127.0.0.1; node_suffix=""; slurmd_suffix=""
  node_lines="NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN"
else  # slurmd's %n is its node name: each test host has its own spool folder, pid file and log
  ctld_addr=$SUBNET.1; node_suffix=/%n; slurmd_suffix=-%n
  node_lines=$(for ((i = 1; i <= nodes; i++)); do
    echo "NodeName=$(node_name "$i") NodeAddr=$(node_addr "$i") CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN"; done)
fi

tmp_conf="$CONF.tmp.$$"
cat > "$tmp_conf" <<EOF
# Written $MARKER; rewritten on every start, do not edit (edit slurm/start.sh).
ClusterName=hpcsr
SlurmctldHost=localhost($ctld_addr)
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
SlurmdTimeout=$slurmd_timeout
# files of the daemons
StateSaveLocation=$ctld
SlurmdSpoolDir=$HPCSR_SLURM_DIR/d$node_suffix
SlurmctldPidFile=$(pid_file slurmctld)
SlurmdPidFile=$(pid_file "slurmd$slurmd_suffix")
SlurmctldLogFile=$(log_file slurmctld)
SlurmdLogFile=$(log_file "slurmd$slurmd_suffix")
SlurmctldDebug=info
SlurmdDebug=info
# the nodes, sized from this machine
$node_lines
PartitionName=debug Nodes=$node_list Default=YES MaxTime=INFINITE State=UP
EOF
mv "$tmp_conf" "$CONF" || die "cannot write $CONF"
mkdir -p "$(dirname "$ETC_CONF")"
ln -sfn "$CONF" "$ETC_CONF" || die "cannot link $ETC_CONF -> $CONF"
install_bridge

# ---- test hosts (--nodes N > 1), made before slurmctld, which listens on the bridge --------------
if [ "$nodes" -gt 1 ]; then
  # Test host i: namespace hpcsr-node<i> joined to the bridge by a veth pair (its end is eth0 there)
  # and its own loopback; the /etc/hosts its processes see names every host (see start_slurmd).
  { echo "127.0.0.1 localhost"; echo "$SUBNET.1 hpcsr-ctld"
    for ((i = 1; i <= nodes; i++)); do echo "$(node_addr "$i") $(node_name "$i")"; done; } > "$HOSTS_FILE"
  ip link add "$BRIDGE" type bridge && ip link set "$BRIDGE" up && ip addr add "$SUBNET.1/24" dev "$BRIDGE" \
    || { bash "$SLURM_HOME/stop.sh" >/dev/null 2>&1; die "cannot create bridge $BRIDGE with $SUBNET.1/24 (see above)"; }
  for ((i = 1; i <= nodes; i++)); do
    ns=$NS_PREFIX$i
    { ip netns add "$ns" && ip link add "$VETH_PREFIX$i" type veth peer name eth0 netns "$ns" \
      && ip link set "$VETH_PREFIX$i" master "$BRIDGE" up && ip -n "$ns" addr add "$(node_addr "$i")/24" dev eth0 \
      && ip -n "$ns" link set eth0 up && ip -n "$ns" link set lo up; } \
      || { bash "$SLURM_HOME/stop.sh" >/dev/null 2>&1; die "cannot make test host $(node_name "$i") (namespace $ns; see above)"; }
  done
fi

# ---- start the daemons --------------------------------------------------------------------------
launch munged munged --socket="$MUNGE_SOCKET" --key-file="$key" --pid-file="$(pid_file munged)" \
  --log-file="$(log_file munged)" --seed-file="$HPCSR_SLURM_DIR/munge/seed"
munge_ok() { munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET"; }
wait_for munged munge_ok

export SLURM_CONF="$CONF"
launch slurmctld slurmctld
wait_for slurmctld scontrol ping

if [ "$nodes" = 1 ]; then
  launch slurmd slurmd -N localhost
  wait_for slurmd nodes_ready localhost
else
  for ((i = 1; i <= nodes; i++)); do start_slurmd "$i"; done
  for ((i = 1; i <= nodes; i++)); do wait_for "slurmd-$(node_name "$i")" nodes_ready "$(node_name "$i")"; done
fi

t_end=$(date +%s.%N)
say "up in $(awk -v a="$t_start" -v b="$t_end" 'BEGIN{printf "%.1f", b-a}') s: $nodes node(s) $node_list, \
$cpus CPUs and $mem_mb MB each, partition debug; config $CONF (linked from $ETC_CONF); logs $LOG_DIR; \
new job ids from $first_id up"
