#!/usr/bin/env bash
# make test-oci: push the OCI image of the module to a registry on loopback
# (Debian's docker-registry, temporary storage, a free port), pull it back,
# and check that the pulled plugin.wasm is byte for byte the built module.
set -euo pipefail
cd "$(dirname "$0")/.."
WASM=target/wasm32-wasip1/release/fpgen.wasm
TAG=${TAG:-test}
work=$(mktemp -d)
registry_pid=
cleanup() { [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<YML
version: 0.1
storage:
  filesystem: { rootdirectory: $work/storage }
http:
  addr: 127.0.0.1:$port
log: { level: error }
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break; sleep 0.1; done

python3 deploy/oci.py "$WASM" "$work/layout" "$TAG"
skopeo copy --quiet --dest-tls-verify=false "oci:$work/layout:$TAG" "docker://127.0.0.1:$port/fpgen:$TAG"
skopeo copy --quiet --src-tls-verify=false "docker://127.0.0.1:$port/fpgen:$TAG" "oci:$work/pulled:$TAG"

# the pulled image: the digest make oci printed (the one the WasmPlugin is
# pinned to), one layer holding plugin.wasm, identical to the module
manifest=$(python3 -c 'import json,sys; i=json.load(open(sys.argv[1]+"/index.json")); print(i["manifests"][0]["digest"].split(":")[1])' "$work/pulled")
built=$(python3 -c 'import json,sys; i=json.load(open(sys.argv[1]+"/index.json")); print(i["manifests"][0]["digest"].split(":")[1])' "$work/layout")
[ "$manifest" = "$built" ] || { echo "test-oci: the registry serves image sha256:$manifest, make oci built sha256:$built"; exit 1; }
layers=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(" ".join(l["digest"].split(":")[1] for l in m["layers"]))' "$work/pulled/blobs/sha256/$manifest")
[ "$(echo "$layers" | wc -w)" = 1 ] || { echo "test-oci: expected one layer, got: $layers"; exit 1; }
mkdir "$work/out"
tar -xzf "$work/pulled/blobs/sha256/$layers" -C "$work/out"
[ "$(ls "$work/out")" = plugin.wasm ] || { echo "test-oci: layer holds $(ls "$work/out")"; exit 1; }
want=$(sha256sum "$WASM" | cut -d' ' -f1)
got=$(sha256sum "$work/out/plugin.wasm" | cut -d' ' -f1)
if [ "$want" != "$got" ]; then echo "test-oci: digest mismatch: built $want, pulled $got"; exit 1; fi
echo "test-oci: pushed to and pulled from 127.0.0.1:$port/fpgen:$TAG; plugin.wasm sha256:$got matches the build"
echo "1 passed, 0 failed"
