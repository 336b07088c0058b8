#!/usr/bin/env python3
"""make bench, the price of each host call in Envoy: the Wasm floor
(benches/floor) alone and making each host call fpgen makes on a mint
TIMES times per request, and fpgen's mint GET, interleaved on one Envoy
worker. A call's price is the time per request its TIMES calls add to the
floor (1/rate - 1/rate of the floor, in microseconds of the worker, which
is saturated), divided by TIMES: one call alone is within the noise of a
run. Writes target/bench/hostcalls.md.
"""
import argparse
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

TIMES = 20
VARIANTS = [  # key, floor calls (None: fpgen itself), what
    ("floor", "", "the floor: read :path, send a local reply"),
    ("method", f"method*{TIMES}", "read :method"),
    ("time", f"time*{TIMES}", "read the clock"),
    ("random", f"random*{TIMES}", "24 bytes from WASI random_get"),
    ("property", f"property*{TIMES}", "set the access-log filter state (90 bytes)"),
    ("metric", f"metric*{TIMES}", "add one to a counter"),
    ("all", "method,time,random,property,metric", "the floor + each of the five once (a mint's host calls)"),
    ("fpgen", None, "fpgen, mint GET (realistic request)"),
]
CALLS = ("method", "time", "random", "property", "metric")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="fpgen-hostcalls-")
    procs = []
    try:
        body = "x" * 330  # about a licence URL
        ports = {key: bench.free_port() for key, _, _ in VARIANTS}
        admin = bench.free_port()
        not_found = {"match": {"prefix": "/"}, "direct_response": {"status": 404}}
        listeners = [bench.listener(key, ports[key], [not_found], [
            bench.wasm_filter(False, bench.CONFIG) if calls is None else
            bench.wasm_filter(False, f"calls={calls}\n{body}" if calls else body, bench.FLOOR_WASM, "floor"),
            bench.ROUTER]) for key, calls, _ in VARIANTS]
        boot = os.path.join(work, "envoy.json")
        with open(boot, "w") as f:
            json.dump({"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
                       "static_resources": {"listeners": listeners}}, f)
        procs.append(subprocess.Popen([bench.ENVOY, "-c", boot, "--concurrency", "1", "--disable-hot-restart",
                                       "--log-level", "error"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        bench.wait_token(ports["fpgen"], time.monotonic() + 30)
        url = {key: f"http://127.0.0.1:{ports[key]}/hms/fp/token?{bench.QUERY}" for key, _, _ in VARIANTS}
        for key, _, _ in VARIANTS:
            status, _ = bench.get(url[key])
            assert status == 200, (key, status)
            bench.run_wrk(url[key], 1, args.connections)
        rates = {key: [] for key, _, _ in VARIANTS}
        for r in range(args.rounds):
            for key, _, what in VARIANTS:
                res = bench.run_wrk(url[key], args.seconds, args.connections)
                if res["non2xx"] or res["socket_errors"]:
                    raise SystemExit(f"{key}: errors under load: {res}")
                rates[key].append(res["rps"])
                print(f"round {r + 1} {what:45s} {res['rps']:9.0f} req/s", flush=True)
    finally:
        bench.stop(procs)
        shutil.rmtree(work, ignore_errors=True)
    med = {key: statistics.median(v) for key, v in rates.items()}
    us = lambda key: 1e6 / med[key]
    price = {key: (us(key) - us("floor")) / TIMES for key in CALLS}
    what = {key: w for key, _, w in VARIANTS}
    lines = [
        f"# The price of host calls in Envoy ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        f"One Envoy worker; wrk -t1 -c{args.connections}; {args.rounds} interleaved rounds of {args.seconds} s; medians.",
        "µs per request: the worker's time per request (1 / rate). Each call's variant makes it"
        f" {TIMES} times per request; its price is the time added to the floor / {TIMES}.",
        "",
        "| variant | req/s | µs per request | µs per call |",
        "| --- | ---: | ---: | ---: |",
        f"| {what['floor']} | {med['floor']:.0f} | {us('floor'):.1f} | |",
    ] + [f"| + {what[key]} x {TIMES} | {med[key]:.0f} | {us(key):.1f} | {price[key]:.2f} |" for key in CALLS] + [
        f"| {what['all']} | {med['all']:.0f} | {us('all'):.1f} | (sum of the prices: {sum(price.values()):.1f}) |",
        f"| {what['fpgen']} | {med['fpgen']:.0f} | {us('fpgen'):.1f} | |",
        "",
        f"fpgen's mint costs {us('fpgen') - us('floor'):.1f} µs per request more than the floor; its five host calls"
        f" account for about {sum(price.values()):.1f} µs of that, the rest is fpgen's own work in V8 (the core's"
        " steps, priced by steps.md; the counter lookup and the access-log fields; memory allocation).",
    ]
    bench.write_report("hostcalls.md", lines)


if __name__ == "__main__":
    main()
