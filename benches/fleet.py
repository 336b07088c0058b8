#!/usr/bin/env python3
"""make bench, fleet budgets: what asking a rate-limit service costs a mint.

One Envoy (one worker) runs fpgen with four customers, minted with the realistic request of
bench.py; `fpgen ratelimit` on a Redis of its own keeps the fleet budgets (budgets too large to
be spent during the run). Scenarios, interleaved round by round, medians quoted:
  N     no budget
  T     a local token_budget (shared data, no network)
  L1    a fleet_budget with lease 1: every mint waits for a gRPC call to the service
  L50   a fleet_budget with lease 50: mints come from the Envoy's lease, refilled in the background
  L500  the same with lease 500 (a lease that covers the refill's few milliseconds at this rate)
Reported as req/s, p50 and p99, and as ratios to N; also the service's calls per mint.

Needs what bench.py needs, target/release/fpgen and a redis-server (REDIS_SERVER, else
target/redis/redis-server: `make redis`).
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

REDIS = os.environ.get("REDIS_SERVER") or os.path.join(bench.ROOT, "target/redis/redis-server")
BIG = 4_000_000_000  # never spent during the run
SCENARIOS = [  # key, label, customer, budget fields
    ("N", "N   no budget", "100001", {}),
    ("T", "T   token_budget (local)", "100002", {"token_budget": BIG}),
    ("L1", "L1  fleet_budget, lease 1", "100003", {"fleet_budget": {"tokens": BIG, "per": "year"}}),
    ("L50", "L50 fleet_budget, lease 50", "100004",
     {"fleet_budget": {"tokens": BIG, "per": "year", "lease": 50}}),
    ("L500", "L500 fleet_budget, lease 500", "100005",
     {"fleet_budget": {"tokens": BIG, "per": "year", "lease": 500}}),
]


def config():
    c = json.loads(json.dumps(bench.CONFIG))
    c["rate_limit_service"] = {"cluster": "ratelimit", "timeout_ms": 1000}
    digest = c["customers"][0]["authenticator_sha256"]
    c["customers"] = [dict({"id": cid, "environment": "test", "authenticator_sha256": digest}, **extra)
                      for _, _, cid, extra in SCENARIOS]
    return c


def query(customer):
    return bench.QUERY.replace("customerAuthenticator=100001,", f"customerAuthenticator={customer},", 1)


def bootstrap(port, admin, rls_port):
    h2 = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}}}}
    ratelimit = dict(bench.cluster("ratelimit", rls_port), typed_extension_protocol_options=h2)
    not_found = {"match": {"prefix": "/"}, "direct_response": {"status": 404}}
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "clusters": [ratelimit],
            "listeners": [bench.listener("bench", port, [not_found],
                                         [bench.wasm_filter(False, config()), bench.ROUTER])]},
    }


def service_requests(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats", timeout=2) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("fpgen_ratelimit.requests: "):
                return int(line.split(": ")[1])
    raise SystemExit("fpgen ratelimit has no requests counter")


def wait(url, what, deadline):
    while time.monotonic() < deadline:
        try:
            status, _ = bench.get(url, timeout=0.5)
            if status == 200:
                return
        except Exception:
            pass
        time.sleep(0.01)
    raise SystemExit(f"{what} did not come up")


def main():
    rounds, seconds, connections = 5, 5, 32
    procs = []
    work = tempfile.mkdtemp(prefix="fpgen-fleet-bench-")
    try:
        redis_port, rls_port, rls_admin = bench.free_port(), bench.free_port(), bench.free_port()
        procs.append(subprocess.Popen([REDIS, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                       "--appendonly", "no", "--dir", work], stdout=subprocess.DEVNULL))
        procs.append(subprocess.Popen([bench.FPGEN, "ratelimit", "--listen", f"127.0.0.1:{rls_port}",
                                       "--admin", f"127.0.0.1:{rls_admin}",
                                       "--redis", f"redis://127.0.0.1:{redis_port}"], stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 30
        wait(f"http://127.0.0.1:{rls_admin}/ready", "fpgen ratelimit (and Redis)", deadline)
        port, admin = bench.free_port(), bench.free_port()
        boot = os.path.join(work, "envoy.json")
        with open(boot, "w") as f:
            json.dump(bootstrap(port, admin, rls_port), f)
        procs.append(subprocess.Popen([bench.ENVOY, "-c", boot, "--concurrency", "1", "--disable-hot-restart",
                                       "--log-level", "error"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        url = lambda cid: f"http://127.0.0.1:{port}/hms/fp/token?{query(cid)}"
        for _, _, cid, _ in SCENARIOS:
            wait(url(cid), "Envoy", deadline)
        for _, _, cid, _ in SCENARIOS:  # warm-up
            bench.run_wrk(url(cid), 2, connections)
        results = {key: [] for key, *_ in SCENARIOS}
        calls = {key: [] for key, *_ in SCENARIOS}
        for r in range(rounds):
            for key, label, cid, _ in SCENARIOS:
                before = service_requests(rls_admin)
                res = bench.run_wrk(url(cid), seconds, connections)
                if res["non2xx"] or res["socket_errors"]:
                    raise SystemExit(f"{label}: errors under load: {res}")
                mints = res["rps"] * seconds
                calls[key].append((service_requests(rls_admin) - before) / mints if mints else 0)
                results[key].append(res)
                print(f"round {r + 1} {label:30s} {res['rps']:9.0f} req/s  p50 {res['p50']:.3f} ms"
                      f"  p99 {res['p99']:.3f} ms", flush=True)
        med = {k: {m: statistics.median(x[m] for x in rs) for m in ("rps", "p50", "p99")}
               for k, rs in results.items()}
        lines = [
            "# make bench: fleet budgets",
            "",
            f"One Envoy worker, wrk with {connections} connections, {rounds} interleaved rounds of {seconds} s per"
            " scenario, medians; `fpgen ratelimit` and Redis on the same machine (loopback).",
            "",
            "| scenario | req/s | p50 ms | p99 ms | req/s / N | p99 / N | service calls per mint |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for key, label, _, _ in SCENARIOS:
            m = med[key]
            lines.append(f"| {label} | {m['rps']:.0f} | {m['p50']:.3f} | {m['p99']:.3f} | "
                         f"{m['rps'] / med['N']['rps']:.2f} | {m['p99'] / med['N']['p99']:.2f} | "
                         f"{statistics.median(calls[key]):.3f} |")
        bench.write_report("fleet.md", lines)
    finally:
        bench.stop(procs)


if __name__ == "__main__":
    main()
