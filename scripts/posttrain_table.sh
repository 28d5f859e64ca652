#!/usr/bin/env bash
# The README's post-training table: shakespeare-gpt pruned after training (unstructured, Wanda
# on 128 calibration windows), test perplexity. At each sparsity S: dense; uniform, global
# magnitude, LAMP, ERK, OWL and AlphaPruning allocations; DDPG, evolution (MetaPruning's
# population and EvoPress's (1 + λ)) and the graph agent searching the per-layer ratios
# (configs/posttrain-*.toml, selected on validation windows, starting from the best of those
# allocators). At 70% also SparseGPT for uniform, ERK, OWL and the best learned policy (by
# validation perplexity); 2:4 with Wanda and SparseGPT. SPARSEGPT_SEARCH=1 adds the (1 + λ)
# search scoring with SparseGPT at 70%.
#   scripts/posttrain_table.sh [SEEDS]      e.g. scripts/posttrain_table.sh "0 1 2"
# SPARSITIES="0.5 0.6 0.7" (default; empty for none) chooses the sparsities of the searches
# (allocators always run at all three); AGENTS="ddpg evolution evopress gnn" (default; empty
# for none) the searches; SEARCHES_ONLY=1 skips the allocators (for a second instance running
# other seeds side by side); EPISODES=N overrides the searches' episodes; THREADS=N; GATHER=1 only
# tabulates. Runs go to runs/posttrain-table/; finished pieces are reused.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-"0 1 2"}
bin=${BIN:-./target/release/autoprune}
env=envs/shakespeare-gpt-wanda.toml
root=runs/posttrain-table
sparsities=${SPARSITIES-"0.5 0.6 0.7"}
agents=${AGENTS-"ddpg evolution evopress gnn"}
threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")
episodes=()
[ -n "${EPISODES:-}" ] && episodes=(--episodes "$EPISODES")
mkdir -p "$root/envs"
env_at() { # the env at keep K (1 - sparsity)
    local file=$root/envs/keep-$1.toml
    sed "s/^target = .*/target = { metric = \"params\", keep = $1 }/" "$env" > "$file"
    echo "$file"
}
keep_of() { python3 -c "print(round(1 - $1, 4))"; }
once() { # once OUT CMD...: runs CMD (JSON on stdout) into OUT unless OUT exists
    local out=$1; shift
    [ -s "$out" ] && return 0
    "$@" > "$out.tmp" && mv "$out.tmp" "$out"
}

if [ -z "${GATHER:-}" ] && [ -z "${SEARCHES_ONLY:-}" ]; then
    for s in 0.5 0.6 0.7; do
        k=$(keep_of "$s"); e=$(env_at "$k")
        for m in uniform global lamp erk owl alphapruning; do
            once "$root/$m-$s.json" "$bin" baseline --env "$e" --method "$m" \
                --out "$root/$m-$s.policy.json" "${threads[@]}" --json
        done
    done
    e=$(env_at 0.3)
    for m in uniform erk owl; do
        once "$root/$m-0.7-sparsegpt.json" "$bin" apply --env "$e" --policy "$root/$m-0.7.policy.json" \
            --criterion sparsegpt "${threads[@]}" --json
    done
    # Every layer's inputs from the dense model, measured once (prune.calibration_from).
    sed 's/^calibration = .*/&\ncalibration_from = "dense"/' "$e" > "$root/envs/keep-0.3-dense-inputs.toml"
    for c in wanda sparsegpt; do
        once "$root/uniform-0.7-$c-dense-inputs.json" "$bin" baseline --env "$root/envs/keep-0.3-dense-inputs.toml" \
            --method uniform --criterion "$c" "${threads[@]}" --json
    done
    for c in wanda sparsegpt; do
        once "$root/2of4-$c.json" "$bin" baseline --env "$env" --method uniform --granularity 2:4 \
            --criterion "$c" "${threads[@]}" --json
    done
    once "$root/dense.json" "$bin" baseline --env "$env" --method uniform --keep 1 "${threads[@]}" --json
