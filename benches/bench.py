#!/usr/bin/env python3
"""make bench: fpgen in Envoy against Envoy's own limit and against a token backend.

Scenarios, interleaved round by round (A B-GET B-POST C, ... ), medians quoted:
  A       Envoy answers a direct_response of the licence URL's size, on a listener with no filter.
  B-GET   fpgen answers GET /hms/fp/token itself (realistic request).
  B-POST  the same parameters as a form POST.
  C       Envoy routes the same GET to `fpgen serve` (native, same library) on loopback.
  B-scoped  the GET on a listener where the filter is scoped to its routes (as shipped).
  U       a request to an unrelated route (a direct_response): on the listener with no
          filter (U0), with the filter on every request (U-all), scoped as shipped (U-scoped).
Also: the .wasm size, the time from Envoy start to the first token, Envoy's memory
after a warm-up and after a million requests.

Needs: .venv/bin/envoy, target/wasm32-wasip1/release/fpgen.wasm,
target/release/fpgen, wrk and h2load (make bench installs them).
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENVOY = os.path.join(ROOT, ".venv/bin/envoy")
WASM = os.path.join(ROOT, "target/wasm32-wasip1/release/fpgen.wasm")
FPGEN = os.path.join(ROOT, "target/release/fpgen")
OUT_DIR = os.path.join(ROOT, "target/bench")

CONFIG = {
    "environment": "test",
    "redeem_url": {"scheme": "https", "host": "fp.test.expressplay.com", "port": 443, "path": "/hms/fp/rights/"},
    "sealing_keys": [{"id": "bench-2026", "key": "a88deb5c6fc4b09434f9dab3a25f79cd7ddf67a025c179c9a9b6153dbf56f132"}],
    "customers": [{"id": "100001", "environment": "test",
                   "authenticator_sha256": "3eb1bd439947eb762998e566ccc2e099c791118b2f40579cc4f7da2b5061b7f9"}],
}
# authenticator, kid, contentKey, iv, expirationTime, cookie, one fpExtension
QUERY = ("customerAuthenticator=100001,0123456789abcdef0123456789abcdef"
         "&kid=11112222333344445555666677778888&contentKey=000102030405060708090a0b0c0d0e0f"
         "&iv=0f0e0d0c0b0a09080706050403020100&expirationTime=%2B3600&cookie=bench-session-0001"
         "&fpExtension=wudo,AAAAAA%3D%3D")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wasm_filter(scoped, config):
    return {"name": "envoy.filters.http.wasm", "disabled": scoped, "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {"name": "fpgen", "root_id": "fpgen", "allow_on_headers_stop_iteration": True,
                   "failure_policy": "FAIL_RELOAD",
                   "vm_config": {"runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": WASM}}},
                   "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                     "value": json.dumps(config)}}}}


ENABLED = {"envoy.filters.http.wasm": {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "config": {}}}


def listener(name, port, routes, http_filters):
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "use_remote_address": True,
                "route_config": {"virtual_hosts": [{"name": name, "domains": ["*"], "routes": routes}]},
                "http_filters": http_filters,
            }}]}],
    }


def bootstrap(port, admin, serve_port, static_body, static_port=None, scoped_port=None, config=CONFIG):
    route = lambda prefix, action: dict({"match": {"prefix": prefix}}, **action)
    unrelated = route("/unrelated", {"direct_response": {"status": 200, "body": {"inline_string": static_body}}})
    static_route = route("/static", {"direct_response": {"status": 200, "body": {"inline_string": static_body}},
                                     "response_headers_to_add": [{"header": {"key": "content-type", "value": "text/uri-list"}}]})
    router = {"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
    # A: a listener with no filter but the router, answering a direct_response
    plain = [] if static_port is None else [listener("plain", static_port, [static_route, unrelated], [router])]
    # the filter scoped as in envoy/: disabled in the HCM, enabled on the token route
    scoped = [] if scoped_port is None else [listener("scoped", scoped_port, [
        dict({"match": {"path_separated_prefix": "/hms/fp/token"}, "direct_response": {"status": 404},
              "typed_per_filter_config": ENABLED}),
        unrelated,
    ], [wasm_filter(True, config), router])]
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "clusters": [{
                "name": "fpgen_serve", "type": "STATIC", "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "fpgen_serve", "endpoints": [{"lb_endpoints": [{"endpoint": {
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": serve_port}}}}]}]},
            }],
            "listeners": plain + scoped + [listener("bench", port, [
                static_route,
                unrelated,
                route("/backend/hms/fp/token", {"route": {"cluster": "fpgen_serve", "prefix_rewrite": "/hms/fp/token"}}),
                route("/", {"direct_response": {"status": 404}}),
            ], [wasm_filter(False, config), router])],
        },
    }


def get(url, data=None, timeout=2):
    req = urllib.request.Request(url, data=data)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


def wait_token(port, deadline):
    url = f"http://127.0.0.1:{port}/hms/fp/token?{QUERY}"
    while time.monotonic() < deadline:
        try:
            status, body = get(url, timeout=0.5)
            if status == 200 and b"ExpressPlayToken=" in body:
                return body
        except Exception:
            pass
        time.sleep(0.005)
    raise SystemExit("Envoy did not answer a token in time")


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(text):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    lat = {}
    for pct, val, unit in re.findall(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", text, re.M):
        lat[pct] = float(val) * UNITS[unit]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: (.*)", text)
    return {"rps": rps, "p50": lat.get("50"), "p99": lat.get("99"),
            "non2xx": int(non2xx.group(1)) if non2xx else 0, "socket_errors": errors.group(1) if errors else ""}


def run_wrk(url, seconds, connections, script=None):
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script:
        cmd += ["-s", script]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def memory(admin):
    _, body = get(f"http://127.0.0.1:{admin}/memory")
    m = json.loads(body)
    return int(m["allocated"]), int(m["heap_size"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5, help="per scenario per round")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1, help="Envoy --concurrency")
    ap.add_argument("--million", type=int, default=1_000_000, help="requests for the memory check")
    args = ap.parse_args()
    for tool in ("wrk", "h2load"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing (make bench installs it)")
    work = tempfile.mkdtemp(prefix="fpgen-bench-")
    procs = []
    try:
        # the native token service (scenario C), one worker thread like Envoy's one worker
        serve_port = free_port()
        config_path = os.path.join(work, "config.json")
        with open(config_path, "w") as f:
            json.dump(CONFIG, f)
        procs.append(subprocess.Popen([FPGEN, "serve", "--config", config_path, "--listen", f"127.0.0.1:{serve_port}",
                                       "--threads", str(args.workers)], stderr=subprocess.DEVNULL))
        # a licence URL of the realistic request, for the size of A's static body
        url = subprocess.run([FPGEN, "mint", "--config", config_path, "--query", QUERY], capture_output=True, text=True,
                             check=True).stdout.strip()
        static_body = "x" * (len(url) + 2)

        port, admin, static_port, scoped_port = free_port(), free_port(), free_port(), free_port()
        boot = os.path.join(work, "envoy.json")
        with open(boot, "w") as f:
            json.dump(bootstrap(port, admin, serve_port, static_body, static_port, scoped_port), f)
        started = time.monotonic()
        envoy = subprocess.Popen([ENVOY, "-c", boot, "--concurrency", str(args.workers), "--disable-hot-restart",
                                  "--log-level", "error"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(envoy)
        body = wait_token(port, started + 30)
        first_token_ms = (time.monotonic() - started) * 1000
        assert len(body) == len(static_body), (len(body), len(static_body))

        lua = os.path.join(work, "post.lua")
        with open(lua, "w") as f:
            f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
                    f'wrk.body = "{QUERY}"\n')
        base = f"http://127.0.0.1:{port}"
        scenarios = [
            ("A  Envoy direct_response", f"http://127.0.0.1:{static_port}/static", None),
            ("B  fpgen GET", f"{base}/hms/fp/token?{QUERY}", None),
            ("B  fpgen POST", f"{base}/hms/fp/token", lua),
            ("C  Envoy -> fpgen serve", f"{base}/backend/hms/fp/token?{QUERY}", None),
            ("B  fpgen GET, scoped", f"http://127.0.0.1:{scoped_port}/hms/fp/token?{QUERY}", None),
            ("U0 unrelated, no filter", f"http://127.0.0.1:{static_port}/unrelated", None),
            ("U  unrelated, filter on all", f"{base}/unrelated", None),
            ("U  unrelated, scoped", f"http://127.0.0.1:{scoped_port}/unrelated", None),
        ]
        # warm-up
        for _, u, s in scenarios:
            run_wrk(u, 2, args.connections, s)
        mem_warm = memory(admin)
        results = {name: [] for name, _, _ in scenarios}
        for r in range(args.rounds):
            for name, u, s in scenarios:
                res = run_wrk(u, args.seconds, args.connections, s)
                if res["non2xx"] or res["socket_errors"]:
                    raise SystemExit(f"{name}: errors under load: {res}")
                results[name].append(res)
                print(f"round {r + 1} {name:26s} {res['rps']:9.0f} req/s  p50 {res['p50']:.3f} ms  p99 {res['p99']:.3f} ms",
                      flush=True)
        med = {n: {k: statistics.median(x[k] for x in rs) for k in ("rps", "p50", "p99")} for n, rs in results.items()}

        # a million requests, then memory again
        h2 = subprocess.run(["h2load", "--h1", "-n", str(args.million), "-c", str(args.connections), "-t", "1",
                             f"{base}/hms/fp/token?{QUERY}"], capture_output=True, text=True, check=True).stdout
        done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", h2)
        mem_million = memory(admin)
        wasm_size = os.path.getsize(WASM)

        a, bg, bp, c, bs, u0, ua, us = (med[n] for n, _, _ in scenarios)
        lines = [
            f"# fpgen benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
            "",
            f"Machine: {os.cpu_count()} cores; Envoy 1.40.0 --concurrency {args.workers}; load: wrk -t1 -c{args.connections},"
            f" {args.rounds} interleaved rounds of {args.seconds} s per scenario, medians.",
            "",
            "| scenario | req/s | p50 ms | p99 ms |",
            "| --- | ---: | ---: | ---: |",
        ] + [f"| {n} | {m['rps']:.0f} | {m['p50']:.3f} | {m['p99']:.3f} |" for n, m in med.items()] + [
            "",
            "| ratio | GET | POST | goal |",
            "| --- | ---: | ---: | --- |",
            f"| B/A throughput | {bg['rps'] / a['rps']:.2f} | {bp['rps'] / a['rps']:.2f} | >= 0.85 (aim 0.95) |",
            f"| B/A p99 latency | {bg['p99'] / a['p99']:.2f} | {bp['p99'] / a['p99']:.2f} | <= 1.2 |",
            f"| B/C throughput | {bg['rps'] / c['rps']:.2f} | | >= 1.5 |",
            f"| B/C p99 latency | {bg['p99'] / c['p99']:.2f} | | |",
            f"| B scoped / B throughput | {bs['rps'] / bg['rps']:.2f} | | about 1 |",
            "",
            "| unrelated route / the same on a listener with no filter | throughput | p99 | goal |",
            "| --- | ---: | ---: | --- |",
            f"| filter on every request | {ua['rps'] / u0['rps']:.2f} | {ua['p99'] / u0['p99']:.2f} | |",
            f"| filter scoped to its routes (as shipped) | {us['rps'] / u0['rps']:.2f} | {us['p99'] / u0['p99']:.2f} | >= 0.97 |",
            "",
            f"- .wasm size: {wasm_size} bytes ({wasm_size / 1024:.0f} KiB; goal <= 256 KiB)",
            f"- Envoy start to first token: {first_token_ms:.0f} ms",
            f"- Envoy memory (admin /memory, allocated / heap): after warm-up {mem_warm[0] / 2**20:.1f} / {mem_warm[1] / 2**20:.1f} MiB;"
            f" after {int(done.group(1)) if done else 0} more requests ({done.group(3) if done else '?'} failed)"
            f" {mem_million[0] / 2**20:.1f} / {mem_million[1] / 2**20:.1f} MiB"
            f" (growth {(mem_million[0] - mem_warm[0]) / 2**20:+.2f} MiB)",
            "",
            "How to read it: A is the most Envoy can do when it answers locally; B/A near 1 means the filter costs",
            "little on top. C is the same token work done by a separate native service behind Envoy; B/C above 1",
            "is what minting at the edge gains over a backend hop. Ratios come from one run on one machine, interleaved,",
            "so load from other processes hits all scenarios alike; absolute numbers are not comparable across machines.",
        ]
        write_report("results.md", lines)
    finally:
        stop(procs)
        shutil.rmtree(work, ignore_errors=True)


def write_report(name, lines):
    """Prints the report and writes it to target/bench/<name>."""
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, name)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\n(written to {os.path.relpath(path, ROOT)})")


def stop(procs):
    """Stops the processes: SIGTERM to all, then SIGKILL to any still
    running after 5 s."""
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()


if __name__ == "__main__":
    main()
