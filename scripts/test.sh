#!/usr/bin/env bash
# Sets up what is missing and runs every test: unit tests, the server's black-box tests, native
# peers, headless Chromium, and the NAT lab (the lab needs root; it skips with a reason otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
scripts/build-wasm.sh
cargo build --workspace --bins
cargo test --workspace -- --test-threads=2 "$@"
