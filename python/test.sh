#!/usr/bin/env bash
# Builds the Python SDK's wheel (maturin, reusing the workspace's release build), installs it
# into a fresh virtualenv and runs its tests (pytest) against a real `tenebra serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

# maturin itself lives in a cached tools environment.
tools="$CARGO_TARGET_DIR/py-tools"
if [ ! -x "$tools/bin/maturin" ]; then
    python3 -m venv "$tools"
    "$tools/bin/pip" install --quiet 'maturin>=1.7,<2'
fi
cargo build --release --locked -p tenebra
rm -rf "$CARGO_TARGET_DIR/wheels"
"$tools/bin/maturin" build --release --locked -m python/Cargo.toml --out "$CARGO_TARGET_DIR/wheels" --quiet

venv=$(mktemp -d)/venv
trap 'rm -rf "$(dirname "$venv")"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet "$CARGO_TARGET_DIR"/wheels/tenebra-*.whl pytest numpy
TENEBRA_BIN="$CARGO_TARGET_DIR/release/tenebra" "$venv/bin/python" -m pytest -q python/tests
