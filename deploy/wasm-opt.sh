#!/bin/sh
# Optimises the module in place with wasm-opt (`make build` runs it after
# cargo). Cargo puts its own, unoptimised copy back on every build, even
# when nothing changed, so the result is cached by the SHA-256 of cargo's
# output: an unchanged build costs a copy, not a 5 s optimisation.
#
#   WASM=target/wasm32-wasip1/release/fpgen.wasm WASM_OPT_FLAGS='-O3 …' sh deploy/wasm-opt.sh
set -eu
: "${WASM:?}" "${WASM_OPT_FLAGS:?}"
cache=target/wasm-opt
mkdir -p "$cache"
current=$(sha256sum "$WASM" | cut -c1-64)
if [ "$current" = "$(cat "$cache/out.sha256" 2>/dev/null)" ]; then
    exit 0 # already the optimised module
fi
if [ "$current" != "$(cat "$cache/in.sha256" 2>/dev/null)" ] \
    || [ "$WASM_OPT_FLAGS" != "$(cat "$cache/flags" 2>/dev/null)" ]; then
    # shellcheck disable=SC2086 # the flags are words
    wasm-opt $WASM_OPT_FLAGS "$WASM" -o "$cache/out.wasm"
    echo "$current" >"$cache/in.sha256"
    echo "$WASM_OPT_FLAGS" >"$cache/flags"
    sha256sum "$cache/out.wasm" | cut -c1-64 >"$cache/out.sha256"
fi
# a new file, not a write through cargo's hard link into target/…/deps
cp "$cache/out.wasm" "$WASM.tmp"
mv "$WASM.tmp" "$WASM"
raw="$(dirname "$WASM")/deps/$(basename "$WASM")"
echo "wasm-opt: $WASM $(wc -c <"$WASM") bytes (cargo's: $(wc -c <"$raw" 2>/dev/null || echo '?'))"
