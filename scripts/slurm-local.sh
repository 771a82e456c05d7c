#!/bin/bash
# A throw-away single-node Slurm cluster on loopback, for tests and benchmarks (as root).
#
#   scripts/slurm-local.sh start DIR   # writes DIR/slurm.conf, starts munged (unless one answers),
#                                      # slurmctld and slurmd; waits until the node is idle
#   scripts/slurm-local.sh stop DIR    # stops, by pid, every daemon that 'start DIR' started
#
# Clients use it with SLURM_CONF=DIR/slurm.conf. Exit 77 (with the reason on stderr) when the
# cluster cannot be started here (not root, slurm-wlm or munge missing, a daemon does not come
# up): callers report that as skipped. Configuration: ../shared/docs/slurm-single-node.md.
set -u
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

skip() { echo "slurm-local: $*" >&2; exit 77; }

# Runs a daemon with no descriptor of ours but 0–2, and those on files. munged keeps every
# descriptor it is given, so it would hold open whatever our caller waits on for our end: a pipe
# of stdout, or the socket through which Swift's Foundation.Process learns that a child exited (a
# test waiting for this script then never returns, as CI found).
detached() {
  (
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
    done
    exec "$@"
  )
}

stop() {
  for name in slurmd slurmctld munged; do
    f="$dir/$name.started"
    [ -f "$f" ] || continue
    # Another cluster (a test run in another clone) may be using the munged we started: leave
    # it to that one's stop, which will not find it recorded, so say so.
    if [ "$name" = munged ] && pgrep -x slurmctld > /dev/null; then
      echo "slurm-local: munged (pid $(cat "$f")) left running: another slurmctld uses it" >&2
      rm -f "$f"
      continue
    fi
    pid=$(cat "$f")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null
    fi
    rm -f "$f"
  done
  return 0
}

if [ "$cmd" = stop ]; then stop; exit 0; fi
[ "$cmd" = start ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

[ "$(id -u)" = 0 ] || skip "needs root to run slurmd (uid $(id -u))"
for program in slurmctld slurmd srun sbatch scancel squeue sinfo munged munge; do
  command -v "$program" > /dev/null || skip "'$program' is missing (Debian: apt-get install slurm-wlm munge)"
done

# munge: reuse one that answers, else start our own (and stop it later).
if ! munge -n 2>/dev/null | unmunge > /dev/null 2>&1; then
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    if command -v mungekey > /dev/null; then mungekey -c -f > /dev/null 2>&1; else
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2> /dev/null; fi
    chown munge:munge /etc/munge/munge.key 2>/dev/null; chmod 400 /etc/munge/munge.key
  fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null
  detached su -s /bin/sh munge -c "munged --force" < /dev/null > "$dir/munged.out" 2> "$dir/munged.err" || skip "munged did not start: $(cat "$dir/munged.err")"
  for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
  cat /run/munge/munged.pid > "$dir/munged.started" 2>/dev/null
  munge -n 2>/dev/null | unmunge > /dev/null 2>&1 || { stop; skip "munged does not answer"; }
fi

host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) - 1024 ))
[ "$mem" -gt 512 ] || mem=512
port=${MVC_SLURM_PORT:-$(( 20000 + RANDOM % 20000 ))}
mkdir -p "$dir/ctld" "$dir/d" "$dir/log"
cat > "$dir/slurm.conf" <<EOF
ClusterName=mvctest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/d
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=5
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:8
EOF
export SLURM_CONF="$dir/slurm.conf"
detached slurmctld -f "$SLURM_CONF" < /dev/null > "$dir/log/slurmctld.out" 2> "$dir/log/slurmctld.err" || { stop; skip "slurmctld did not start: $(tail -3 "$dir/log/slurmctld.err")"; }
for _ in $(seq 50); do [ -s "$dir/slurmctld.pid" ] && break; sleep 0.1; done
cat "$dir/slurmctld.pid" > "$dir/slurmctld.started"
detached slurmd -f "$SLURM_CONF" < /dev/null > "$dir/log/slurmd.out" 2> "$dir/log/slurmd.err" || { stop; skip "slurmd did not start: $(tail -3 "$dir/log/slurmd.err")"; }
for _ in $(seq 50); do [ -s "$dir/slurmd.pid" ] && break; sleep 0.1; done
cat "$dir/slurmd.pid" > "$dir/slurmd.started"
for _ in $(seq 150); do
  state=$(sinfo -h -o %t 2>/dev/null | head -1)
  case "$state" in idle*|mix*|alloc*) echo "SLURM_CONF=$SLURM_CONF"; exit 0 ;; esac
  sleep 0.2
done
log=$(tail -5 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" 2>/dev/null)
stop
skip "the node did not become idle within 30 s (sinfo: '${state:-}'): $log"
