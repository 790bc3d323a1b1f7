#!/usr/bin/env bash
# Scheduler capacity on a larger machine (e.g. a lent 16-core accelerator host).
#
# Runs, in about 8 minutes, the three measurements of docs/capacity.md with the load
# generators spread over more cores than a 2-core VM has:
#   1. the hot path: the scheduler's own CPU per request (in-process replay, no sockets);
#   2. the split: each role's CPU per request for 1, 2, 4 and 8 model shards (simulator);
#   3. the live ramp: the highest Poisson rate the scheduler sustains with decision lag
#      p99 <= 1 ms, 64 models on 256 emulated GPUs (4 worker processes, 4 feeders), as
#      one process and split into a matcher and 2 and 4 shard processes.
# Every result is written as JSON (and the console log) under OUT_DIR (default: $OUT when
# the device tool sets it, else results/capacity-<host>). Needs the project's .venv
# (carry it to the device machine: it has no network).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT_DIR=${OUT_DIR:-${OUT:-results/capacity-$(hostname)}}
mkdir -p "$OUT_DIR"
{
  echo "host $(hostname), $(nproc) cores, $(uname -m), $($PY -V 2>&1), load $(cut -d' ' -f1-3 /proc/loadavg)"
  for rate in 20000 80000 160000; do
    timeout 120 "$PY" -m bench.capacity --hot-path "$rate" --hot-path-s 3 \
      --json "$OUT_DIR/hot-path-$rate.json"
  done
  timeout 240 "$PY" -m bench.capacity --roles 160000 --hot-path-s 2 --shards 1 2 4 8 \
    --json "$OUT_DIR/roles.json"
  timeout 420 "$PY" -m bench.capacity --shards 1 2 4 --worker-procs 4 --feeders 4 \
    --start-rps 4000 --factor 1.5 --step-s 3 --max-rps 300000 \
    --json "$OUT_DIR/live.json"
} 2>&1 | tee "$OUT_DIR/capacity.log"
