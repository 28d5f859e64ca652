#!/usr/bin/env bash
# The README's adaptation curve: validation reward of the best policy found within 0, 5, 10,
# 20 and 50 adaptation episodes on tasks held out of training, for four starting points of
# the graph agent:
#   meta       `autoprune meta-train --config configs/meta-train.toml` (Reptile, 400 episodes
#              over 12 tasks: fmnist-vgg, fmnist-resnet20, mnist-mlp × 2 granularities ×
#              budgets 0.2 and 0.5); ships as policies/meta-fmnist.safetensors
#   meta-wide  the same with a third budget, 0.05 (configs/meta-train-wide.toml, 18 tasks)
#   one-env    `autoprune search --config configs/gnn-one-env.toml` (PPO, 400 episodes on
#              fmnist-vgg alone)
#   random     a freshly initialised agent
# Held-out tasks: fmnist-vgg7 (unstructured), mnist-lenet5 (unstructured) and
# mnist-lenet5-channel (channel), seeds 0, 1 and 2. Every start adapts with the same PPO, the
# meta-training inner loop's (`--gnn-config configs/meta-train.toml`: lr 3e-3, an update
# every 4 episodes); episodes are scored on 500 validation images, each point's best policy
# rescored on all of them. Writes docs/adapt-curve.{json,png}.
#   scripts/adapt_curve.sh        (THREADS=N passes --threads N)
# Trained agents are reused from runs/<config name>-s0 when their run finished.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-./target/release/autoprune}
threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")
# train COMMAND CONFIG RUN: a finished training run in RUN (its JSON in RUN/result.json); an
# interrupted one (exit 130, no result.json) starts again.
train() {
    if [ ! -f "$3/result.json" ]; then
        rm -rf "$3"
        "$bin" "$1" --config "$2" --logdir "$3" "${threads[@]}" --json > "$3.json.tmp"
        mv "$3.json.tmp" "$3/result.json"
    fi
}
train meta-train configs/meta-train.toml runs/meta-train-s0
train meta-train configs/meta-train-wide.toml runs/meta-train-wide-s0
train search configs/gnn-one-env.toml runs/gnn-one-env-s0
"$bin" adapt-curve --init meta=runs/meta-train-s0/agent.safetensors \
    --init meta-wide=runs/meta-train-wide-s0/agent.safetensors \
    --init one-env=runs/gnn-one-env-s0/agent.safetensors --init random=random \
    --env envs/fmnist-vgg7.toml --env envs/mnist-lenet5.toml \
    --env envs/mnist-lenet5-channel.toml --gnn-config configs/meta-train.toml \
    --points 0,5,10,20,50 --seeds 0,1,2 --eval-samples 500 \
    --out docs/adapt-curve.json --png docs/adapt-curve.png "${threads[@]}"
