#!/usr/bin/env python3
"""make bench, configuration at scale: 1,000 customers with 100 stored keys
each (a 9 MB filter configuration). For 1, 2 and 8 Envoy workers: the time
from starting Envoy to the first token, and Envoy's resident memory once it
serves; memory per additional worker is (RSS with 8 - RSS with 2) / 6.
Writes target/bench/scale.md.

Goals (issue 12): first token <= 1.5 s; <= 10 MiB per additional worker.
"""
import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

DEMO = os.path.join(bench.ROOT, "tests/fixtures/demo-config.json")


def big_config(customers, keys):
    """The demo configuration with `customers` customers of `keys` stored
    keys each (the demo's first, so that bench.QUERY mints)."""
    with open(DEMO) as f:
        config = json.load(f)
    demo = config["customers"][0]
    wrapped = next(iter(demo["key_store"].values()))
    config["customers"] = [demo] + [{
        "id": str(200000 + i), "environment": "test",
        "authenticator_sha256": hashlib.sha256(f"secret-{i}".encode()).hexdigest(),
        "kek": demo["kek"],
        "key_store": {f"{j:08x}{i:024x}": wrapped for j in range(keys)},
    } for i in range(1, customers)]
    return config


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def start_to_first_token(config, workers, work):
    port, admin = bench.free_port(), bench.free_port()
    boot = os.path.join(work, f"scale-{workers}.json")
    with open(boot, "w") as f:
        json.dump(bench.bootstrap(port, admin, bench.free_port(), "x", config=config), f)
    started = time.monotonic()
    envoy = subprocess.Popen([bench.ENVOY, "-c", boot, "--concurrency", str(workers), "--disable-hot-restart",
                              "--log-level", "error"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        bench.wait_token(port, started + 60)
        first = time.monotonic() - started
        time.sleep(1)
        return first, rss_mib(envoy.pid)
    finally:
        bench.stop([envoy])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=1000)
    ap.add_argument("--keys", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3, help="starts per worker count (medians)")
    args = ap.parse_args()
    config = big_config(args.customers, args.keys)
    size = len(json.dumps(config))
    work = tempfile.mkdtemp(prefix="fpgen-scale-")
    results = {}
    try:
        for _ in range(args.runs):  # interleaved: 1, 2, 8, 1, 2, 8, ...
            for workers in (1, 2, 8):
                first, rss = start_to_first_token(config, workers, work)
                results.setdefault(workers, []).append((first, rss))
                print(f"workers {workers}: first token {first:.2f} s, RSS {rss:.0f} MiB", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {w: tuple(statistics.median(r[i] for r in rs) for i in (0, 1)) for w, rs in results.items()}
    per_worker = (med[8][1] - med[2][1]) / 6
    lines = [
        f"# Configuration at scale ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        f"{args.customers} customers x {args.keys} stored keys ({size / 2**20:.1f} MiB of JSON); "
        f"medians of {args.runs} starts per worker count.",
        "",
        "| workers | start to first token | Envoy RSS |",
        "| ---: | ---: | ---: |",
    ] + [f"| {w} | {m[0]:.2f} s | {m[1]:.0f} MiB |" for w, m in sorted(med.items())] + [
        "",
        f"- start to first token, 1 worker: {med[1][0]:.2f} s (goal <= 1.5 s)",
        f"- memory per additional worker: {per_worker:.1f} MiB (goal <= 10 MiB)",
    ]
    bench.write_report("scale.md", lines)
    # make bench runs this after bench.py: its goals join the results table
    results = os.path.join(bench.OUT_DIR, "results.md")
    if os.path.exists(results):
        with open(results, "a") as f:
            f.write("\n" + "\n".join(["## " + lines[0].lstrip("# ")] + lines[1:]) + "\n")


if __name__ == "__main__":
    main()
