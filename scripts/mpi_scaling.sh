#!/usr/bin/env bash
# Episodes per minute of one search with one process and with MPI jobs of several ranks, side
# by side in one run, and whether every job wrote the same log as the single process.
#   scripts/mpi_scaling.sh                 (RANKS="2 3", CONFIG, ENV, EPISODES, THREADS)
# Each rank uses THREADS libtorch threads (default 1), so a job of N ranks has N-1 workers
# scoring; rank 0 runs the agent. Needs the MPI build (`make setup`) and mpirun.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-./target/release/autoprune}
config=${CONFIG:-configs/evolution.toml}
env=${ENV:-envs/fmnist-vgg.toml}
episodes=${EPISODES:-48}
threads=${THREADS:-1}
ranks=${RANKS:-"2 3"}
out=runs/mpi-scaling
rm -rf "$out"
mkdir -p "$out"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

search() {  # search LAUNCH... -- LOGDIR
    local logdir=$1; shift
    local started=$(date +%s.%N)
    "$@" "$bin" search --config "$config" --env "$env" --episodes "$episodes" --threads "$threads" \
        --logdir "$logdir" --json > "$logdir.json" 2> "$logdir.err"
    python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$started" "$(date +%s.%N)"
}

echo "| processes | workers scoring | seconds | episodes per minute | speedup | same log as 1 process |"
echo "|---|---|---|---|---|---|"
one=$(search "$out/np1" env)
python3 - "$one" "$episodes" <<'PY'
import sys
s, n = float(sys.argv[1]), int(sys.argv[2])
print(f"| 1 | 1 (itself) | {s:.1f} | {60 * n / s:.1f} | 1.00 | – |")
PY
for n in $ranks; do
    t=$(search "$out/np$n" mpirun --oversubscribe -np "$n")
    python3 - "$one" "$t" "$episodes" "$n" "$out/np1" "$out/np$n" <<'PY'
import json, sys
one, t, episodes, n = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def log(d):
    keep = ("episode", "keeps", "reward", "accuracy", "whole_split", "heuristic")
    return [{k: r.get(k) for k in keep} for r in map(json.loads, open(f"{d}/episodes.jsonl"))]
same = "yes" if log(sys.argv[5]) == log(sys.argv[6]) else "NO"
print(f"| {n} | {n - 1} | {t:.1f} | {60 * episodes / t:.1f} | {one / t:.2f} | {same} |")
PY
done
