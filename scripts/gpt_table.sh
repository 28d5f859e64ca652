#!/usr/bin/env bash
# The README's transformer table: shakespeare-gpt, heads and MLP neurons pruned to half the
# FLOPs. For each seed, DDPG, evolution and the graph agent search a policy (configs/gpt-*.toml,
# selected on validation windows), and uniform and LAMP allocate one; every policy's test
# perplexity is measured with no fine-tuning and after FT masked fine-tuning steps (Adam at a
# tenth of the pretraining rate, the env's batch size).
#   scripts/gpt_table.sh [SEEDS]        e.g. scripts/gpt_table.sh "0 1 2"
# Runs go to runs/gpt-table/<method>-s<seed>; finished pieces are reused, so seeds can run
# side by side beforehand (THREADS=1, one seed per call). EPISODES=N overrides the searches'
# episodes, FT=N the fine-tuning steps (default 200), ENV=envs/E.toml the env; GATHER=1 only
# tabulates what is finished.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-"0 1 2"}
bin=${BIN:-./target/release/autoprune}
env=${ENV:-envs/shakespeare-gpt.toml}
ft=${FT:-200}
threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")
episodes=()
[ -n "${EPISODES:-}" ] && episodes=(--episodes "$EPISODES")
root=runs/gpt-table-$(basename "$env" .toml)
perplexity() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["test_perplexity"])' "$1"; }

if [ -z "${GATHER:-}" ]; then
    for seed in $seeds; do
        for method in ddpg evolution gnn uniform lamp; do
            run=$root/$method-s$seed
            mkdir -p "$run"
            if [ ! -s "$run/score.json" ]; then
                case $method in
                    uniform | lamp)
                        "$bin" baseline --env "$env" --method "$method" --seed "$seed" \
                            --out "$run/policy.json" "${threads[@]}" --json > "$run/score.json.tmp" ;;
                    *)
                        resume=()
                        [ -f "$run/search/episodes.jsonl" ] && resume=(--resume "$run/search")
                        if [ ${#resume[@]} -gt 0 ]; then
                            "$bin" search "${resume[@]}" --out "$run/policy.json" "${threads[@]}" \
                                --json > "$run/score.json.tmp"
                        else
                            "$bin" search --config "configs/gpt-$method.toml" --env "$env" \
                                --seed "$seed" "${episodes[@]}" --logdir "$run/search" \
                                --out "$run/policy.json" "${threads[@]}" --json > "$run/score.json.tmp"
                        fi ;;
                esac
                mv "$run/score.json.tmp" "$run/score.json"
            fi
            if [ ! -s "$run/finetuned.json" ]; then
                "$bin" apply --env "$env" --policy "$run/policy.json" --finetune-steps "$ft" \
                    --seed "$seed" "${threads[@]}" --json > "$run/finetuned.json.tmp"
                mv "$run/finetuned.json.tmp" "$run/finetuned.json"
            fi
        done
    done
fi

rows=$(mktemp)
for run in "$root"/*-s*; do
    [ -s "$run/finetuned.json" ] || continue
    method=$(basename "$run" | sed 's/-s[0-9]*$//')
    echo "$method $(perplexity "$run/score.json") $(perplexity "$run/finetuned.json")" >> "$rows"
done
python3 - "$rows" "$env" "$ft" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    method, raw, tuned = line.split()
    rows.setdefault(method, []).append((float(raw), float(tuned)))
if not rows:
    sys.exit("no finished run yet")
def cell(values):
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}"
print(f"{sys.argv[2]}: test perplexity per byte, mean ± std over seeds")
print()
print(f"| method | seeds | no fine-tuning | after {sys.argv[3]} steps |")
print("|---|---|---|---|")
labels = {"ddpg": "DDPG", "evolution": "evolution", "gnn": "graph agent", "uniform": "uniform", "lamp": "LAMP"}
for method in ["ddpg", "evolution", "gnn", "uniform", "lamp"]:
    if method in rows:
        raw = [r for r, _ in rows[method]]
        tuned = [t for _, t in rows[method]]
        print(f"| {labels[method]} | {len(raw)} | {cell(raw)} | {cell(tuned)} |")
PY
