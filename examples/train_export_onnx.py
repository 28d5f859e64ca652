"""Trains a small CNN on Fashion-MNIST with PyTorch and exports it to ONNX, the starting point
of README's "Prune your own model".

    autoprune split --env envs/onnx-fmnist-cnn.toml --out models/fmnist-split.json
    .venv/bin/python examples/train_export_onnx.py models/fmnist-split.json models/fmnist-cnn.onnx

It reads the gzipped IDX files `make setup` put in data/fashion-mnist and the split file
autoprune wrote: it trains only on autoprune's training samples (the validation samples that
searches select policies on stay unseen) and normalises images as autoprune does. It prints
the test accuracy and writes the model with torch.onnx.export (weights in <out>.data).
"""

import argparse
import gzip
import json
import os

import numpy as np
import torch
from torch import nn


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(folder, split, mean, std):
    images = idx(os.path.join(folder, f"{split}-images-idx3-ubyte.gz")).astype(np.float32) / 255.0
    images = (images - mean) / std
    labels = idx(os.path.join(folder, f"{split}-labels-idx1-ubyte.gz")).astype(np.int64)
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        )
        self.classifier = nn.Linear(64, 10)

    def forward(self, x):
        x = self.features(x)
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("split", help="the JSON `autoprune split` wrote")
    parser.add_argument("out")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--data", default="data/fashion-mnist")
    args = parser.parse_args()
    torch.manual_seed(0)
    with open(args.split) as f:
        plan = json.load(f)
    mean, std = np.float32(plan["mean"][0]), np.float32(plan["std"][0])
    x, y = load(args.data, "train", mean, std)
    train = torch.tensor(plan["train"])
    x, y = x[train], y[train]
    tx, ty = load(args.data, "t10k", mean, std)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    steps = args.epochs * (len(x) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.1, total_steps=steps)
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x))
        for i in range(len(x) // 128):
            batch = order[i * 128:(i + 1) * 128]
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            acc = (model(tx).argmax(1) == ty).float().mean().item()
        print(f"epoch {epoch + 1}: test accuracy {100 * acc:.2f}%")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    torch.onnx.export(model, (tx[:1],), args.out, dynamo=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
