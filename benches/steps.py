#!/usr/bin/env python3
"""make bench, where the time goes: fpgen's core steps (benches/steps) timed
natively and inside Wasm VMs, side by side: V8 (Node.js's, when `node` is
installed: the engine Envoy runs fpgen in; TurboFan only, as in Envoy) and
wasmtime's Cranelift (from PyPI, always). Writes
target/bench/steps.md.

    python benches/steps.py NATIVE_BINARY WASM_MODULE
"""
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import subprocess  # noqa: E402

WASMTIME = os.environ.get("WASMTIME_VERSION", "?")  # the version make bench installs (Makefile)


def parse(text):
    rows = {}
    for line in text.splitlines():
        name, _, ns = line.rpartition("\t")
        if name:
            rows[name] = float(ns)
    return rows


def run_wasm(path):
    """Runs a WASI command module under wasmtime; returns its standard output."""
    import wasmtime
    engine = wasmtime.Engine()
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    store = wasmtime.Store(engine)
    with tempfile.NamedTemporaryFile("r", suffix=".out") as out:
        wasi = wasmtime.WasiConfig()
        wasi.stdout_file = out.name
        wasi.inherit_stderr()
        store.set_wasi(wasi)
        module = wasmtime.Module.from_file(engine, path)
        # the proxy-wasm host functions the library links but the steps never call
        linker.define_unknown_imports_as_traps(module)
        instance = linker.instantiate(store, module)
        try:
            instance.exports(store)["_start"](store)
        except wasmtime.ExitTrap as e:
            if e.code != 0:
                raise SystemExit(f"{path} exited with {e.code}")
        return open(out.name).read()


def main():
    native_bin, wasm = sys.argv[1:3]
    native = parse(subprocess.run([native_bin], capture_output=True, text=True, check=True).stdout)
    in_wasm = parse(run_wasm(wasm))
    node = shutil.which("node")
    # --no-liftoff: TurboFan only, as Envoy runs V8 (proxy-wasm-cpp-host)
    in_v8 = parse(subprocess.run([node, "--no-warnings", "--no-liftoff", os.path.join(os.path.dirname(__file__), "run_wasi.cjs"), wasm],
                                 capture_output=True, text=True, check=True).stdout) if node else {}
    nan = float("nan")
    lines = [
        "# Where the time goes: fpgen's core steps, native and in Wasm",
        "",
        f"benches/steps (release, LTO), the median of 7 batches of ~20 ms per step; wasm32-wasip1 under"
        f" wasmtime {WASMTIME} (Cranelift) and " + (f"Node.js {subprocess.run([node, '--version'], capture_output=True, text=True).stdout.strip()} (V8, --no-liftoff)"
                                                   if node else "(no node: V8 not measured)") + "; native: this machine.",
        "",
        "| step | native ns | V8 ns | wasmtime ns | V8 / native |",
        "| --- | ---: | ---: | ---: | ---: |",
    ] + [f"| {name} | {ns:.0f} | {in_v8.get(name, nan):.0f} | {in_wasm.get(name, nan):.0f} | {in_v8.get(name, nan) / max(ns, 1):.1f} |"
         for name, ns in native.items()]
    bench.write_report("steps.md", lines)


if __name__ == "__main__":
    main()
