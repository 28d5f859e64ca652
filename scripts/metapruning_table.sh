#!/usr/bin/env bash
# The README's MetaPruning comparison on fmnist-resnet20 (channel pruning to 0.5 of the
# FLOPs): test accuracy, mean ± std over seeds, of each method's policy after the same
# fine-tune budget (FINETUNE masked SGD steps of batch 128, default 100, as in the baseline table), and without it.
#   MetaPruning: `autoprune search --config configs/metapruning-resnet20.toml`, whose winner
#     starts from the PruningNet's weights (`apply --pruningnet`); its policy is also
#     fine-tuned from the pretrained weights, to tell the architecture from the weights;
#   DDPG: the best policy of configs/amc-ddpg-resnet20.toml (the run scripts/search_table.sh
#     leaves in runs/table-amc-ddpg-resnet20-s<seed>, searched here if missing), from the
#     pretrained weights;
#   uniform and LAMP: `autoprune baseline`, from the pretrained weights.
#   scripts/metapruning_table.sh [SEEDS]      e.g. scripts/metapruning_table.sh "0 1 2"
# Every measured accuracy is kept in runs/metapruning-table/ and reused, so seeds can run in
# parallel beforehand (one seed per call, THREADS=1) and a last call prints the table.
# GATHER=1 only gathers what is measured; SKIP_DDPG=1 leaves out the seeds whose DDPG search
# is not finished instead of running it (400 episodes: about an hour per seed on a CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-"0 1 2"}
finetune=${FINETUNE:-100}
bin=${BIN:-./target/release/autoprune}
env=envs/fmnist-resnet20.toml
threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")
cache=runs/metapruning-table
mkdir -p "$cache"
results=$(mktemp)
source scripts/measure.sh
# search CONFIG RUN SEED: a finished search in RUN (resumed or started as needed).
search() {
    if [ ! -f "$2/result.json" ]; then
        [ -n "${GATHER:-}" ] && return 1
        if [ -f "$2/episodes.jsonl" ]; then
            "$bin" search --resume "$2" "${threads[@]}" --json > "$2.json.tmp"
        else
            "$bin" search --config "$1" --seed "$3" --logdir "$2" "${threads[@]}" --json > "$2.json.tmp"
        fi
        mv "$2.json.tmp" "$2/result.json"
    fi
}
for seed in $seeds; do
    mp=runs/table-metapruning-resnet20-s$seed
    if search configs/metapruning-resnet20.toml "$mp" "$seed"; then
        echo "MetaPruning none $(field test_accuracy < "$mp/result.json")" >> "$results"
        acc=$(measure "metapruning-ft.s$seed" "$bin" apply --env "$env" --policy "$mp/policy.json" \
            --pruningnet "$mp/pruningnet.safetensors" --finetune-steps "$finetune" \
            --seed "$seed" "${threads[@]}" --json) && echo "MetaPruning ft $acc" >> "$results"
        # The same policy from the pretrained weights: the architecture without the weights.
        acc=$(measure "metapruning-policy-pretrained-ft.s$seed" "$bin" apply --env "$env" \
            --policy "$mp/policy.json" --finetune-steps "$finetune" --seed "$seed" \
            "${threads[@]}" --json) && echo "MetaPruning-policy ft $acc" >> "$results"
    fi
    ddpg=runs/table-amc-ddpg-resnet20-s$seed
    if [ -n "${SKIP_DDPG:-}" ] && [ ! -f "$ddpg/result.json" ]; then
        echo "$ddpg: not finished, DDPG left out for seed $seed" >&2
    elif search configs/amc-ddpg-resnet20.toml "$ddpg" "$seed"; then
        echo "DDPG none $(field test_accuracy < "$ddpg/result.json")" >> "$results"
        acc=$(measure "ddpg-ft.s$seed" "$bin" apply --env "$env" --policy "$ddpg/policy.json" \
            --finetune-steps "$finetune" --seed "$seed" "${threads[@]}" --json) \
            && echo "DDPG ft $acc" >> "$results"
    fi
    for method in uniform lamp; do
        for steps in 0 "$finetune"; do
            tag=$([ "$steps" = 0 ] && echo none || echo ft)
            acc=$(measure "$method-$tag.s$seed" "$bin" baseline --env "$env" --method "$method" \
                --finetune-steps "$steps" --seed "$seed" "${threads[@]}" --json) \
                && echo "$method $tag $acc" >> "$results"
        done
    done
done
python3 - "$results" "$finetune" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    method, tag, acc = line.split()
    rows.setdefault(method, {}).setdefault(tag, []).append(100 * float(acc))
def cell(values):
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {sd:.2f} ({len(values)})"
print(f"| method | after {sys.argv[2]} fine-tune steps | no fine-tune |")
print("|---|---|---|")
names = {"lamp": "LAMP", "MetaPruning-policy": "MetaPruning's policy, pretrained weights"}
for method in ["MetaPruning", "MetaPruning-policy", "DDPG", "uniform", "lamp"]:
    if method in rows:
        name = names.get(method, method)
        print(f"| {name} | {cell(rows[method].get('ft', []))} | {cell(rows[method].get('none', []))} |")
PY
rm -f "$results"
