#!/usr/bin/env python3
"""make profile: where Envoy's CPU time per request goes, per scenario of make bench, by
`perf record` (cpu-clock samples with DWARF call graphs) of an Envoy with one worker (every thread
of it sampled) under wrk.

Each scenario's Envoy CPU µs per request (as make bench measures it) is split by where the
samples fell: the kernel (sockets, syscalls), Envoy's own code, libc and the allocator,
fpgen's native module (by function), and the Wasm VM's JIT code (V8's anonymous pages: fpgen's
code and the SDK's). Inclusive time is also given for each dynamic-module callback fpgen calls
(`envoy_dynamic_module_callback_*`, Envoy's exported entry points: what each host call costs
inside Envoy) and for fpgen's hooks. Envoy's binary is stripped, so its own functions have no
names; the module is built with its symbols (target/native-prof, `make profile`).

    python benches/profile.py [--only N,NU,...] [--seconds 4]

Writes target/bench/profile.md.
"""
import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

PROF_SO = os.path.join(bench.ROOT, "target/native-prof/release/libfpgen.so")
SCENARIOS = ["NU", "N", "NW", "NR", "P", "NG", "A", "F", "B"]


def classify(dso, sym):
    """The part of Envoy's work a sample's own (leaf) frame is."""
    if dso.startswith("[kernel") or dso == "[vdso]":
        return "kernel"
    if "libfpgen" in dso:
        return "fpgen (native module)"
    if dso.startswith("libc") or dso.startswith("ld-linux") or "libm" in dso:
        return "libc"
    if dso in ("[unknown]", "[anon]") or dso.startswith(("//anon", "[JIT", "perf-")):
        return "Wasm JIT code (V8)"
    if dso == "envoy":
        return "Envoy"
    return dso


def perf_samples(data):
    """(dso, symbol) of each sample's leaf frame, and the set of callback/hook symbols anywhere on
    its stack (for inclusive time)."""
    out = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym,dso", "--no-inline"],
                         capture_output=True, text=True, check=True).stdout
    samples = []
    for block in out.split("\n\n"):
        frames = [ln.strip() for ln in block.strip().splitlines() if ln.strip()]
        if not frames:
            continue
        parsed = []
        for fr in frames:
            m = re.match(r"([0-9a-f]+)\s+(.*?)\s+\((.*)\)$", fr)
            if m:
                parsed.append((m.group(2), os.path.basename(m.group(3))))
        if not parsed:
            continue
        leaf_sym, leaf_dso = parsed[0]
        on_stack = {s.split("+")[0] for s, _ in parsed
                    if s.startswith(("envoy_dynamic_module_", "fpgen::", "fpgen_core::", "<fpgen"))}
        samples.append((leaf_dso, leaf_sym.split("+")[0], on_stack))
    return samples


