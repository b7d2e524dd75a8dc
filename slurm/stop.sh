#!/usr/bin/env bash
# Stop the Slurm started by slurm/start.sh: cancel its jobs, then end every slurmd, slurmctld and
# munged by the PIDs in their pid files (TERM, then KILL after a timeout). Then the test hosts of a
# --nodes N cluster go: every process left in their network namespaces (by PID, from
# `ip netns pids`), the namespaces, veth links and the bridge, also those a crashed run left
# behind (found by their names, see common.sh). Safe to repeat.
# --purge also deletes the state folder, the /etc/slurm/slurm.conf link and the sacct bridge.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

purge=0
for a in "$@"; do
  case "$a" in
    --purge) purge=1 ;;
    *) die "unknown option '$a' (allowed: --purge)" ;;
  esac
done

# Jobs first, so no job processes (slurmstepd and its children) outlive the daemons.
if live_pid slurmctld >/dev/null; then
  jobs=$(SLURM_CONF="$CONF" timeout 10 squeue -h -o '%A' -t pending,running,suspended,completing 2>/dev/null | sort -u)
  if [ -n "$jobs" ]; then
    say "cancelling $(echo "$jobs" | wc -l) unfinished job(s)"
    # shellcheck disable=SC2086
    SLURM_CONF="$CONF" timeout 10 scancel $jobs 2>/dev/null
    deadline=$(( $(date +%s) + WAIT_S ))
    while [ -n "$(SLURM_CONF="$CONF" timeout 5 squeue -h -o '%A' -t running,completing 2>/dev/null)" ]; do
      [ "$(date +%s)" -lt "$deadline" ] || { say "jobs still ending after ${WAIT_S}s; stopping the daemons anyway"; break; }
      sleep 0.3
    done
  fi
fi

failed=0
for daemon in $(slurmd_names) slurmctld munged; do
  pid=$(live_pid "$daemon") || continue
  kill -TERM "$pid" 2>/dev/null
  deadline=$(( $(date +%s) + WAIT_S ))
  while live_pid "$daemon" >/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      say "$daemon (pid $pid) ignored SIGTERM for ${WAIT_S}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null
      sleep 0.5
      live_pid "$daemon" >/dev/null && { say "ERROR: $daemon (pid $pid) still alive; see $(log_file "$daemon")"; failed=1; }
      break
    fi
    sleep 0.1
  done
  say "stopped $daemon (pid $pid)"
done

# Test hosts: what still runs in a namespace (job processes of a crashed slurmd) gets TERM, then
# KILL after 5 s; then the namespace goes (with its end of the veth pair), then links and bridge.
# A process counts as ended once /proc shows it gone or a zombie (a dying one leaves its namespace
# before it has ended).
running() { local p out=""; for p in "$@"; do [ -d "/proc/$p" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$p/status" 2>/dev/null && out+="$p "; done; echo "$out"; }
end_all() {  # ends processes $2... (TERM, then KILL) within 10 s; $1 names them in messages
  local what=$1 left; shift
  # shellcheck disable=SC2086
  kill -TERM "$@" 2>/dev/null
  for _ in $(seq 50); do [ -z "$(running "$@")" ] && return 0; sleep 0.1; done
  left=$(running "$@")
  # shellcheck disable=SC2086
  kill -KILL $left 2>/dev/null
  for _ in $(seq 50); do [ -z "$(running "$@")" ] && return 0; sleep 0.1; done
  say "ERROR: processes $(running "$@")left in $what survive SIGKILL"; failed=1
}
if command -v ip >/dev/null 2>&1; then
  for ns in $(our_namespaces); do
    for _ in 1 2 3; do   # again while processes appear (forked by those being ended)
      read -ra pids <<<"$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')"
      [ ${#pids[@]} -gt 0 ] || break
      say "ending processes left in $ns: ${pids[*]}"
      end_all "$ns" "${pids[@]}"
    done
    ip netns del "$ns" || { say "ERROR: cannot delete network namespace $ns"; failed=1; }
  done
  for link in $(our_links); do
    ip link del "$link" 2>/dev/null || ! ip link show "$link" >/dev/null 2>&1 \
      || { say "ERROR: cannot delete link $link"; failed=1; }   # a veth may go with its namespace meanwhile
  done
  [ -n "${ns:-}${link:-}" ] && say "removed the test hosts' namespaces and links"
fi

if [ "$purge" = 1 ] && [ "$failed" = 0 ]; then
  [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$CONF" ] && rm -f "$ETC_CONF"
  # the bridge is shared: it stays while the config link belongs to another hpcsr cluster
  [ ! -e "$ETC_CONF" ] && [ -f "$SACCT_SHIM" ] && grep -q "$MARKER" "$SACCT_SHIM" && rm -f "$SACCT_SHIM"
  rm -rf "$HPCSR_SLURM_DIR"
  say "removed $HPCSR_SLURM_DIR and, unless another hpcsr cluster uses them, the $ETC_CONF link and the sacct bridge"
fi
exit "$failed"
