#!/usr/bin/env bash
# Builds the browser peer into www/pkg (offline; needs scripts/setup.sh first).
set -euo pipefail
cd "$(dirname "$0")/.."
# wasm-pack's own wasm-opt step is off (Cargo metadata): it would try to download binaryen.
# The npm binaryen that setup.sh put in .tools/ shrinks the module instead, when present.
# Source paths in panic locations, shortened (they are only ever read by a developer).
export RUSTFLAGS="${RUSTFLAGS:-} --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}/registry/src/= --remap-path-prefix=$PWD/="
wasm-pack --log-level warn build wasm-peer --target web --profile wasm --out-dir ../www/pkg \
  --no-typescript --no-pack
wasm=www/pkg/wasm_peer_bg.wasm
opt=.tools/node_modules/.bin/wasm-opt
if [ -x "$opt" ]; then
  "$opt" -Oz --converge --strip-debug --strip-producers --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals --enable-reference-types --enable-multivalue "$wasm" -o "$wasm"
fi
printf '[build-wasm] %s: %s bytes, %s gzipped\n' \
  "$wasm" "$(stat -c %s "$wasm")" "$(gzip -9c "$wasm" | wc -c)" >&2
