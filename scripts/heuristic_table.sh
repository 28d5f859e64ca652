#!/usr/bin/env bash
# Learned policies against the best heuristic, test accuracy without fine-tuning, on every
# env given at two budgets each: the best heuristic (uniform, global, LAMP, ERK, chosen on
# validation), DDPG and evolution searches, and the graph and meta agents zero-shot and after
# ADAPT adaptation episodes.
#   scripts/heuristic_table.sh [SEEDS]          e.g. scripts/heuristic_table.sh "0 1 2"
# CELLS lists "ENV KEEP" pairs separated by commas (default: the shipped envs and the unseen
# ones under envs/unseen/, two budgets each); EPISODES (default 400) sets the searches'
# episodes, ADAPT (default 40) the adaptation episodes; GNN and META the agent checkpoints;
# METHODS (default "heuristic ddpg evopress gnn meta": evopress is (1 + λ) evolution from
# the best heuristic; also evolution, MetaPruning's population search, and ddpg-heuristic,
# DDPG whose warm-up explores around the best heuristic) what to run; THREADS passes --threads;
# LAUNCH prefixes the searches and transfers (e.g. LAUNCH="mpirun -np 8" with the MPI build).
# Every measurement is one line of runs/heuristic-table/results.jsonl (OUT names another
# folder), kept across calls, so an interrupted table continues where it stopped (an
# interrupted search with search --resume); GATHER=1 only prints the table.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-"0 1 2"}
bin=${BIN:-./target/release/autoprune}
episodes=${EPISODES:-400}
adapt=${ADAPT:-40}
gnn=${GNN:-policies/gnn-fmnist.safetensors}
meta=${META:-policies/meta-fmnist.safetensors}
methods=${METHODS:-"heuristic ddpg evopress gnn meta"}
read -ra launch <<< "${LAUNCH:-}"
threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")
default_cells="envs/fmnist-vgg.toml 0.05,envs/fmnist-vgg.toml 0.1,envs/fmnist-resnet20.toml 0.5,envs/fmnist-resnet20.toml 0.3,envs/mnist-lenet5.toml 0.1,envs/mnist-lenet5.toml 0.05,envs/unseen/fmnist-vgg-wide.toml 0.05,envs/unseen/fmnist-vgg-wide.toml 0.1,envs/unseen/mnist-resnet14.toml 0.5,envs/unseen/mnist-resnet14.toml 0.3,envs/unseen/mnist-mobilenetv2.toml 0.1,envs/unseen/mnist-mobilenetv2.toml 0.2"
out=${OUT:-runs/heuristic-table}
mkdir -p "$out/envs"
results=$out/results.jsonl
touch "$results"

# measured ENV KEEP SEED METHOD -> true when the line is already there
measured() {
    python3 - "$results" "$@" <<'PY'
import json, sys
path, env, keep, seed, method = sys.argv[1:]
for line in open(path):
    r = json.loads(line)
    if (r["env"], r["keep"], str(r["seed"]), r["method"]) == (env, float(keep), seed, method):
        sys.exit(0)
sys.exit(1)
PY
}

# record ENV KEEP SEED METHOD < JSON: appends the result's validation and test accuracy
record() {
    python3 -c '
import json, sys
env, keep, seed, method = sys.argv[1:]
r = json.load(sys.stdin)
val = r.get("accuracy")
row = {"env": env, "keep": float(keep), "seed": int(seed), "method": method,
       "val": val, "test": r["test_accuracy"], "best_from": r.get("best_from")}
if "zero_shot" in r:
    # A transfer: the own zero-shot policy of its agent (the best heuristic is returned when
    # that is better on validation).
    row["agent_val"] = r["zero_shot"]["accuracy"]
    row["agent_test"] = r["zero_shot"]["test_accuracy"]
print(json.dumps(row))
' "$@" >> "$results"
}

