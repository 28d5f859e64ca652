#!/usr/bin/env bash
# The README's table of torchvision models through ONNX (random weights, nothing downloaded):
# exports each model at SIDE x SIDE (default 224) with 1000 classes in both exporter settings,
# then reports nodes, prunable groups, pinned layers, params and MACs against torchvision's
# published counts, import time, the largest difference from PyTorch and the time per
# episode of a 20-episode random channel search (one thread).
#   scripts/torchvision_table.sh [MODEL...]
set -euo pipefail
cd "$(dirname "$0")/.."
side=${SIDE:-224}
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(resnet18 resnet50 resnext50_32x4d mobilenet_v2 mobilenet_v3_small
    efficientnet_b0 squeezenet1_0 googlenet densenet121 shufflenet_v2_x1_0 convnext_tiny)
out=runs/torchvision-$side
.venv/bin/python tests/fixtures/export_torchvision.py "$out" "$side" 1000 "${models[@]}" 2>/dev/null
cargo run --release --quiet --example torchvision_report -- "$out" "$side" "${models[@]}"
