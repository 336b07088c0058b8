#!/bin/sh
# Optimises the module in place with wasm-opt (`make build` runs it after
# cargo). Cargo puts its own, unoptimised copy back on every build, even
# when nothing changed, so the result is cached by the SHA-256 of cargo's
# output: an unchanged build costs a copy, not a 5 s optimisation.
#
#   WASM=target/wasm32-wasip1/release/fpgen.wasm WASM_OPT_FLAGS='-O3 …' sh deploy/wasm-opt.sh
#
# First, binaryen's wasm-metadce keeps only the exports deploy/exports.json
# lists (WASM_EXPORTS names another list) and drops the code only the others
# reached. The proxy-wasm SDK exports every callback of the ABI; Envoy
# skips a callback the module does not export, so fpgen exports only those
# it implements (request headers, body and trailers; context create and
# delete; configure) and Envoy no longer enters the VM for the response
# callbacks, `on_log` and `on_done` (docs/performance.md).
#
# Without binaryen's wasm-opt and wasm-metadce (a machine where `make
# wasm-opt-tool` cannot install binaryen), it says so and leaves cargo's
# module, which answers the same (18% larger, every callback exported).
set -eu
: "${WASM:?}" "${WASM_OPT_FLAGS:?}"
for tool in wasm-opt wasm-metadce; do
    if ! command -v $tool >/dev/null; then
        echo "wasm-opt: binaryen's $tool is not installed (Debian package binaryen);" \
            "$WASM is cargo's module: unoptimised, with every proxy-wasm export" >&2
        exit 0
    fi
done
cache=${WASM_OPT_CACHE:-target/wasm-opt}
mkdir -p "$cache"
current=$(sha256sum "$WASM" | cut -c1-64)
# the settings the cached output was made with: flags and tool version
exports=${WASM_EXPORTS:-deploy/exports.json}
settings="$WASM_OPT_FLAGS $(wasm-opt --version) $(sha256sum "$exports" | cut -c1-64)"
fresh() { [ "$settings" = "$(cat "$cache/settings" 2>/dev/null)" ] && [ -f "$cache/out.wasm" ]; }
if [ "$current" = "$(cat "$cache/out.sha256" 2>/dev/null)" ]; then
    if fresh; then
        exit 0 # already the optimised module
    fi
    echo "wasm-opt: $WASM is an optimised module of other settings; run cargo build first" >&2
    exit 1
fi
if [ "$current" != "$(cat "$cache/in.sha256" 2>/dev/null)" ] || ! fresh; then
    rm -f "$cache/settings"
    # shellcheck disable=SC2086 # the flags are words
    features=$(printf '%s\n' $WASM_OPT_FLAGS | grep -e '^--enable-' | tr '\n' ' ')
    # shellcheck disable=SC2086 # the flags are words
    wasm-metadce --graph-file "$exports" $features "$WASM" -o "$cache/kept.wasm" >/dev/null
    # shellcheck disable=SC2086
    wasm-opt $WASM_OPT_FLAGS "$cache/kept.wasm" -o "$cache/out.wasm"
    sha256sum "$cache/out.wasm" | cut -c1-64 >"$cache/out.sha256"
    echo "$current" >"$cache/in.sha256"
    echo "$settings" >"$cache/settings"
fi
# a new file, not a write through cargo's hard link into target/…/deps
cp "$cache/out.wasm" "$WASM.tmp"
mv "$WASM.tmp" "$WASM"
raw="$(dirname "$WASM")/deps/$(basename "$WASM")"
echo "wasm-opt: $WASM $(wc -c <"$WASM") bytes (cargo's: $(wc -c <"$raw" 2>/dev/null || echo '?'))"
