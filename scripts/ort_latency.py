"""Median ONNX Runtime latency of ONNX models, all under the same batch and threads.

    .venv/bin/python scripts/ort_latency.py --batch 1 --threads 1 dense.onnx pruned.onnx

Prints one JSON object: {"batch", "threads", "repeats", "models": {path: median ms}}.
"""

import argparse
import json
import statistics
import time

import numpy as np
import onnxruntime as ort


def median_ms(path, batch, threads, repeats, warmup=3):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    shape = [batch] + [int(d) for d in spec.shape[1:]]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    feed = {spec.name: x}
    times = []
    for run in range(warmup + repeats):
        started = time.perf_counter()
        session.run(None, feed)
        if run >= warmup:
            times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    models = {m: median_ms(m, args.batch, args.threads, args.repeats) for m in args.models}
    print(json.dumps({"batch": args.batch, "threads": args.threads,
                      "repeats": args.repeats, "models": models}))


if __name__ == "__main__":
    main()
