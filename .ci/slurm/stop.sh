#!/usr/bin/env bash
# Stop the single-node SLURM that .ci/slurm/start.sh started (by pid file; munged is left running).
set -uo pipefail
RUN_DIR=/run/slurm
for d in slurmd slurmctld; do
  pidfile="$RUN_DIR/$d.pid"
  if [[ -f "$pidfile" ]] && [[ "$(cat "/proc/$(cat "$pidfile")/comm" 2>/dev/null)" == "$d" ]] \
    && ! grep -qE '^State:[[:space:]]+[ZX]' "/proc/$(cat "$pidfile")/status" 2>/dev/null; then
    pid="$(cat "$pidfile")"
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    echo "[slurm-stop] stopped $d ($pid)" >&2
  fi
  rm -f "$pidfile"
done
