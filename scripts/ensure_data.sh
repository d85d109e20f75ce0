#!/usr/bin/env bash
# Make sure the real Fashion-MNIST files are on this machine, before any long work.
# Order (as the pipeline searches): data/01_raw/fashion_mnist/, then the Debian
# package dataset-fashion-mnist, which this script installs when run as root.
set -euo pipefail

RAW=data/01_raw/fashion_mnist
DEBIAN=/usr/share/datasets/fashion-mnist
FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

complete() {
  local dir=$1 f
  for f in "${FILES[@]}"; do
    [[ -f "$dir/$f" || -f "$dir/$f.gz" ]] || return 1
  done
}

if complete "$RAW" || complete "$DEBIAN"; then
  exit 0
fi
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "Fashion-MNIST not found; installing the Debian package dataset-fashion-mnist" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq dataset-fashion-mnist >/dev/null
  complete "$DEBIAN" && exit 0
fi
cat >&2 <<MSG
Fashion-MNIST not found in $RAW/ or $DEBIAN/.
Fix one of:
  sudo apt-get install dataset-fashion-mnist
  copy ${FILES[*]} (optionally .gz) into $RAW/
  let torchvision download it: make run ARGS="--params allow_download=true"
MSG
[[ "${ARGS:-}" == *allow_download=true* ]] && exit 0
exit 1
