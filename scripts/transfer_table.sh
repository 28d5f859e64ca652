#!/usr/bin/env bash
# Zero-shot transfer of the graph agent to models it never saw: test accuracy, mean ± std over
# seeds, of the agent trained by configs/gnn-train.toml (Fashion-MNIST VGG and ResNet-20)
# applied to fmnist-vgg7, fmnist-mobilenetv2 and mnist-lenet5 at each env's own budget,
# zero-shot and after ADAPT adaptation episodes, beside uniform, LAMP and DDPG searched from
# scratch on that model (configs/amc-ddpg.toml with the env swapped in, 400 episodes, run by
# scripts/search_table.sh into runs/table-amc-ddpg-<env>-s<seed>).
#   scripts/transfer_table.sh [SEEDS] [ADAPT]     e.g. scripts/transfer_table.sh "0 1 2" 40
# Every measured accuracy is kept in runs/transfer-table/ and reused, so seeds can be run in
# parallel beforehand (one seed per call) and a last call with all seeds prints the table.
# THREADS=N passes --threads N; EPISODES=N and TRAIN_EPISODES=N shorten the DDPG searches and
# the agent's training (for a quick trial); SKIP_DDPG=1 leaves the DDPG column out (to run
# those searches as separate jobs); GATHER=1 only gathers what is already measured.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-"0 1 2"}
adapt=${2:-40}
bin=${BIN:-./target/release/autoprune}
threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")
episodes=()
[ -n "${EPISODES:-}" ] && episodes=(--episodes "$EPISODES")
train_episodes=()
[ -n "${TRAIN_EPISODES:-}" ] && train_episodes=(--episodes "$TRAIN_EPISODES")
envs="envs/fmnist-vgg7.toml envs/fmnist-mobilenetv2.toml envs/mnist-lenet5.toml"
cache=runs/transfer-table
mkdir -p "$cache"
results=$(mktemp)
source scripts/measure.sh
for seed in $seeds; do
    agent=runs/gnn-train-s$seed/agent.safetensors
    if [ ! -f "$agent" ] && [ -z "${GATHER:-}" ]; then
        rm -rf "runs/gnn-train-s$seed"
        "$bin" train-agent --config configs/gnn-train.toml --seed "$seed" "${train_episodes[@]}" \
            --logdir "runs/gnn-train-s$seed" "${threads[@]}" --json > /dev/null
    fi
    for env in $envs; do
        name=$(basename "$env" .toml)
        # The agent's own zero-shot policy (transfer returns the best heuristic instead when
        # that is better on validation).
        acc=$(FIELD=zero_shot.test_accuracy measure "$name.zero-shot.s$seed" "$bin" transfer --agent "$agent" --env "$env" \
            --seed "$seed" "${threads[@]}" --out "runs/transfer-$name-s$seed.json" --json) \
            && echo "$name zero-shot $acc" >> "$results"
        if [ "$adapt" -gt 0 ]; then
            [ -s "$cache/$name.+$adapt-episodes.s$seed" ] || rm -rf "runs/transfer-$name-a$adapt-s$seed"
            acc=$(measure "$name.+$adapt-episodes.s$seed" "$bin" transfer --agent "$agent" \
                --env "$env" --seed "$seed" "${threads[@]}" --adapt-episodes "$adapt" \
                --eval-samples 2000 --logdir "runs/transfer-$name-a$adapt-s$seed" --json) \
                && echo "$name +$adapt-episodes $acc" >> "$results"
        fi
        for method in uniform lamp; do
            acc=$(measure "$name.$method.s$seed" "$bin" baseline --env "$env" \
                --method "$method" --seed "$seed" "${threads[@]}" --json) \
                && echo "$name $method $acc" >> "$results"
        done
        [ -n "${SKIP_DDPG:-}" ] && continue
        run=runs/table-amc-ddpg-$name-s$seed
        [ -f "$run/result.json" ] || [ -n "${GATHER:-}" ] \
            || SEARCH_ENV=$env scripts/search_table.sh configs/amc-ddpg.toml "$seed" > /dev/null
        [ -f "$run/result.json" ] \
            && echo "$name ddpg-from-scratch $(field test_accuracy < "$run/result.json")" >> "$results"
    done
done
python3 - "$results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    env, method, acc = line.split()
    rows.setdefault(env, {}).setdefault(method, []).append(100 * float(acc))
if not rows:
    sys.exit("nothing measured yet")
methods = []
for by in rows.values():
    methods += [m for m in by if m not in methods]
seeds = max(len(a) for by in rows.values() for a in by.values())
print(f"test accuracy (%), mean ± std over {seeds} seeds (fewer where a cell says n=)")
print()
print("| env | " + " | ".join(methods) + " |")
print("|---|" + "---|" * len(methods))
for env, by in rows.items():
    cells = []
    for m in methods:
        accs = by.get(m, [])
        if not accs:
            cells.append("–")
            continue
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        n = "" if len(accs) == seeds else f" (n={len(accs)})"
        cells.append(f"{statistics.mean(accs):.2f} ± {std:.2f}{n}")
    print(f"| {env} | " + " | ".join(cells) + " |")
PY
