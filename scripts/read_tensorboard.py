"""Reads a run folder's TensorBoard events with TensorBoard's own reader and prints them as JSON:
{"scalars": {tag: [[step, value], ...]}, "histograms": {tag: [step, ...]}, "texts": {tag: [[step, text], ...]}}

Usage: .venv/bin/python scripts/read_tensorboard.py RUN_DIR
"""
import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    out = {"scalars": {}, "histograms": {}, "texts": {}}
    for tag in tags.get("scalars", []):
        out["scalars"][tag] = [[e.step, e.value] for e in acc.Scalars(tag)]
    for tag in tags.get("histograms", []):
        out["histograms"][tag] = [e.step for e in acc.Histograms(tag)]
    for tag in tags.get("tensors", []):
        texts = []
        for e in acc.Tensors(tag):
            values = e.tensor_proto.string_val
            texts.append([e.step, values[0].decode() if values else ""])
        out["texts"][tag] = texts
    print(json.dumps(out))


if __name__ == "__main__":
    main()
