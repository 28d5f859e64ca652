#!/usr/bin/env bash
# Multi-fidelity scoring side by side: the same evolution search on one env, once scoring
# every episode on the whole validation split and once on a subset (EVAL_SAMPLES, default
# 1000) with the promising candidates rescored whole. Prints episodes per CPU minute and the
# best whole-split validation accuracy reached within fixed times, from each run's log.
#   scripts/fidelity.sh [ENV] [EPISODES]        (default: envs/fmnist-vgg.toml 200)
# THREADS (default 1) sets --threads; SEED (default 0) the seed; runs go to runs/fidelity-*.
set -euo pipefail
cd "$(dirname "$0")/.."
env=${1:-envs/fmnist-vgg.toml}
episodes=${2:-200}
bin=${BIN:-./target/release/autoprune}
threads=${THREADS:-1}
seed=${SEED:-0}
subset=${EVAL_SAMPLES:-1000}
for mode in whole subset; do
    run=runs/fidelity-$mode-s$seed
    config=$(mktemp --suffix .toml)
    grep -v '^eval_samples' configs/evolution.toml > "$config"
    [ "$mode" = subset ] && sed -i "s/^seed = .*/&\neval_samples = $subset/" "$config"
    if [ ! -f "$run/result.json" ]; then
        rm -rf "$run"
        "$bin" search --config "$config" --env "$env" --seed "$seed" --episodes "$episodes" \
            --threads "$threads" --logdir "$run" --json > "$run.json"
        mv "$run.json" "$run/result.json"
    fi
    rm -f "$config"
done
python3 - "$seed" <<'PY'
import json, sys
seed = sys.argv[1]
print("| scoring | episodes per CPU minute | subset std | best val accuracy (whole split) within 2 / 5 / 10 / 20 min | test accuracy |")
print("|---|---|---|---|---|")
for mode in ("whole", "subset"):
    run = f"runs/fidelity-{mode}-s{seed}"
    records = [json.loads(l) for l in open(f"{run}/episodes.jsonl")]
    result = json.load(open(f"{run}/result.json"))
    elapsed, best, marks = 0.0, None, {}
    for r in records:
        elapsed += r["seconds"]
        whole = r.get("whole_split", {}).get("accuracy") if mode == "subset" else r["accuracy"]
        if whole is not None:
            best = whole if best is None else max(best, whole)
        for minutes in (2, 5, 10, 20):
            if elapsed <= 60 * minutes and best is not None:
                marks[minutes] = best
    per_minute = len(records) / (elapsed / 60)
    within = " / ".join(f"{100 * marks[m]:.2f}" if m in marks else "–" for m in (2, 5, 10, 20))
    std = result.get("subset_std")
    print(f"| {mode} | {per_minute:.1f} | {std if std is None else f'{std:.4f}'} | {within} | {100 * result['test_accuracy']:.2f} |")
PY
