#!/usr/bin/env bash
# What the MPI build and its tests need beyond `make setup`: Debian's Open MPI and libclang
# (bindgen reads mpi.h), installed through apt when missing, then the release build with the
# `mpi` feature. `make test` runs it; `make demo` does not need it.
set -euo pipefail
cd "$(dirname "$0")/.."
packages="openmpi-bin libopenmpi-dev libclang-dev"
if ! dpkg -s $packages >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: the MPI build needs $packages; install them as root (apt-get install $packages) and run again" >&2
        exit 1
    fi
    echo "setup: installing $packages (apt)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >/dev/null
fi
echo "setup: building autoprune (release, with MPI)" >&2
cargo build --release --quiet --features mpi