def profile(url, script, seconds, connections, pid, work, key):
    data = os.path.join(work, f"{key}.data")
    before = bench.cpu_seconds(pid)
    rec = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "2000", "--call-graph", "dwarf,16384",
                            "-p", str(pid), "-o", data], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s"] + (["-s", script] if script else []) + [url]
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rec.send_signal(2)
    if rec.wait(timeout=120) not in (0, -2) or not os.path.exists(data):
        raise SystemExit(f"perf record failed (exit {rec.returncode}): is perf allowed here? "
                         "(/proc/sys/kernel/perf_event_paranoid; run as root)")
    after = bench.cpu_seconds(pid)
    requests = int(re.search(r"(\d+) requests in", text).group(1))
    # perf's own overhead is in the CPU time too; the split is of the samples, the total is
    # rescaled to an unprofiled run's (measured separately below)
    return data, requests, (after - before) / max(requests, 1) * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", default=",".join(SCENARIOS))
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    keys = args.only.split(",")
    if not shutil.which("perf"):
        raise SystemExit("perf is not installed (Debian: linux-perf)")
    if not os.path.exists(PROF_SO):
        raise SystemExit(f"{PROF_SO} is missing: make profile builds it")
    work = tempfile.mkdtemp(prefix="fpgen-profile-")
    procs = []
    lines = ["# Where Envoy's CPU time per request goes (make profile)", "",
             f"`perf record -e cpu-clock -F 2000 --call-graph dwarf` of one Envoy worker under "
             f"`wrk -c{args.connections}` for {args.seconds} s per scenario; µs are Envoy's CPU µs per request "
             "of an unprofiled run of the same scenario, split in the proportions of the samples.", ""]
    try:
        ports = {k: bench.free_port() for k in ("plain", "floor", "scoped", "origin", "native")}
        port, admin = bench.free_port(), bench.free_port()
        config_path = os.path.join(work, "config.json")
        with open(config_path, "w") as f:
            json.dump(bench.CONFIG, f)
        # a licence URL's size (with its CRLF), as make bench's floor and direct_response answer
        static_body = "x" * (len(bench.mint_url(config_path)) + 2)
        boot = os.path.join(work, "envoy.json")
        with open(boot, "w") as f:
            json.dump(bench.bootstrap(port, admin, bench.free_port(), static_body, ports=ports), f)
        envoy = subprocess.Popen([bench.ENVOY, "-c", boot, "--concurrency", "1", "--disable-hot-restart",
                                  "--log-level", "error"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 env=dict(os.environ, ENVOY_DYNAMIC_MODULES_SEARCH_PATH=os.path.dirname(PROF_SO)))
        procs.append(envoy)
        bench.wait_token(port, time.monotonic() + 30)
        pid = envoy.pid  # (the venv's envoy script execs the binary)
        token = bench.mint_url(config_path).split("ExpressPlayToken=", 1)[1]
        rights = f"/hms/fp/rights/?ExpressPlayToken={token}"
        spc = bench.lua(work, "spc.lua", "POST", "s" * bench.SPC_BYTES, "application/octet-stream")
        plain, native = f"http://127.0.0.1:{ports['plain']}", f"http://127.0.0.1:{ports['native']}"
        targets = {
            "A": (f"{plain}/static", None),
            "F": (f"http://127.0.0.1:{ports['floor']}/hms/fp/token?{bench.QUERY}", None),
            "B": (f"http://127.0.0.1:{port}/hms/fp/token?{bench.QUERY}", None),
            "P": (f"{plain}{rights}", spc),
            "N": (f"{native}/hms/fp/token?{bench.QUERY}", None),
            "NW": (f"{native}/hms/wv/token?{bench.WV_QUERY}", None),
            "NR": (f"{native}/hms/pr/token?{bench.PR_QUERY}", None),
            "NG": (f"{native}{rights}", spc),
            "NU": (f"{native}/unrelated", None),
        }
        labels = dict(bench.SCENARIOS)
        for key in keys:
            url, script = targets[key]
            bench.run_wrk(url, 1, args.connections, script)  # warm-up
            plain_cpu = [bench.run_wrk(url, 2, args.connections, script, pid=pid)["cpu_us"] for _ in range(3)]
            cpu = sorted(plain_cpu)[1]
            data, requests, _ = profile(url, script, args.seconds, args.connections, pid, work, key)
            samples = perf_samples(data)
            total = max(len(samples), 1)
            parts = collections.Counter(classify(d, s) for d, s, _ in samples)
            fpgen_syms = collections.Counter(s for d, s, _ in samples if "libfpgen" in d)
            inclusive = collections.Counter(s for _, _, on in samples for s in on)
            lines += [f"## {labels.get(key, key)}", "",
                      f"Envoy CPU per request (unprofiled, median of 3): **{cpu:.1f} µs**; {total} samples.", "",
                      "| where (leaf frame) | share | µs per request |", "| --- | ---: | ---: |"]
            lines += [f"| {part} | {n / total:.1%} | {cpu * n / total:.2f} |" for part, n in parts.most_common()]
            if fpgen_syms:
                lines += ["", "fpgen's own functions (self time, top 30):", "",
                          "| function | µs per request |", "| --- | ---: |"]
                lines += [f"| `{s[:90]}` | {cpu * n / total:.2f} |" for s, n in fpgen_syms.most_common(30)]
            if inclusive:
                lines += ["", "Inclusive (everything under it): fpgen's hooks and Envoy's callbacks:", "",
                          "| function | µs per request |", "| --- | ---: |"]
                lines += [f"| `{s[:90]}` | {cpu * n / total:.2f} |" for s, n in inclusive.most_common(40)]
            lines.append("")
            print(f"{key}: {cpu:.1f} µs/request, {dict(parts)}", flush=True)
    finally:
        bench.stop(procs)
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(bench.OUT_DIR, exist_ok=True)
    path = os.path.join(bench.OUT_DIR, "profile.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
