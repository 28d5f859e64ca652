#!/usr/bin/env bash
# Pretrains the given envs (default: fmnist-vgg and mnist-lenet5) and prints a Markdown table
# of test accuracy and wall time. Extra arguments after `--` go to `autoprune pretrain`.
#   scripts/report_pretrain.sh [ENV...] [-- --device cuda]
set -euo pipefail
cd "$(dirname "$0")/.."
envs=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do envs+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#envs[@]} -eq 0 ] && envs=(envs/fmnist-vgg.toml envs/mnist-lenet5.toml)
bin=./target/release/autoprune
machine="$(nproc) cores, $(python3 -c 'import os; print(round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30))') GiB"
echo "| env | device | epochs | params | test accuracy (language models: val / test loss per byte, test perplexity) | train time (s) |"
echo "|---|---|---|---|---|---|"
for env in "${envs[@]}"; do
    "$bin" pretrain --env "$env" --json "$@" | python3 -c '
import json, sys
r = json.load(sys.stdin)
if r.get("test_perplexity"):
    quality = "%.3f / %.3f nats, %.2f" % (r["val_loss"], r["test_loss"], r["test_perplexity"])
else:
    quality = "%.2f%%" % (100 * r["test_accuracy"])
print("| %s | %s | %d | {:,} | %s | %.0f |".format(r["params"]) % (r["env"], r["device"], r["epochs"], quality, r["train_seconds"]))'
done
echo
echo "machine: $machine ($(uname -m))"
