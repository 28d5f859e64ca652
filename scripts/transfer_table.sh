#!/usr/bin/env bash
# Zero-shot transfer of the graph agent to models it never saw: test accuracy, mean ± std over
# seeds, of the agent trained by configs/gnn-train.toml (Fashion-MNIST VGG and ResNet-20)
# applied to fmnist-vgg7, fmnist-mobilenetv2 and mnist-lenet5 at each env's own budget,
# zero-shot and after ADAPT adaptation episodes, beside uniform and LAMP at the same budget.
#   scripts/transfer_table.sh [SEEDS] [ADAPT]     e.g. scripts/transfer_table.sh "0 1 2" 40
# Trained agents go to runs/gnn-train-s<seed> and are reused when present.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-"0 1 2"}
adapt=${2:-40}
bin=${BIN:-./target/release/autoprune}
threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")
envs="envs/fmnist-vgg7.toml envs/fmnist-mobilenetv2.toml envs/mnist-lenet5.toml"
results=$(mktemp)
field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
for seed in $seeds; do
    agent=runs/gnn-train-s$seed/agent.safetensors
    if [ ! -f "$agent" ]; then
        "$bin" train-agent --config configs/gnn-train.toml --seed "$seed" \
            --logdir "runs/gnn-train-s$seed" "${threads[@]}" --json > /dev/null
    fi
    for env in $envs; do
        name=$(basename "$env" .toml)
        acc=$("$bin" transfer --agent "$agent" --env "$env" --seed "$seed" "${threads[@]}" \
            --out "runs/transfer-$name-s$seed.json" --json | field test_accuracy)
        echo "$name zero-shot $acc" >> "$results"
        if [ "$adapt" -gt 0 ]; then
            acc=$("$bin" transfer --agent "$agent" --env "$env" --seed "$seed" "${threads[@]}" \
                --adapt-episodes "$adapt" --eval-samples 2000 \
                --logdir "runs/transfer-$name-a$adapt-s$seed" --json | field test_accuracy)
            echo "$name +$adapt-episodes $acc" >> "$results"
        fi
        for method in uniform lamp; do
            acc=$("$bin" baseline --env "$env" --method "$method" --seed "$seed" "${threads[@]}" --json \
                | field test_accuracy)
            echo "$name $method $acc" >> "$results"
        done
    done
done
python3 - "$results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    env, method, acc = line.split()
    rows.setdefault(env, {}).setdefault(method, []).append(100 * float(acc))
methods = list(next(iter(rows.values())).keys())
print("test accuracy (%), mean ± std over seeds")
print()
print("| env | " + " | ".join(methods) + " |")
print("|---|" + "---|" * len(methods))
for env, by in rows.items():
    cells = []
    for m in methods:
        accs = by[m]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        cells.append(f"{statistics.mean(accs):.2f} ± {std:.2f}")
    print(f"| {env} | " + " | ".join(cells) + " |")
PY
