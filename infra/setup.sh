#!/usr/bin/env bash
# Install everything the service needs on a fresh Debian machine (idempotent, offline-safe):
# the Fashion-MNIST package, Chromium and its driver (for the browser test), a Python 3.11
# virtualenv with pinned packages (torch from the local wheel cache), and the local broker
# binary (noida-db, a pinned PyPI package).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
# Debian packages: the Fashion-MNIST data, and Chromium with its driver for the demo page's browser test.
missing=()
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] && [ -z "${VR_FASHION_MNIST_DIR:-}" ]; then
  missing+=(dataset-fashion-mnist)
fi
for package in chromium chromium-driver; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}"
fi

PYTHON=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
  # torch first and pinned: pip takes these two from local files, anything looser pulls GBs.
  .venv/bin/pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
  .venv/bin/pip install -q --disable-pip-version-check -e ".[test]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
