#!/usr/bin/env bash
# Installs everything autoprune needs on a fresh machine, then builds it.
# Idempotent: each step is skipped when its result is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.11.0
PYTHON=${PYTHON:-python3}

have_torch() {
    .venv/bin/python -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null
}

if ! have_torch; then
    echo "setup: installing PyTorch $TORCH_VERSION into .venv/ (once; large download)" >&2
    "$PYTHON" -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check "torch==$TORCH_VERSION"
fi
# TensorBoard: its reader checks the event files the engine writes (tests), and users view runs.
if ! .venv/bin/python -c "import tensorboard" 2>/dev/null; then
    echo "setup: installing TensorBoard into .venv/" >&2
    .venv/bin/pip install --quiet --disable-pip-version-check "tensorboard==2.20.0"
fi
# ONNX: the exporter behind the fixtures (tests export small PyTorch models to ONNX) and ONNX
# Runtime, which runs the pruned models autoprune exports.
if ! .venv/bin/python -c "import onnx, onnxscript, onnxruntime" 2>/dev/null; then
    echo "setup: installing onnx, onnxscript and onnxruntime into .venv/" >&2
    .venv/bin/pip install --quiet --disable-pip-version-check \
        "onnx==1.23.2" "onnxscript==0.7.2" "onnxruntime==1.32.0"
fi
# torchvision: the real architectures the ONNX importer is tested on (built at test time with
# random weights; nothing is downloaded). 0.26 is the release that matches PyTorch 2.11.
if ! .venv/bin/python -c "import torchvision" 2>/dev/null; then
    echo "setup: installing torchvision into .venv/" >&2
    .venv/bin/pip install --quiet --disable-pip-version-check "torchvision==0.26.0"
fi
# transformers: tiny random GPT-2 checkpoints built at test time (nothing is downloaded).
# 4.57 is the last series whose GPT-2 honours `pruned_heads`, which pruned exports rely on.
if ! .venv/bin/python -c "import transformers, sys; sys.exit(transformers.__version__ != '4.57.6')" 2>/dev/null; then
    echo "setup: installing transformers into .venv/" >&2
    .venv/bin/pip install --quiet --disable-pip-version-check "transformers==4.57.6"
fi
torch_dir=$(.venv/bin/python -W ignore -c "import os, torch; print(os.path.dirname(torch.__file__))" 2>/dev/null)
ln -sfn "$torch_dir" .venv/libtorch

scripts/prepare_data.sh

echo "setup: building autoprune (release)" >&2
cargo build --release --quiet
