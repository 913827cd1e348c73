#!/usr/bin/env bash
# Download the wheels the GPU image lacks (Python 3.12, manylinux x86_64) into wheels/ (ignored
# by git), for tools/device/run.sh to install there without a network. PYVER=3.11 gives the
# matching set for a local test of the install path.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYVER=${PYVER:-3.12}
DEST=${DEST:-wheels}
python3 -m pip download --only-binary=:all: --python-version "$PYVER" \
    --platform manylinux2014_x86_64 --implementation cp --no-deps -d "$DEST" \
    array-api-compat jsonschema referencing jsonschema-specifications rpds-py attrs \
    typing-extensions
ls -l "$DEST"
