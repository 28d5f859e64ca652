#!/usr/bin/env bash
# The README's fine-tuning tables: does a learned allocation still win after full
# fine-tuning, and does iterative pruning beat one-shot at the same budget?
#   scripts/finetune_table.sh [SEEDS]      e.g. scripts/finetune_table.sh "0 1 2"
# Settings: fmnist-vgg unstructured at keep 0.02 of params ("vgg") and fmnist-resnet20
# channel pruning at 0.3 of FLOPs ("r20"); SETTINGS="vgg r20" (default) picks them.
# Per setting and seed: uniform, LAMP and ERK (`baseline`), and the searches of AGENTS
# (default "ddpg evolution gnn diffsparse", configs/amc-ddpg.toml, evolution.toml, gnn.toml,
# diffsparse.toml on the setting's env, EPISODES=N episodes, default 100), each policy then
# fine-tuned by `autoprune finetune` for FT_EPOCHS epochs (default 1) at FT_LR (default 0.01,
# the env's SGD and cosine schedule), and LAMP's policy also pruned in STAGES stages
# (default 4) within the same steps. Test accuracy is reported; policies are selected on
# validation. THREADS=N; GATHER=1 only tabulates. Runs go to runs/finetune-table/; finished
# pieces are reused.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-"0 1 2"}
bin=${BIN:-./target/release/autoprune}
root=runs/finetune-table
settings=${SETTINGS-"vgg r20"}
agents=${AGENTS-"ddpg evolution gnn diffsparse"}
episodes=${EPISODES:-100}
ft_epochs=${FT_EPOCHS:-1}
ft_lr=${FT_LR:-0.01}
stages=${STAGES:-4}
threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")
mkdir -p "$root/envs"
env_of() { # the setting's env file
    local file=$root/envs/$1.toml
    case $1 in
        vgg) sed 's/^target = .*/target = { metric = "params", keep = 0.02 }/' envs/fmnist-vgg.toml > "$file" ;;
        r20) sed 's/^target = .*/target = { metric = "flops", keep = 0.3 }/' envs/fmnist-resnet20.toml > "$file" ;;
        *) echo "unknown setting $1 (vgg or r20)" >&2; exit 2 ;;
    esac
    echo "$file"
}
config_of() {
    case $1 in
        ddpg) echo configs/amc-ddpg.toml ;;
        *) echo "configs/$1.toml" ;;
    esac
}
once() { # once OUT CMD...: runs CMD (JSON on stdout) into OUT unless OUT exists
    local out=$1; shift
    [ -s "$out" ] && return 0
    "$@" > "$out.tmp" && mv "$out.tmp" "$out"
}
finetune() { # finetune NAME POLICY SEED [STAGES]: into $root/NAME-ft (a search's own folder is $root/NAME)
    local run=$root/$1-ft
    local args=(--env "$env" --policy "$2" --seed "$3" --epochs "$ft_epochs" --lr "$ft_lr" --stages "${4:-1}" --logdir "$run")
    [ -f "$run/finetune.json" ] && args=(--resume "$run")
    once "$run.json" "$bin" finetune "${args[@]}" "${threads[@]}" --json
}

if [ -z "${GATHER:-}" ]; then
    for setting in $settings; do
        env=$(env_of "$setting")
        for seed in $seeds; do
            for m in uniform lamp erk; do
                p=$root/$setting-$m-s$seed
                once "$p.baseline.json" "$bin" baseline --env "$env" --method "$m" --seed "$seed" \
                    --out "$p.policy.json" "${threads[@]}" --json
                finetune "$setting-$m-s$seed" "$p.policy.json" "$seed"
            done
            finetune "$setting-lamp-iterative-s$seed" "$root/$setting-lamp-s$seed.policy.json" "$seed" "$stages"
            for a in $agents; do
                p=$root/$setting-$a-s$seed
                if [ ! -s "$p.search.json" ]; then
                    resume=(--config "$(config_of "$a")" --env "$env" --seed "$seed" --episodes "$episodes" --logdir "$p")
                    [ -f "$p/episodes.jsonl" ] && resume=(--resume "$p")
                    once "$p.search.json" "$bin" search "${resume[@]}" --out "$p.policy.json" "${threads[@]}" --json
                fi
                finetune "$setting-$a-s$seed" "$p.policy.json" "$seed"
            done
        done
    done
fi

python3 - "$root" "$settings" "$agents" "$seeds" "$stages" <<'PY'
import json, os, statistics, sys
root, settings, agents, seeds, stages = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4].split(), sys.argv[5]
def read(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return None
def cell(values):
    values = [100 * v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f} (1)"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} ({len(values)})"
names = {"uniform": "uniform", "lamp": "LAMP", "erk": "ERK", "ddpg": "DDPG", "evolution": "evolution",
         "gnn": "graph agent", "diffsparse": "diffsparse", "lamp-iterative": f"LAMP, iterative ({stages} stages)"}
for setting in settings:
    title = {"vgg": "fmnist-vgg, unstructured, keep 0.02 of params", "r20": "fmnist-resnet20, channel, 0.3 of FLOPs"}[setting]
    print(f"\n#### {title}: test accuracy (%), mean ± std (seeds)\n")
    print("| method | no fine-tuning | after fine-tuning | validation after fine-tuning |")
    print("|---|---|---|---|")
    for m in ["uniform", "lamp", "erk", "lamp-iterative"] + agents:
        before, after, val = [], [], []
        for s in seeds:
            source = f"{root}/{setting}-{m}-s{s}.baseline.json" if m in ("uniform", "lamp", "erk") else f"{root}/{setting}-{m}-s{s}.search.json"
            b = read(source)
            if b and m != "lamp-iterative":
                before.append(b["test_accuracy"])
            t = read(f"{root}/{setting}-{m}-s{s}-ft.json")
            if t:
                after.append(t["test_accuracy"])
                val.append(t["accuracy"])
        print(f"| {names.get(m, m)} | {cell(before) if m != 'lamp-iterative' else '–'} | {cell(after)} | {cell(val)} |")
PY
