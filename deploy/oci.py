#!/usr/bin/env python3
"""Builds an OCI image layout of the fpgen module, the way Istio pulls Wasm
plugins, without a container engine: one layer, a tar holding `plugin.wasm`
(the "compat" variant: application/vnd.oci.image.layer.v1.tar+gzip, which
Istio's WasmPlugin and Envoy-based pullers accept), an image config, a
manifest and the layout's index.json.

    python3 deploy/oci.py target/wasm32-wasip1/release/fpgen.wasm target/oci/fpgen 0.1.0

Push it with skopeo: skopeo copy oci:target/oci/fpgen:0.1.0 docker://REGISTRY/fpgen:0.1.0
"""
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile


def blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(layout, "blobs", "sha256", digest)
    with open(path, "wb") as f:
        f.write(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def main(wasm_path, layout, tag):
    wasm = open(wasm_path, "rb").read()
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    # the layer: plugin.wasm in a reproducible tar (fixed mtime, owner, mode)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size, info.mtime, info.mode = len(wasm), 0, 0o644
        tar.addfile(info, io.BytesIO(wasm))
    layer_tar = raw.getvalue()
    layer_gz = gzip.compress(layer_tar, mtime=0)
    diff_id = "sha256:" + hashlib.sha256(layer_tar).hexdigest()
    layer = dict(blob(layout, layer_gz), mediaType="application/vnd.oci.image.layer.v1.tar+gzip")
    config = json.dumps({
        "architecture": "wasm", "os": "wasip1",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "config": {"Labels": {"org.opencontainers.image.title": "fpgen",
                              "module.wasm.image/variant": "compat",
                              "io.fpgen.module.sha256": hashlib.sha256(wasm).hexdigest()}},
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": dict(blob(layout, config), mediaType="application/vnd.oci.image.config.v1+json"),
        "layers": [layer],
        "annotations": {"org.opencontainers.image.title": "fpgen", "org.opencontainers.image.version": tag},
    }, sort_keys=True).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [dict(blob(layout, manifest), mediaType="application/vnd.oci.image.manifest.v1+json",
                           annotations={"org.opencontainers.image.ref.name": tag})],
    }
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    digest = index["manifests"][0]["digest"]
    print(f"{layout}:{tag}  module sha256:{hashlib.sha256(wasm).hexdigest()}  layer {layer['digest']}")
    print(f"image digest {digest}: pin the WasmPlugin to it (envoy/istio/wasmplugin.yaml):")
    print(f"  url: oci://REGISTRY/fpgen@{digest}")
    print(f"  sha256: {digest.split(':', 1)[1]}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
