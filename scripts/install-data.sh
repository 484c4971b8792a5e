#!/usr/bin/env bash
# Install Fashion-MNIST from Debian's `dataset-fashion-mnist` (IDX files under
# /usr/share/datasets/fashion-mnist). As root: apt-get; otherwise: sudo, or an
# unpacked copy under ~/.cache/stepshot/ (then point spec.dataset.path at it).
set -euo pipefail
DIR=/usr/share/datasets/fashion-mnist
[ -f "$DIR/train-images-idx3-ubyte.gz" ] && exit 0
if [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
else
  cache=${STEPSHOT_CACHE:-$HOME/.cache/stepshot}/fashion-mnist-deb
  mkdir -p "$cache" && (cd "$cache" && apt-get download dataset-fashion-mnist && dpkg-deb -x ./*.deb root)
  echo "Fashion-MNIST unpacked in $cache/root$DIR: set spec.dataset.path to it" >&2
fi
