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
# Trained agents are reused from runs/meta-train-s0 and runs/gnn-one-env-s0 when present.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-./target/release/autoprune}
threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")
meta=runs/meta-train-s0
one=runs/gnn-one-env-s0
if [ ! -f "$meta/agent.safetensors" ]; then
    rm -rf "$meta"
    "$bin" meta-train --config configs/meta-train.toml --logdir "$meta" "${threads[@]}" --json > /dev/null
fi
if [ ! -f "$one/agent.safetensors" ]; then
    rm -rf "$one"
    "$bin" search --config configs/gnn-one-env.toml --logdir "$one" "${threads[@]}" --json > /dev/null
fi
"$bin" adapt-curve --init "meta=$meta/agent.safetensors" --init "one-env=$one/agent.safetensors" \
    --init random=random --env envs/fmnist-vgg7.toml --env envs/mnist-lenet5.toml \
    --env envs/mnist-lenet5-channel.toml --points 0,5,10,20,50 --seeds 0,1,2 --eval-samples 500 \
    --out docs/adapt-curve.json --png docs/adapt-curve.png "${threads[@]}"
