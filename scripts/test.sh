#!/usr/bin/env bash
# Sets up what is missing and runs every test: unit tests, the server's black-box tests, native
# peers, headless Chromium, and the NAT lab (browser tests and the lab need root; without it they
# print SKIPPED with the reason). Ends with one summary line: "N passed, N failed, N skipped".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
scripts/build-wasm.sh
cargo build --workspace --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --no-fail-fast -- --test-threads=2 "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
skipped=$(grep -c '^SKIPPED' "$log" || true)
awk -v s="$skipped" '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
