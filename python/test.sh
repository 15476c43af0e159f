#!/usr/bin/env bash
# Runs the Python SDK's tests (pytest) against a real `tenebra serve`, with the extension
# module the workspace build already made (`python` is a workspace member): the same build
# `cargo test --release --workspace` compiled, so nothing (tfhe-rs least of all) is compiled
# a second time. `pip install ./python` builds the same module into a wheel with maturin.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

# --all-targets: the feature set `cargo test --workspace` resolved, so every crate is reused.
cargo build --release --locked --workspace --all-targets

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r python/tenebra "$work/tenebra"
cp "$CARGO_TARGET_DIR/release/lib_native.so" "$work/tenebra/_native.abi3.so"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet pytest numpy
PYTHONPATH="$work" TENEBRA_BIN="$CARGO_TARGET_DIR/release/tenebra" \
    "$work/venv/bin/python" -m pytest -q -p no:cacheprovider python/tests
