#!/usr/bin/env bash
# Latency budgets measured on this machine, for the README: for each env (channel pruning,
# a latency budget of KEEP) and each thread count,
#   - the latency table and the additive model's error over POLICIES random policies,
#   - uniform and LAMP at the budget, and a DDPG search of EPISODES episodes (scored on
#     EVAL_SAMPLES validation images), each with its measured latency and test accuracy,
#   - ONNX Runtime latency of the dense model and of the pruned exports (same batch, threads).
#   scripts/latency_report.sh                 (ENVS, THREADS, KEEP, POLICIES, EPISODES, EVAL_SAMPLES)
# Results go to runs/latency-report/; every step is skipped when its output is there, so an
# interrupted report continues. GATHER=1 only prints the tables.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-./target/release/autoprune}
envs=${ENVS:-"envs/fmnist-resnet20.toml envs/fmnist-mobilenetv2.toml"}
thread_counts=${THREADS:-"1 2"}
keep=${KEEP:-0.5}
policies=${POLICIES:-50}
episodes=${EPISODES:-100}
eval_samples=${EVAL_SAMPLES:-1000}
out=runs/latency-report
mkdir -p "$out/envs"

# step FILE COMMAND...: runs COMMAND with stdout into FILE unless FILE is already there.
step() {
    local file=$1
    shift
    [ -s "$file" ] && return 0
    "$@" > "$file.part"
    mv "$file.part" "$file"
}

if [ -z "${GATHER:-}" ]; then
for env in $envs; do
    name=$(basename "$env" .toml)
    lenv=$out/envs/$name.toml
    sed -E "s/^target = \{.*\}/target = { metric = \"latency\", keep = $keep }/" "$env" > "$lenv"
    # The dense model: every unit kept (a budget of 1).
    denv=$out/envs/$name-dense.toml
    sed -E "s/^target = \{.*\}/target = { metric = \"latency\", keep = 1.0 }/" "$env" > "$denv"
    "$bin" evaluate --env "$lenv" --json > /dev/null
    for t in $thread_counts; do
        tag=$out/$name-t$t
        step "$tag-table.json" "$bin" latency --env "$lenv" --threads "$t" --policies "$policies" --json
        # The dense model (every unit kept: keep 1.0), uniform and LAMP at the budget.
        for method in dense uniform lamp; do
            alloc=$method menv=$lenv
            [ "$method" = dense ] && alloc=uniform menv=$denv
            step "$tag-$method.json" "$bin" baseline --env "$menv" --method "$alloc" \
                --threads "$t" --out "$tag-$method-policy.json" --json
        done
        config=$out/envs/ddpg-$name.toml
        sed -E -e "s#^env = .*#env = \"$lenv\"#" -e "s/^eval_samples = .*/eval_samples = $eval_samples/" \
            configs/amc-ddpg-resnet20.toml > "$config"
        if [ ! -s "$tag-ddpg.json" ]; then
            rm -rf "$out/runs/$name-t$t-ddpg"
            "$bin" search --config "$config" --threads "$t" --episodes "$episodes" \
                --logdir "$out/runs/$name-t$t-ddpg" --out "$tag-ddpg-policy.json" --json > "$tag-ddpg.json.part"
            mv "$tag-ddpg.json.part" "$tag-ddpg.json"
        fi
        # ONNX exports of the dense and the pruned models.
        for method in dense uniform lamp ddpg; do
            menv=$lenv
            [ "$method" = dense ] && menv=$denv
            [ -s "$tag-$method.onnx" ] || "$bin" apply --env "$menv" --policy "$tag-$method-policy.json" \
                --threads "$t" --save "$tag-$method.onnx" --json > /dev/null
        done
        step "$tag-ort.json" .venv/bin/python scripts/ort_latency.py --batch 1 --threads "$t" \
            "$tag-dense.onnx" "$tag-uniform.onnx" "$tag-lamp.onnx" "$tag-ddpg.onnx"
    done
done
fi

.venv/bin/python - "$out" "$keep" "$envs" "$thread_counts" <<'PY'
import json, os, statistics, sys
out, keep, envs, threads = sys.argv[1], float(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split()
def load(path):
    return json.load(open(path)) if os.path.exists(path) else None
print(f"Latency budget {keep} of the dense model's, channel pruning, batch 1, test accuracy without fine-tuning.\n")
print("| env | threads | dense ms | model error, median / largest (50 random policies) | method | FLOPs kept | latency kept (measured) | predicted | test acc. | ONNX Runtime speedup |")
print("|---|---|---|---|---|---|---|---|---|---|")
for env in envs:
    name = os.path.basename(env)[:-5]
    for t in threads:
        tag = f"{out}/{name}-t{t}"
        table, ort = load(f"{tag}-table.json"), load(f"{tag}-ort.json")
        if table is None:
            continue
        dense = table["dense_ms"]
        err = f"{100*table['median_abs_error']:.1f}% / {100*table['max_abs_error']:.1f}%"
        for method in ["uniform", "lamp", "ddpg"]:
            r = load(f"{tag}-{method}.json")
            if r is None:
                continue
            lat = r.get("latency") or r  # nested in files from before the fields were flattened
            ms = lat.get("latency_ms")
            kept = ms / lat["dense_latency_ms"] if ms else float("nan")
            pred = lat.get("predicted_latency_ms", float("nan")) / lat.get("dense_latency_ms", float("nan"))
            speed = ""
            if ort:
                models = ort["models"]
                d = models.get(f"{tag}-dense.onnx")
                p = models.get(f"{tag}-{method}.onnx")
                if d and p:
                    speed = f"{d / p:.2f}x ({p:.3f} ms)"
            print(f"| {name} | {t} | {dense:.3f} | {err} | {method} | {r['flops_kept']:.3f} | {kept:.3f} | {pred:.3f} | {100*r['test_accuracy']:.2f} | {speed} |")
PY
