#!/usr/bin/env bash
# Install and start a real single-node SLURM cluster (Debian's slurmctld + slurmd + munge) on this
# machine, for the sweep tests (tests/test_slurm*.py). Root, Debian 12, no systemd: the daemons are
# started directly. Idempotent: when the cluster is already up with the same slurm.conf, it only
# checks that the node is idle; when slurm.conf changed (other host name, CPU count...), it restarts.
#
#   bash .ci/slurm/start.sh          # install if needed, start, wait for the node to be idle
#   SLURM_START_TIMEOUT=90 bash .ci/slurm/start.sh
#
# Stop it with .ci/slurm/stop.sh. Logs: /var/log/slurm/{slurmctld,slurmd}.log, /var/log/munge/munged.log.
set -euo pipefail

TIMEOUT="${SLURM_START_TIMEOUT:-60}"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd

log() { echo "[slurm-start] $*" >&2; }

die() {
  log "ERROR: $*"
  for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" /var/log/munge/munged.log; do
    if [[ -f "$f" ]]; then log "---- last lines of $f"; tail -n 30 "$f" >&2; fi
  done
  exit 1
}

# ------------------------------------------------------------------ install
need_install=0
for bin in slurmctld slurmd munged sinfo srun sbatch scontrol; do
  command -v "$bin" >/dev/null 2>&1 || [[ -x "/usr/sbin/$bin" ]] || need_install=1
done
if [[ $need_install == 1 ]]; then
  [[ $(id -u) == 0 ]] || die "SLURM is not installed and this is not root: cannot apt-get install"
  log "installing slurmctld slurmd munge slurm-client from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/tmp/slurm-apt-update.log 2>&1 || { cat /tmp/slurm-apt-update.log >&2; die "apt-get update failed"; }
  apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge \
    >/tmp/slurm-apt-install.log 2>&1 || { tail -n 40 /tmp/slurm-apt-install.log >&2; die "apt-get install failed"; }
fi
export PATH="$PATH:/usr/sbin"

# ------------------------------------------------------------------ munge
mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
chmod 0755 /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
  log "creating /etc/munge/munge.key"
  if command -v mungekey >/dev/null 2>&1; then
    mungekey --create --keyfile=/etc/munge/munge.key --force
  else
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key

if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "starting munged"
  rm -f /run/munge/munged.pid /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
  runuser -u munge -- /usr/sbin/munged || die "munged did not start"
  for _ in $(seq 1 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
  munge -n | unmunge >/dev/null 2>&1 || die "munge credentials do not round-trip"
fi

# ------------------------------------------------------------------ slurm.conf
host="$(hostname -s)"
# `slurmd -C` prints this machine's real node line (CPUs, sockets, cores, threads, RealMemory)
node_line="$(slurmd -C | head -n 1)"
[[ $node_line == NodeName=* ]] || die "unexpected 'slurmd -C' output: $node_line"
node_line="NodeName=$host ${node_line#NodeName=* }"   # use the short host name slurmctld will look up
getent hosts "$host" >/dev/null 2>&1 || die "host name '$host' does not resolve (add it to /etc/hosts)"

mkdir -p "$CONF_DIR" "$LOG_DIR" "$RUN_DIR" "$STATE_DIR" "$SPOOL_DIR"
new_conf="$(mktemp)"
cat >"$new_conf" <<CONF
# Written by .ci/slurm/start.sh: a single-node SLURM for tests. Do not edit by hand.
ClusterName=distill-ci
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# job credentials live 30 s (default 120): also how long a requeued job waits before it restarts
AuthInfo=cred_expire=30
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
SchedulerType=sched/backfill
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
MinJobAge=300
Waittime=0
$node_line State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF

# a pid file names a live daemon only if that pid still runs that program (pids are reused after a kill)
pid_alive() {
  local pid
  [[ -f "$1" ]] || return 1
  pid="$(cat "$1" 2>/dev/null)"
  [[ "$pid" =~ ^[0-9]+$ ]] && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$(basename "$1" .pid)" ]] \
    && ! grep -qE '^State:[[:space:]]+[ZX]' "/proc/$pid/status" 2>/dev/null   # a killed daemon may linger as a zombie
}

conf_changed=1
if [[ -f "$CONF" ]] && cmp -s "$new_conf" "$CONF"; then conf_changed=0; fi
if [[ $conf_changed == 1 ]]; then
  if pid_alive "$RUN_DIR/slurmctld.pid" || pid_alive "$RUN_DIR/slurmd.pid"; then
    log "slurm.conf changed: restarting the daemons"
    bash "$(dirname "$0")/stop.sh"
  fi
  cp "$new_conf" "$CONF"
  chmod 0644 "$CONF"
fi
rm -f "$new_conf"

# ------------------------------------------------------------------ daemons
if ! pid_alive "$RUN_DIR/slurmctld.pid"; then
  log "starting slurmctld"
  /usr/sbin/slurmctld -f "$CONF" || die "slurmctld did not start"
fi
if ! pid_alive "$RUN_DIR/slurmd.pid"; then
  log "starting slurmd"
  /usr/sbin/slurmd -f "$CONF" || die "slurmd did not start"
fi

# ------------------------------------------------------------------ wait for the node
deadline=$((SECONDS + TIMEOUT))
state=""
resumed=0
while ((SECONDS < deadline)); do
  for d in slurmctld slurmd; do pid_alive "$RUN_DIR/$d.pid" || die "$d exited"; done
  state="$(sinfo -h -n "$host" -o '%T' 2>/dev/null | head -n 1 || true)"
  case "$state" in
    idle|mixed|allocated|completing) log "node $host is $state; SLURM is up ($(sinfo -V))"; exit 0 ;;
    drained|draining|down*|fail*)
      if [[ $resumed == 0 ]]; then
        log "node $host is $state: resuming it"
        scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true
        resumed=1
      fi ;;
  esac
  sleep 1
done
sinfo -N -l >&2 || true
die "node $host not idle after ${TIMEOUT}s (last state: '${state:-sinfo failed}')"
