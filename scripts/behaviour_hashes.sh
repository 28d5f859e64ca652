#!/usr/bin/env bash
# Fingerprints what every search agent writes on the synthetic env: one short search per agent
# with a fixed seed, one thread and a fixed clock (SOURCE_DATE_EPOCH), then the SHA-256 of
# policy.json and best.json. Two builds that behave the same print the same lines; run it
# before and after a change that must not change behaviour.
#   scripts/behaviour_hashes.sh [BINARY]     (default ./target/release/autoprune)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-./target/release/autoprune}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export SOURCE_DATE_EPOCH=1700000000

# The synthetic env as shipped, and a channel-pruned copy for the PruningNet (it generates
# weights for channel counts).
cp envs/synthetic-mlp.toml "$work/env.toml"
sed 's/^granularity = "unstructured"/granularity = "channel"/' envs/synthetic-mlp.toml \
    | sed 's/^name = "synthetic-mlp"/name = "synthetic-mlp-channel"/' >"$work/env-channel.toml"
# One checkpoint for both, pretrained once (same graph and data).
sed -i "s#^checkpoint = .*#checkpoint = \"$work/synthetic-mlp.safetensors\"#" \
    "$work/env.toml" "$work/env-channel.toml"

for agent in ddpg ppo evolution random gnn meta pruningnet; do
    env="$work/env.toml"
    [ "$agent" = pruningnet ] && env="$work/env-channel.toml"
    cat >"$work/$agent.toml" <<EOF
name = "hash-$agent"
env = "$env"
agent = "$agent"
episodes = 24
seed = 0

[ddpg]
hidden = 32
warmup = 8
batch_size = 8
buffer = 100

[ppo]
hidden = 32
episodes_per_update = 4

[evolution]
population = 8

[gnn]
hidden = 32
layers = 2
episodes_per_update = 4

[meta]
init = "$work/meta-init.safetensors"

[pruningnet]
steps = 20
EOF
    if [ "$agent" = meta ]; then
        # A graph agent of the [gnn] shape above, from the gnn search, stands in for a
        # meta-trained initialisation.
        cp "$work/run-gnn/agent.safetensors" "$work/meta-init.safetensors"
    fi
    "$bin" search --config "$work/$agent.toml" --logdir "$work/run-$agent" --threads 1 \
        --device cpu --json >"$work/$agent.json" 2>"$work/$agent.err" || {
        echo "$agent: search failed" >&2
        cat "$work/$agent.err" >&2
        exit 1
    }
    for file in policy.json best.json; do
        printf '%-10s %-11s %s\n' "$agent" "$file" \
            "$(sha256sum "$work/run-$agent/$file" | cut -c1-16)"
    done
done
