#!/usr/bin/env bash
# The README's transformer transfer check: a graph agent trained with train-agent on two GPT
# sizes (configs/gnn-train-gpt.toml: shakespeare-gpt and shakespeare-gpt-small, FLOPs budgets
# 0.3, 0.5, 0.7) prunes the held-out size (envs/unseen/shakespeare-gpt-deep.toml, half the
# FLOPs) zero-shot, beside uniform and LAMP on the same model. Test perplexity per byte.
#   scripts/gpt_transfer.sh [SEED]
# Runs go to runs/gpt-transfer-s<seed>; the checkpoints of the two smaller GPTs are pretrained
# on first use. THREADS=N sets the threads; EPISODES=N the agent's training episodes. An
# interrupted training is resumed (train-agent --resume).
set -euo pipefail
cd "$(dirname "$0")/.."
seed=${1:-0}
bin=${BIN:-./target/release/autoprune}
threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")
episodes=()
[ -n "${EPISODES:-}" ] && episodes=(--episodes "$EPISODES")
run=runs/gpt-transfer-s$seed
held_out=envs/unseen/shakespeare-gpt-deep.toml
mkdir -p "$run"
# field FILE NAME: field NAME of the JSON object in FILE; of its "zero_shot" object (the agent's
# own policy, where transfer reports one) when ZERO_SHOT is set.
field() {
    python3 -c 'import json, os, sys; r = json.load(open(sys.argv[1])); r = r.get("zero_shot", r) if os.environ.get("ZERO_SHOT") else r; print(r[sys.argv[2]])' "$1" "$2"
}
for env in envs/shakespeare-gpt-small.toml "$held_out"; do
    out=$run/dense-$(basename "$env" .toml).json
    [ -s "$out" ] || "$bin" evaluate --env "$env" "${threads[@]}" --json > "$out"
done
if [ ! -s "$run/agent/result.json" ]; then
    if [ -s "$run/agent/episodes.jsonl" ]; then
        # An interrupted training continues where it stopped (with its own threads).
        "$bin" train-agent --resume "$run/agent" "${episodes[@]}" --json > "$run/train.json.tmp"
    else
        rm -rf "$run/agent"
        "$bin" train-agent --config configs/gnn-train-gpt.toml --seed "$seed" "${episodes[@]}" \
            --logdir "$run/agent" "${threads[@]}" --json > "$run/train.json.tmp"
    fi
    mv "$run/train.json.tmp" "$run/agent/result.json"
fi
[ -s "$run/zero-shot.json" ] || "$bin" transfer --agent "$run/agent/agent.safetensors" \
    --env "$held_out" --seed "$seed" "${threads[@]}" --json > "$run/zero-shot.json"
for method in uniform lamp; do
    [ -s "$run/$method.json" ] || "$bin" baseline --env "$held_out" --method "$method" \
        --seed "$seed" "${threads[@]}" --json > "$run/$method.json"
done
echo "$held_out at half the FLOPs, test perplexity per byte (seed $seed):"
echo "dense $(python3 -c 'import json, math, sys; print(round(math.exp(json.load(open(sys.argv[1]))["test_loss"]), 3))' "$run/dense-shakespeare-gpt-deep.json")"
for piece in zero-shot uniform lamp; do
    echo "$piece $(ZERO_SHOT=1 field "$run/$piece.json" test_perplexity) (flops kept $(ZERO_SHOT=1 field "$run/$piece.json" flops_kept))"
done
