#!/usr/bin/env bash
# The README's search comparison: test accuracy, mean ± std over seeds, of a search config's
# best policy (selected on validation) beside uniform, global, LAMP, ERK and random at the
# same budget, no fine-tuning.
#   scripts/search_table.sh CONFIG [SEEDS]      e.g. scripts/search_table.sh configs/amc-ddpg.toml "0 1 2"
# Runs go to runs/table-<config>-s<seed>; an existing finished run is reused, so seeds can be
# run in parallel beforehand (e.g. THREADS=1 and one seed per call); a seed's rows are kept in
# its run folder (table.txt). SEARCH_ENV=envs/E.toml swaps in another env (runs go to
# runs/table-<config>-<env>-s<seed>); EPISODES=N overrides the config's episodes (for a quick
# trial); GATHER=1 only gathers the seeds already finished.
set -euo pipefail
cd "$(dirname "$0")/.."
config=$1
seeds=${2:-"0 1 2"}
bin=${BIN:-./target/release/autoprune}
threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")
episodes=()
[ -n "${EPISODES:-}" ] && episodes=(--episodes "$EPISODES")
name=$(basename "$config" .toml)
if [ -n "${SEARCH_ENV:-}" ]; then
    env=$SEARCH_ENV
    name=$name-$(basename "$env" .toml)
    override=(--env "$env")
else
    env=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["env"])' "$config")
    override=()
fi
results=$(mktemp)
for seed in $seeds; do
    run=runs/table-$name-s$seed
    # A seed's rows are kept in its run folder once all of them are measured.
    if [ -s "$run/table.txt" ]; then
        cat "$run/table.txt" >> "$results"
        continue
    fi
    if [ -n "${GATHER:-}" ]; then
        echo "$run: not finished, left out" >&2
        continue
    fi
    if [ ! -f "$run/result.json" ]; then
        if [ -f "$run/episodes.jsonl" ]; then
            "$bin" search --resume "$run" "${threads[@]}" --json > "$results.$seed"
        else
            "$bin" search --config "$config" "${override[@]}" --seed "$seed" "${episodes[@]}" \
                --logdir "$run" "${threads[@]}" --json > "$results.$seed"
        fi
        cp "$results.$seed" "$run/result.json"
    fi
    rows=$(mktemp)
    echo "search $(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["test_accuracy"])' "$run/result.json")" >> "$rows"
    for method in uniform global lamp erk random; do
        "$bin" baseline --env "$env" --method "$method" --seed "$seed" "${threads[@]}" --json \
            | python3 -c 'import json, sys; r = json.load(sys.stdin); print(r["method"], r["test_accuracy"])' >> "$rows"
    done
    cp "$rows" "$run/table.txt"
    cat "$rows" >> "$results"
done
python3 - "$results" "$name" "$env" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    method, acc = line.split()
    rows.setdefault(method, []).append(100 * float(acc))
if not rows:
    sys.exit("no finished seed yet")
print(f"{sys.argv[2]} on {sys.argv[3]}: test accuracy (%), mean ± std over {len(rows['search'])} seeds")
print()
print("| method | test accuracy |")
print("|---|---|")
for method, accs in rows.items():
    std = statistics.stdev(accs) if len(accs) > 1 else 0.0
    label = "search (best on validation)" if method == "search" else method
    print(f"| {label} | {statistics.mean(accs):.2f} ± {std:.2f} |")
PY
