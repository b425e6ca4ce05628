#!/usr/bin/env bash
# Installs what Burrow needs and a fresh machine lacks; skips whatever is already there.
#   scripts/setup.sh run    what the server and its page need (wasm toolchain)
#   scripts/setup.sh test   that, plus Chromium + chromedriver and the NAT lab's tools
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-test}"

say() { printf '[setup] %s\n' "$*" >&2; }

# 1. The wasm target.
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  say "adding rust target wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

# 2. wasm-bindgen-cli at exactly the version in Cargo.lock (wasm-pack would otherwise try to
#    download one, fail offline, and slowly build its own).
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ -n "$want" ] && [ "$have" != "$want" ]; then
  say "installing wasm-bindgen-cli $want (about 3 min)"
  # Not --locked: its own lockfile wants a crate release the registry here lacks.
  cargo install wasm-bindgen-cli --version "$want" --force
fi

# 3. wasm-pack.
if ! command -v wasm-pack >/dev/null 2>&1; then
  say "installing wasm-pack (about 2.5 min)"
  cargo install wasm-pack --locked
fi

# 4. A current wasm-opt from npm's binaryen (Debian's 108 emits modules Chromium rejects).
if [ ! -x .tools/node_modules/.bin/wasm-opt ]; then
  say "installing binaryen (wasm-opt) from npm into .tools/"
  mkdir -p .tools
  (cd .tools && npm install --silent --no-audit --no-fund binaryen@132 >/dev/null 2>&1) \
    || say "binaryen unavailable: the wasm build will skip wasm-opt"
fi

if [ "$what" = "run" ]; then
  exit 0
fi

# 5. Browser tests, the NAT lab and the ACME test: Chromium, chromedriver, nftables, conntrack,
#    iproute2, Pebble, dnsmasq.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v conntrack >/dev/null 2>&1 || missing+=(conntrack)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v pebble >/dev/null 2>&1 || missing+=(pebble)     # ACME test server (TLS tests)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)  # several instances
command -v turnserver >/dev/null 2>&1 || missing+=(coturn)  # the reference relay (bench, lab)
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)  # voice tests: tones to play, recordings decoded
command -v ethtool >/dev/null 2>&1 || missing+=(ethtool)  # the wan bench: offloads off under its delay lines
command -v dnsmasq >/dev/null 2>&1 || missing+=(dnsmasq-base)  # a real DNS server behind a forwarded UDP service
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} with apt-get"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