IFS=',' read -ra cells <<< "${CELLS:-$default_cells}"
if [ -z "${GATHER:-}" ]; then
for cell in "${cells[@]}"; do
    read -r env keep <<< "$cell"
    name=$(basename "$env" .toml)
    # The env at this budget (the checkpoint is shared with the original).
    budget_env=$out/envs/$name@$keep.toml
    sed -E "s/^(target = \{.*keep = )[0-9.eE-]+/\1$keep/" "$env" > "$budget_env"
    "$bin" evaluate --env "$budget_env" "${threads[@]}" --json > /dev/null
    for seed in $seeds; do
        for method in $methods; do
            case $method in
            heuristic)
                for h in uniform global lamp erk; do
                    measured "$name" "$keep" "$seed" "$h" && continue
                    "$bin" baseline --env "$budget_env" --method "$h" --seed "$seed" "${threads[@]}" --json \
                        | record "$name" "$keep" "$seed" "$h"
                done ;;
            ddpg|ddpg-heuristic|evolution|evopress)
                measured "$name" "$keep" "$seed" "$method" && continue
                config=configs/amc-ddpg.toml
                [ "$method" = ddpg-heuristic ] && config=configs/ddpg-heuristic.toml
                [ "$method" = evolution ] && config=configs/evolution.toml
                [ "$method" = evopress ] && config=configs/evopress.toml
                run=$out/runs/$name@$keep-$method-s$seed
                # A search an earlier call left unfinished continues where it stopped.
                start=(--config "$config" --env "$budget_env" --seed "$seed" --episodes "$episodes" --logdir "$run")
                if [ -s "$run/episodes.jsonl" ]; then
                    start=(--resume "$run")
                else
                    rm -rf "$run"
                fi
                "${launch[@]}" "$bin" search "${start[@]}" "${threads[@]}" --json | record "$name" "$keep" "$seed" "$method" ;;
            gnn|meta)
                agent=$gnn
                [ "$method" = meta ] && agent=$meta
                for n in 0 "$adapt"; do
                    measured "$name" "$keep" "$seed" "$method-$n" && continue
                    run=$out/runs/$name@$keep-$method-$n-s$seed
                    rm -rf "$run"
                    "${launch[@]}" "$bin" transfer --agent "$agent" --env "$budget_env" --seed "$seed" --adapt-episodes "$n" \
                        --logdir "$run" --out "$run.json" "${threads[@]}" --json | record "$name" "$keep" "$seed" "$method-$n"
                done ;;
            esac
        done
    done
done
fi

python3 - "$results" "$adapt" <<'PY'
import json, statistics, sys
from collections import defaultdict
path, adapt = sys.argv[1], sys.argv[2]
runs = defaultdict(lambda: defaultdict(dict))   # (env, keep) -> seed -> method -> record
for line in open(path):
    r = json.loads(line)
    runs[(r["env"], r["keep"])][r["seed"]][r["method"]] = r
columns = ["best heuristic", "ddpg", "ddpg-heuristic", "evolution", "evopress", "gnn-0", f"gnn-{adapt}", "meta-0", f"meta-{adapt}"]
# A column no cell measured is left out (ddpg-heuristic runs only when METHODS names it).
measured = {m for seeds in runs.values() for methods in seeds.values() for m in methods}
columns = [c for c in columns if c == "best heuristic" or c in measured]
def cell(values):
    if not values:
        return "–"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}"
print("| env @ keep | " + " | ".join(columns) + " | seeds |")
print("|---|" + "---|" * (len(columns) + 1))
# The zero-shot agents' own policies (before the better of them and the best heuristic is
# taken) are counted too, not shown as columns.
wins = {c: [0, 0] for c in columns[1:] + [c + " own" for c in ("gnn-0", "meta-0") if c in columns]}
for (env, keep), seeds in sorted(runs.items()):
    values = defaultdict(list)
    for seed, methods in seeds.items():
        heuristics = [methods[h] for h in ("uniform", "global", "lamp", "erk") if h in methods]
        if len(heuristics) == 4:
            best = max(heuristics, key=lambda r: r["val"])
            values["best heuristic"].append(100 * best["test"])
        for c in columns[1:]:
            if c in methods:
                values[c].append(100 * methods[c]["test"])
        for c in ("gnn-0", "meta-0"):
            if c in methods and "agent_test" in methods[c]:
                values[c + " own"].append(100 * methods[c]["agent_test"])
    base = values["best heuristic"]
    for c in list(wins):
        if base and len(values[c]) == len(base):
            # The seeds' spread: the larger of the two columns' standard deviations.
            spread = max(statistics.stdev(base), statistics.stdev(values[c])) if len(base) > 1 else 0.0
            wins[c][0] += statistics.mean(values[c]) > statistics.mean(base) + spread
            wins[c][1] += 1
    print(f"| {env} @ {keep} | " + " | ".join(cell(values[c]) for c in columns) + f" | {len(seeds)} |")
print()
for c, (won, of) in wins.items():
    if of:
        name = c.replace(" own", " (the agent's own policy)")
        print(f"{name}: above the best heuristic by more than the seeds' spread in {won} of {of} cells")
PY
