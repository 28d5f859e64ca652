#!/usr/bin/env bash
# The README's baseline table: test accuracy of uniform, global, LAMP, ERK and random at
# keep 0.10 / 0.05 / 0.02 of params (unstructured) and 0.5 of FLOPs (channel), without
# fine-tuning and after a fixed short masked fine-tune, for each env given.
#   scripts/baseline_table.sh [ENV...]        (default: envs/fmnist-vgg.toml envs/fmnist-resnet20.toml)
# FINETUNE_STEPS (default 100) sets the fine-tune; BIN the binary; extra flags go in ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-./target/release/autoprune}
steps=${FINETUNE_STEPS:-100}
envs=("$@")
[ ${#envs[@]} -eq 0 ] && envs=(envs/fmnist-vgg.toml envs/fmnist-resnet20.toml)
settings=("unstructured params 0.10" "unstructured params 0.05" "unstructured params 0.02" "channel flops 0.5")
for env in "${envs[@]}"; do
    # Pretrain once up front if needed, so its log does not land inside the table.
    "$bin" evaluate --env "$env" --json ${ARGS:-} >/dev/null
    echo "### $(basename "$env" .toml): test accuracy (%), no fine-tune / after $steps masked fine-tune steps"
    echo
    header="| method |"; rule="|---|"
    for s in "${settings[@]}"; do set -- $s; header+=" $1 $2 $3 |"; rule+="---|"; done
    echo "$header"; echo "$rule"
    for method in uniform global lamp erk random; do
        row="| $method |"
        for s in "${settings[@]}"; do
            set -- $s
            cell=""
            for ft in 0 "$steps"; do
                acc=$("$bin" baseline --env "$env" --method "$method" --granularity "$1" --metric "$2" --keep "$3" \
                      --finetune-steps "$ft" --json ${ARGS:-} | python3 -c 'import json, sys; r = json.load(sys.stdin); print("%.2f" % (100 * r["test_accuracy"]))')
                cell+="${cell:+ / }$acc"
            done
            row+=" $cell |"
        done
        echo "$row"
    done
    echo
done
echo "machine: $(nproc) cores, $(uname -m), $(date -u +%Y-%m-%d)"
