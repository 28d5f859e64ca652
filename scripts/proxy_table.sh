#!/usr/bin/env bash
# The README's proxy study: how well each cheap score ranks policies as full fine-tuning does.
#   scripts/proxy_table.sh [SEEDS]      e.g. scripts/proxy_table.sh "0 1 2"
# Settings: fmnist-vgg unstructured at keep 0.05 ("vgg") and fmnist-resnet20 channel at 0.3 of
# FLOPs ("r20"); SETTINGS="vgg r20" (default). Each seed: `autoprune proxy-study` with
# POLICIES policies (default 12: the four allocators and random profiles), proxies none,
# BatchNorm recalibration, 10 and 100 fine-tuning steps, and full fine-tuning for FT_EPOCHS
# epochs (default 1) at FT_LR (default 0.01). THREADS=N; GATHER=1 only tabulates. Studies go
# to runs/proxy-study/<setting>-s<seed> (a stopped one continues).
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-"0 1 2"}
bin=${BIN:-./target/release/autoprune}
root=runs/proxy-study
settings=${SETTINGS-"vgg r20"}
threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")
mkdir -p "$root/envs"
if [ -z "${GATHER:-}" ]; then
    for setting in $settings; do
        env=$root/envs/$setting.toml
        case $setting in
            vgg) sed 's/^target = .*/target = { metric = "params", keep = 0.05 }/' envs/fmnist-vgg.toml > "$env" ;;
            r20) sed 's/^target = .*/target = { metric = "flops", keep = 0.3 }/' envs/fmnist-resnet20.toml > "$env" ;;
            *) echo "unknown setting $setting (vgg or r20)" >&2; exit 2 ;;
        esac
        for seed in $seeds; do
            out=$root/$setting-s$seed.json
            [ -s "$out" ] && continue
            "$bin" proxy-study --env "$env" --policies "${POLICIES:-12}" --epochs "${FT_EPOCHS:-1}" \
                --lr "${FT_LR:-0.01}" --proxy-steps 10,100 --seed "$seed" --logdir "$root/$setting-s$seed" \
                --png "$root/$setting-s$seed.png" "${threads[@]}" --json > "$out.tmp" && mv "$out.tmp" "$out"
        done
    done
fi
python3 - "$root" "$settings" "$seeds" <<'PY'
import json, statistics, sys
root, settings, seeds = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
def cell(values, digits=2):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (1)"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f} ({len(values)})"
for setting in settings:
    studies = []
    for s in seeds:
        try:
            studies.append(json.load(open(f"{root}/{setting}-s{s}.json")))
        except (OSError, ValueError):
            pass
    if not studies:
        continue
    title = {"vgg": "fmnist-vgg, unstructured, keep 0.05", "r20": "fmnist-resnet20, channel, 0.3 of FLOPs"}[setting]
    print(f"\n#### {title}: {len(studies[0]['policies'])} policies, fine-tuned {studies[0]['steps']} steps (lr {studies[0]['lr']})\n")
    print("| proxy | Spearman ρ | Kendall τ | seconds per policy |")
    print("|---|---|---|---|")
    for i, c in enumerate(studies[0]["correlations"]):
        rows = [st["correlations"][i] for st in studies]
        print(f"| {c['proxy']} | {cell([r['spearman'] for r in rows])} | {cell([r['kendall'] for r in rows])} | {cell([r['seconds_per_policy'] for r in rows], 1)} |")
PY