fi
if [ -z "${GATHER:-}" ]; then
    for s in $sparsities; do
        k=$(keep_of "$s"); e=$(env_at "$k")
        for seed in $seeds; do
            for a in $agents; do
                run=$root/$a-$s-s$seed
                [ -s "$run.json" ] && continue
                resume=(--config "configs/posttrain-$a.toml" --env "$e" --seed "$seed" "${episodes[@]}" --logdir "$run")
                [ -f "$run/episodes.jsonl" ] && resume=(--resume "$run")
                once "$run.json" "$bin" search "${resume[@]}" --out "$run.policy.json" "${threads[@]}" --json
            done
        done
    done
    # With SPARSEGPT_SEARCH=1: the (1 + λ) search at 70% scoring every policy with SparseGPT.
    if [ -n "${SPARSEGPT_SEARCH:-}" ]; then
        sed 's/^criterion = .*/criterion = "sparsegpt"/' "$(env_at 0.3)" > "$root/envs/keep-0.3-sparsegpt.toml"
        for seed in $seeds; do
            run=$root/evopress-sparsegpt-0.7-s$seed
            [ -s "$run.json" ] && continue
            resume=(--config configs/posttrain-evopress.toml --env "$root/envs/keep-0.3-sparsegpt.toml" --seed "$seed" "${episodes[@]}" --logdir "$run")
            [ -f "$run/episodes.jsonl" ] && resume=(--resume "$run")
            once "$run.json" "$bin" search "${resume[@]}" --out "$run.policy.json" "${threads[@]}" --json
        done
    fi
    # SparseGPT on the best learned policy at 70% (by validation perplexity), per seed.
    e=$(env_at 0.3)
    for seed in $seeds; do
        best=$(python3 - "$root" "$seed" <<'PY'
import json, os, sys
root, seed = sys.argv[1], sys.argv[2]
runs = [f"{root}/{a}-0.7-s{seed}" for a in ("ddpg", "evolution", "evopress", "gnn")]
runs = [r for r in runs if os.path.exists(r + ".json")]
print(min(runs, key=lambda r: json.load(open(r + ".json"))["perplexity"]) if runs else "")
PY
)
        [ -n "$best" ] && once "$root/learned-0.7-s$seed-sparsegpt.json" "$bin" apply --env "$e" \
            --policy "$best.policy.json" --criterion sparsegpt "${threads[@]}" --json
    done
fi

python3 - "$root" <<'PY'
import glob, json, os, statistics, sys
root = sys.argv[1]
def ppl(path):
    return json.load(open(path))["test_perplexity"] if os.path.exists(path) else None
def cell(paths):
    values = [v for v in map(ppl, paths) if v is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} ({len(values)})"
print("| allocation | 50% | 60% | 70% | 70%, SparseGPT |")
print("|---|---|---|---|---|")
dense = ppl(f"{root}/dense.json")
print(f"| dense | {dense:.2f} | | | |" if dense else "| dense | — | | | |")
names = {"uniform": "uniform", "global": "global magnitude", "lamp": "LAMP", "erk": "ERK", "owl": "OWL", "alphapruning": "AlphaPruning"}
for m, label in names.items():
    row = [cell([f"{root}/{m}-{s}.json"]) for s in ("0.5", "0.6", "0.7")]
    sgpt = cell([f"{root}/{m}-0.7-sparsegpt.json"])
    print(f"| {label} | " + " | ".join(row) + f" | {sgpt} |")
def seeds(prefix):
    return sorted(p for p in glob.glob(f"{prefix}-s*.json") if ".policy." not in p and "sparsegpt" not in p)
for a, label in (("ddpg", "DDPG"), ("evolution", "evolution (population)"), ("evopress", "evolution (1 + λ)"), ("gnn", "graph agent")):
    row = [cell(seeds(f"{root}/{a}-{s}")) for s in ("0.5", "0.6", "0.7")]
    print(f"| {label} | " + " | ".join(row) + " | |")
print(f"| best learned with Wanda (per seed, by validation) | | | | {cell(sorted(glob.glob(f'{root}/learned-0.7-s*-sparsegpt.json')))} |")
print(f"| evolution (1 + λ) searching with SparseGPT | | | | {cell(seeds(f'{root}/evopress-sparsegpt-0.7'))} |")
print()
print(f"2:4 — Wanda {cell([f'{root}/2of4-wanda.json'])}, SparseGPT {cell([f'{root}/2of4-sparsegpt.json'])}")
print(f"70% uniform, layer inputs from the dense model (cached) — Wanda {cell([f'{root}/uniform-0.7-wanda-dense-inputs.json'])}, SparseGPT {cell([f'{root}/uniform-0.7-sparsegpt-dense-inputs.json'])}")
PY
