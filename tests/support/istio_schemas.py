#!/usr/bin/env python3
"""Checks the manifests of envoy/istio/ against Istio's own schemas (and
Kubernetes', for the gateway patch), strictly: every field must be one the
schema has (pydantic would ignore an unknown one: the models are dumped back
and compared with the file), and every value must have the schema's type,
with no coercion (pydantic's strict mode).

The schemas are Istio 1.24's CRDs and Kubernetes 1.30's API, as the PyPI
packages cloudcoil-models-istio and cloudcoil-models-kubernetes generate
them (the versions are pinned in the Makefile; `make check-istio` installs
them into .venv/ and runs this; `make test` runs it).

    python tests/support/istio_schemas.py FILE...   # exit 1 on a problem
    python tests/support/istio_schemas.py --self-test FILE

--self-test proves the check can fail: FILE (a WasmPlugin) passes, and
copies of it with a misspelled field and with a value of the wrong type are
each refused, naming the field.
"""
import sys

import pydantic
import yaml
from cloudcoil.models.istio.extensions.v1alpha1 import WasmPlugin
from cloudcoil.models.istio.networking.v1alpha3 import EnvoyFilter
from cloudcoil.models.kubernetes.core.v1 import PodTemplateSpec

KINDS = {
    ("extensions.istio.io/v1alpha1", "WasmPlugin"): WasmPlugin,
    ("networking.istio.io/v1alpha3", "EnvoyFilter"): EnvoyFilter,
}


def unknown_fields(given, dumped, path=""):
    """The paths of `given` that the validated model does not have."""
    if isinstance(given, dict):
        if not isinstance(dumped, dict):
            return [path or "/"]
        out = []
        for key, value in given.items():
            if key not in dumped:
                out.append(f"{path}/{key}")
            else:
                out += unknown_fields(value, dumped[key], f"{path}/{key}")
        return out
    if isinstance(given, list) and isinstance(dumped, list):
        out = []
        for i, (a, b) in enumerate(zip(given, dumped)):
            out += unknown_fields(a, b, f"{path}/{i}")
        return out
    return []


def check_model(model, doc, where):
    """Problems of `doc` as a `model`, each prefixed with `where`."""
    try:
        validated = model.model_validate(doc, strict=True)
    except pydantic.ValidationError as e:
        return [
            f"{where}: {'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            for err in e.errors()
        ]
    dumped = validated.model_dump(by_alias=True, exclude_unset=True, mode="json")
    return [f"{where}: {p}: not a field of the schema" for p in unknown_fields(doc, dumped)]


def check_doc(doc, where):
    """Problems of one YAML document: an Istio resource, or a Deployment
    patch (a pod template, which this project patches into the gateway)."""
    if not isinstance(doc, dict):
        return [f"{where}: not a mapping"]
    if "kind" in doc:
        model = KINDS.get((doc.get("apiVersion"), doc.get("kind")))
        if model is None:
            return [f"{where}: {doc.get('apiVersion')} {doc.get('kind')}: no schema for it here"]
        return check_model(model, doc, where)
    template = doc.get("spec", {}).get("template") if isinstance(doc.get("spec"), dict) else None
    if set(doc) != {"spec"} or not isinstance(doc["spec"], dict) or set(doc["spec"]) != {"template"}:
        return [f"{where}: neither an Istio resource nor a Deployment patch of spec.template"]
    return check_model(PodTemplateSpec, template, f"{where} spec.template")


def check_file(path):
    problems = []
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    if not docs:
        problems.append(f"{path}: no document")
    for i, doc in enumerate(docs):
        problems += check_doc(doc, f"{path}#{i}")
    return problems


def self_test(path):
    with open(path) as f:
        doc = yaml.safe_load(f)
    assert check_doc(doc, path) == [], check_doc(doc, path)
    misspelled = dict(doc, spec=dict(doc["spec"]))
    misspelled["spec"]["failStrtegy"] = misspelled["spec"].pop("failStrategy")
    found = check_doc(misspelled, "misspelled")
    assert found == ["misspelled: /spec/failStrtegy: not a field of the schema"], found
    wrong_type = dict(doc, spec=dict(doc["spec"], priority="10"))
    found = check_doc(wrong_type, "wrong type")
    assert len(found) == 1 and "spec.priority" in found[0], found
    print(f"self-test: {path} passes; a misspelled field and a string for an integer are refused")


def main(argv):
    if argv[:1] == ["--self-test"]:
        for path in argv[1:]:
            self_test(path)
        return 0
    problems = [p for path in argv for p in check_file(path)]
    for p in problems:
        print(p, file=sys.stderr)
    if not problems:
        print(f"{len(argv)} manifests match Istio 1.24's and Kubernetes 1.30's schemas")
    return 1 if problems or not argv else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
