#!/usr/bin/env bash
# The README's adaptation curve: validation reward of the best policy found within 0, 5, 10,
# 20 and 50 adaptation episodes on tasks held out of training, for three starting points of
# the graph agent:
#   meta     `autoprune meta-train --config configs/meta-train.toml` (Reptile, 400 episodes
#            over 12 tasks: fmnist-vgg, fmnist-resnet20, mnist-mlp × 2 granularities × 2 budgets)
#   one-env  `autoprune search --config configs/gnn-one-env.toml` (PPO, 400 episodes on
#            fmnist-vgg alone)
#   random   a freshly initialised agent
# Held-out tasks: fmnist-vgg7 (unstructured), mnist-lenet5 (unstructured) and
# mnist-lenet5-channel (channel), seeds 0, 1 and 2; episodes scored on 500 validation images,
# each point's best policy rescored on all of them. Writes docs/adapt-curve.{json,png}.
#   scripts/adapt_curve.sh        (THREADS=N passes --threads N)
# Trained agents are reused from runs/meta-train-s0 and runs/gnn-one-env-s0 when their run
# finished. Every start adapts with the `[gnn]` defaults (lr 1e-3, a PPO update every 8 episodes).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-./target/release/autoprune}
threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")
meta=runs/meta-train-s0
one=runs/gnn-one-env-s0
# train COMMAND CONFIG RUN: a finished training run in RUN (its JSON in RUN/result.json); an
# interrupted one (exit 130, no result.json) starts again.
train() {
    if [ ! -f "$3/result.json" ]; then
        rm -rf "$3"
        "$bin" "$1" --config "$2" --logdir "$3" "${threads[@]}" --json > "$3.json.tmp"
        mv "$3.json.tmp" "$3/result.json"
    fi
}
train meta-train configs/meta-train.toml "$meta"
train search configs/gnn-one-env.toml "$one"
"$bin" adapt-curve --init "meta=$meta/agent.safetensors" --init "one-env=$one/agent.safetensors" \
    --init random=random --env envs/fmnist-vgg7.toml --env envs/mnist-lenet5.toml \
    --env envs/mnist-lenet5-channel.toml --points 0,5,10,20,50 --seeds 0,1,2 --eval-samples 500 \
    --out docs/adapt-curve.json --png docs/adapt-curve.png "${threads[@]}"
