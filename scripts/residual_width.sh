#!/usr/bin/env bash
# Residual-width pruning on shakespeare-gpt at half the FLOPs, no fine-tuning: the four
# allocators with and without `prune.residual_width`, and the evolution search of
# configs/gpt-evolution.toml (150 episodes, 256 validation windows) on the residual-width
# env, beside the same search without it from `EPISODES=150 scripts/gpt_table.sh`
# (runs/gpt-table-shakespeare-gpt/evolution-s<seed>, if it is there). Test perplexity.
#   scripts/residual_width.sh [SEED]        THREADS=N sets --threads; runs go to runs/residual-width/
set -euo pipefail
cd "$(dirname "$0")/.."
seed=${1:-0}
bin=${BIN:-./target/release/autoprune}
threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")
root=runs/residual-width
mkdir -p "$root"
env=$root/shakespeare-gpt-residual.toml
sed 's/^keep_bounds = .*/&\nresidual_width = true/' envs/shakespeare-gpt.toml > "$env"
once() { # once OUT CMD...: runs CMD (JSON on stdout) into OUT unless OUT exists
    local out=$1; shift
    [ -s "$out" ] && return 0
    "$@" > "$out.tmp" && mv "$out.tmp" "$out"
}
for m in uniform lamp erk global; do
    once "$root/plain-$m.json" "$bin" baseline --env envs/shakespeare-gpt.toml --method "$m" "${threads[@]}" --json
    once "$root/residual-$m.json" "$bin" baseline --env "$env" --method "$m" "${threads[@]}" --json
done
run=$root/evolution-s$seed
if [ ! -s "$run.json" ]; then
    args=(--config configs/gpt-evolution.toml --env "$env" --seed "$seed" --episodes 150 --logdir "$run")
    [ -f "$run/episodes.jsonl" ] && args=(--resume "$run")
    once "$run.json" "$bin" search "${args[@]}" --out "$run.policy.json" "${threads[@]}" --json
fi
once "$run.test.json" "$bin" apply --env "$env" --policy "$run.policy.json" "${threads[@]}" --json
python3 - "$root" "$seed" <<'PY'
import json, os, sys
root, seed = sys.argv[1], sys.argv[2]
def ppl(path):
    return json.load(open(path))["test_perplexity"] if os.path.exists(path) else None
print("| method | stream pinned | residual width pruned |")
print("|---|---|---|")
for m in ("uniform", "lamp", "erk", "global"):
    print(f"| {m} | {ppl(f'{root}/plain-{m}.json'):.2f} | {ppl(f'{root}/residual-{m}.json'):.2f} |")
plain = ppl(f"runs/gpt-table-shakespeare-gpt/evolution-s{seed}/score.json")
plain = f"{plain:.2f}" if plain else "–"
print(f"| evolution, 150 episodes | {plain} | {ppl(f'{root}/evolution-s{seed}.test.json'):.2f} |")
PY
