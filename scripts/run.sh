#!/usr/bin/env bash
# Sets up what is missing, builds the page, and runs the server on http://127.0.0.1:8080.
# Extra arguments go to signal-server (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh run
scripts/build-wasm.sh
cargo build --release -p signal-server -p native-peer
exec target/release/signal-server --www www "$@"
