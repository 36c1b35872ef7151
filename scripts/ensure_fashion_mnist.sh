#!/bin/sh
# Make sure the four Fashion-MNIST IDX files are in $1 (default: Debian's location).
# Installs Debian's package dataset-fashion-mnist when they are missing and apt
# is usable; otherwise says how to get them.
set -eu
dir="${1:-/usr/share/datasets/fashion-mnist}"
files="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"

present() {
    for f in $files; do [ -f "$dir/$f" ] || return 1; done
}

present && exit 0
if [ "$dir" = /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "Fashion-MNIST not found in $dir: installing Debian's package dataset-fashion-mnist"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null || true
    present && exit 0
fi
echo "error: Fashion-MNIST not found in $dir (need: $files)." >&2
echo "  Debian/Ubuntu, as root: apt-get install dataset-fashion-mnist" >&2
echo "  elsewhere: download the four files from https://github.com/zalandoresearch/fashion-mnist into a directory DIR," >&2
echo "  then run: make demo FASHION_MNIST_DIR=DIR  (and pass data.root=DIR to other longtail commands)" >&2
exit 1
