#!/usr/bin/env python3
"""make bench: fpgen in Envoy against Envoy's own limit, the Wasm floor and a token backend.

Scenarios, interleaved round by round, medians quoted:
  A       Envoy answers a direct_response of the licence URL's size, on a listener with no filter.
  F       the Wasm floor: a no-op proxy-wasm module (benches/floor) answers /hms/fp/token with a
          constant URL of the same size (V8 entry, one header read, one local reply).
  B-GET   fpgen answers GET /hms/fp/token itself (realistic request).
  B-POST  the same parameters as a form POST.
  B-scoped  the GET on a listener where the filter is scoped to its routes (as shipped).
  C       Envoy routes the same GET to `fpgen serve` (native, same library) on loopback.
  G       a licence request (POST of a 2 KB SPC with a valid token) through the redemption gate
          to an origin listener; P: the same request proxied to the same origin without the filter.
  U       a request to an unrelated route (a direct_response): on the listener with no
          filter (U0), with the filter on every request (U-all), scoped as shipped (U-scoped).
  N       fpgen as a native dynamic module (target/native/release/libfpgen.so): the same GET (N),
          form POST (NP) and licence request through its gate to the origin (NG); NU: a
          direct_response on an unrelated route of the native module's listener.
Each run also measures Envoy's CPU µs per request (its process CPU time over the requests wrk
counted); issue 34's goals are ratios of it (cpu_rows).
The whole set runs with one Envoy worker, then again with two (--workers 1,2).
Also: the .wasm size, the time from Envoy start to the first token, Envoy's memory
after a warm-up and after a million requests (one worker).

Needs: .venv/bin/envoy, target/wasm32-wasip1/release/fpgen.wasm, target/floor/wasm32-wasip1/release/fpgen_floor.wasm,
target/release/fpgen, wrk and h2load (make bench builds and installs them).
"""
import argparse
import collections
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
    "widevine_redeem_url": {"scheme": "https", "host": "wv.test.expressplay.com", "port": 443, "path": "/hms/wv/rights/"},
    "playready_redeem_url": {"scheme": "https", "host": "pr.test.expressplay.com", "port": 443,
                             "path": "/playready/RightsManager.asmx"},
    "customers": [{"id": "100001", "environment": "test", "widevine_enabled": True, "playready_enabled": True,
                   "authenticator_sha256": "3eb1bd439947eb762998e566ccc2e099c791118b2f40579cc4f7da2b5061b7f9"}],
    # the gate of envoy/gate.yaml (scenario G)
    "redemption": {"header_prefix": "x-fpgen-", "strip_token": True},
}
# authenticator, kid, contentKey, iv, expirationTime, cookie, one fpExtension
QUERY = ("customerAuthenticator=100001,0123456789abcdef0123456789abcdef"
         "&kid=11112222333344445555666677778888&contentKey=000102030405060708090a0b0c0d0e0f"
         "&iv=0f0e0d0c0b0a09080706050403020100&expirationTime=%2B3600&cookie=bench-session-0001"
         "&fpExtension=wudo,AAAAAA%3D%3D")
# the same request to Widevine's endpoint: kid, contentKey, the two settings it requires,
# expirationTime, cookie, one wvExtension
WV_QUERY = ("customerAuthenticator=100001,0123456789abcdef0123456789abcdef"
            "&kid=11112222333344445555666677778888&contentKey=000102030405060708090a0b0c0d0e0f"
            "&securityLevel=1&hdcpOutputControl=0&expirationTime=%2B3600&cookie=bench-session-0001"
            "&wvExtension=wudo,AAAAAA%3D%3D")
# the same request to PlayReady's endpoint: kid, contentKey, the rights type and the five
# output levels it requires, expirationTime, cookie, one extension
PR_QUERY = ("customerAuthenticator=100001,0123456789abcdef0123456789abcdef"
            "&kid=11112222333344445555666677778888&contentKey=000102030405060708090a0b0c0d0e0f"
            "&rightsType=BuyToOwn&analogVideoOPL=100&compressedDigitalAudioOPL=100&compressedDigitalVideoOPL=100"
            "&uncompressedDigitalAudioOPL=100&uncompressedDigitalVideoOPL=100&expirationTime=%2B3600"
            "&cookie=bench-session-0001&extensionType=wudo&extensionPayload=AAAAAA%3D%3D")
PR_PATH = "/playready/RightsManager.asmx"


def pr_challenge(custom_data, size=None):
    """A PlayReady licence challenge as a CDM writes it (the encrypted client data and the
    signature are stand-ins), `custom_data` in its LA, its encrypted data padded so that the
    whole is `size` bytes (default SPC_BYTES, the size of scenario G's SPC: the gates are
    compared on bodies of one size, so that the ratio is the gates' work, not the bytes a
    larger body costs Envoy to carry; a real challenge is 3-10 KB)."""
    def build(cipher):
        return ('<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
                'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">'
                '<soap:Body><AcquireLicense xmlns="http://schemas.microsoft.com/DRM/2007/03/protocols"><challenge>'
                '<Challenge xmlns="http://schemas.microsoft.com/DRM/2007/03/protocols/messages">'
                '<LA xmlns="http://schemas.microsoft.com/DRM/2007/03/protocols" Id="SignedData" xml:space="preserve">'
                '<Version>1</Version><ContentHeader><WRMHEADER xmlns="http://schemas.microsoft.com/DRM/2007/03/PlayReadyHeader" '
                'version="4.0.0.0"><DATA><PROTECTINFO><KEYLEN>16</KEYLEN><ALGID>AESCTR</ALGID></PROTECTINFO>'
                '<KID>IiIRERERIiIzM0RERFVVZQ==</KID></DATA></WRMHEADER></ContentHeader>'
                '<CLIENTINFO><CLIENTVERSION>10.0.16384.10011</CLIENTVERSION></CLIENTINFO>'
                f'{custom_data}<LicenseNonce>Lg5W6uTqWTjwNJhOTvW/dA==</LicenseNonce><ClientTime>1765000000</ClientTime>'
                '<EncryptedData xmlns="http://www.w3.org/2001/04/xmlenc#" Type="http://www.w3.org/2001/04/xmlenc#Element">'
                '<EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/><CipherData><CipherValue>'
                + cipher + '</CipherValue></CipherData></EncryptedData></LA><Signature xmlns="http://www.w3.org/2000/09/xmldsig#">'
                '<SignatureValue>' + "c2ln" * 22 + '</SignatureValue></Signature></Challenge></challenge></AcquireLicense>'
                '</soap:Body></soap:Envelope>')
    size = size or SPC_BYTES
    return build("Q" * max(0, size - len(build(""))))


FLOOR_WASM = os.path.join(ROOT, "target/floor/wasm32-wasip1/release/fpgen_floor.wasm")
NATIVE_SO = os.path.join(ROOT, "target/native/release/libfpgen.so")
SPC_BYTES = 2048  # a licence request's body (the SPC is 2-5 KB)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wasm_filter(scoped, config, wasm=WASM, name="fpgen"):
    """The Wasm filter: fpgen with `config` (a dict, sent as JSON), or another module with `config`
    as its plugin configuration string."""
    value = config if isinstance(config, str) else json.dumps(config)
    return {"name": "envoy.filters.http.wasm", "disabled": scoped, "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {"name": name, "root_id": name, "allow_on_headers_stop_iteration": True,
                   "failure_policy": "FAIL_RELOAD",
                   "vm_config": {"vm_id": name, "runtime": "envoy.wasm.runtime.v8",
                                 "code": {"local": {"filename": wasm}}},
                   "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                     "value": value}}}}


def native_filter(config):
    """fpgen as a dynamic module (Envoy finds lib<name>.so in ENVOY_DYNAMIC_MODULES_SEARCH_PATH)."""
    return {"name": "envoy.filters.http.dynamic_modules", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
        "dynamic_module_config": {"name": "fpgen", "do_not_close": True},
        "filter_name": "fpgen",
        "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": json.dumps(config)}}}


ENABLED = {"envoy.filters.http.wasm": {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "config": {}}}
BUFFER = {"name": "envoy.filters.http.buffer", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer", "max_request_bytes": 65536}}
ROUTER = {"name": "envoy.filters.http.router", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


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


def cluster(name, port):
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}


def bootstrap(port, admin, serve_port, static_body, config=CONFIG, ports=None):
    """Envoy's bootstrap: the `bench` listener on `port` (fpgen on every request, and a route to
    `fpgen serve` on `serve_port`). `ports` adds the other listeners of the scenarios:
    `plain` (no filter), `floor` (the Wasm floor), `scoped` (fpgen as shipped) and `origin`
    (the upstream of licence requests, no filter)."""
    ports = ports or {}
    route = lambda prefix, action: dict({"match": {"prefix": prefix}}, **action)
    unrelated = route("/unrelated", {"direct_response": {"status": 200, "body": {"inline_string": static_body}}})
    static_route = route("/static", {"direct_response": {"status": 200, "body": {"inline_string": static_body}},
                                     "response_headers_to_add": [{"header": {"key": "content-type", "value": "text/uri-list"}}]})
    not_found = route("/", {"direct_response": {"status": 404}})
    rights = lambda **extra: dict(route("/hms/fp/rights/", {"route": {"cluster": "origin"}}), **extra)
    pr_rights = lambda **extra: dict(route("/playready/", {"route": {"cluster": "origin"}}), **extra)
    listeners, clusters = [], [cluster("fpgen_serve", serve_port)]
    if "origin" in ports:  # what a licence server answers: a CKC-sized body, once it has read the request's
        # (the buffer filter holds the request until its body is in: a direct_response sent before the
        # body would make Envoy close the upstream connection, and every licence request would open one)
        clusters.append(cluster("origin", ports["origin"]))
        listeners.append(listener("origin", ports["origin"], [
            route("/", {"direct_response": {"status": 200, "body": {"inline_string": "c" * 1024}}})], [BUFFER, ROUTER]))
    if "plain" in ports:  # A, U0, P: no filter but the router
        listeners.append(listener("plain", ports["plain"], [static_route, unrelated, rights(), pr_rights(), not_found],
                                  [ROUTER]))
    if "floor" in ports:  # F: the no-op module on every request
        listeners.append(listener("floor", ports["floor"], [not_found],
                                  [wasm_filter(False, static_body, FLOOR_WASM, "floor"), ROUTER]))
    if "native" in ports:  # N, NP, NG: the native module on every request
        listeners.append(listener("native", ports["native"], [rights(), pr_rights(), unrelated, not_found],
                                  [native_filter(config), ROUTER]))
    if "scoped" in ports:  # B-scoped, G, U-scoped: disabled in the HCM, enabled on its routes
        listeners.append(listener("scoped", ports["scoped"], [
            {"match": {"path_separated_prefix": "/hms/fp/token"}, "direct_response": {"status": 404},
             "typed_per_filter_config": ENABLED},
            rights(typed_per_filter_config=ENABLED),
            pr_rights(typed_per_filter_config=ENABLED),
            unrelated,
        ], [wasm_filter(True, config), ROUTER]))
    listeners.append(listener("bench", port, [
        static_route,
        unrelated,
        route("/backend/hms/fp/token", {"route": {"cluster": "fpgen_serve", "prefix_rewrite": "/hms/fp/token"}}),
        not_found,
    ], [wasm_filter(False, config), ROUTER]))
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"clusters": clusters, "listeners": listeners},
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


def cpu_seconds(pid):
    """A process's CPU time so far (user + system, all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # after the command's ")": state is field 3, utime 14 and stime 15 (1-based)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(url, seconds, connections, script=None, pid=None):
    """One wrk run; with `pid` (Envoy's), also Envoy's CPU time per request served, in µs."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script:
        cmd += ["-s", script]
    before = cpu_seconds(pid) if pid else None
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    res = parse_wrk(out)
    requests = re.search(r"(\d+) requests in", out)
    res["requests"] = int(requests.group(1)) if requests else 0
    if pid and res["requests"]:
        res["cpu_us"] = (cpu_seconds(pid) - before) * 1e6 / res["requests"]
    return res


def memory(admin):
    _, body = get(f"http://127.0.0.1:{admin}/memory")
    m = json.loads(body)
    return int(m["allocated"]), int(m["heap_size"])


SCENARIOS = [  # key, label
    ("A", "A  Envoy direct_response"),
    ("F", "F  Wasm floor (no-op module)"),
    ("B", "B  fpgen GET"),
    ("BP", "B  fpgen POST"),
    ("BS", "B  fpgen GET, scoped"),
    ("C", "C  Envoy -> fpgen serve"),
    ("G", "G  licence request through the gate"),
    ("P", "P  licence request proxied, no filter"),
    ("U0", "U0 unrelated, no filter"),
    ("UA", "U  unrelated, filter on all"),
    ("US", "U  unrelated, scoped"),
    ("W", "W  fpgen Widevine GET"),
    ("N", "N  native module GET"),
    ("NW", "N  native module Widevine GET"),
    ("R", "R  fpgen PlayReady GET"),
    ("NR", "N  native module PlayReady GET"),
    ("GQ", "G  PlayReady licence request, query token"),
    ("GC", "G  PlayReady licence request, CustomData"),
    ("NGQ", "N  PlayReady licence request, query token"),
    ("NGC", "N  PlayReady licence request, CustomData"),
    ("NP", "N  native module POST"),
    ("NG", "N  licence request through the native gate"),
    ("NU", "NU unrelated, native listener (direct_response)"),
]


def lua(work, name, method, body, content_type):
    path = os.path.join(work, name)
    with open(path, "w") as f:
        f.write(f'wrk.method = "{method}"\nwrk.headers["Content-Type"] = "{content_type}"\nwrk.body = "{body}"\n')
    return path


def mint_url(config_path):
    """A licence URL of the realistic request, minted offline by `fpgen mint`."""
    return subprocess.run([FPGEN, "mint", "--config", config_path, "--query", QUERY], capture_output=True,
                          text=True, check=True).stdout.strip()


def lua_long(work, name, body, content_type):
    """A POST of `body` (written as a Lua long string: XML has quotes)."""
    path = os.path.join(work, name)
    with open(path, "w") as f:
        f.write(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "{content_type}"\n'
                f'wrk.headers["SOAPAction"] = "http://schemas.microsoft.com/DRM/2007/03/protocols/AcquireLicense"\n'
                f'wrk.body = [==[{body}]==]\n')
    return path


def mint_playready(config_path):
    """A PlayReady token of the realistic request, minted offline by `fpgen mint`."""
    out = subprocess.run([FPGEN, "mint", "--config", config_path, "--drm", "playready", "--query", PR_QUERY],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["token"]


def suite(args, workers, work, static_body, config_path, memory_check):
    """Every scenario with `workers` Envoy workers, interleaved; returns the medians per scenario
    key, and (for the memory check) the first-token time and memory figures."""
    procs = []
    try:
        # the native token service (scenario C), as many threads as Envoy has workers
        serve_port = free_port()
        procs.append(subprocess.Popen([FPGEN, "serve", "--config", config_path, "--listen", f"127.0.0.1:{serve_port}",
                                       "--threads", str(workers)], stderr=subprocess.DEVNULL))
        ports = {k: free_port() for k in ("plain", "floor", "scoped", "origin", "native")}
        port, admin = free_port(), free_port()
        boot = os.path.join(work, f"envoy-{workers}.json")
        with open(boot, "w") as f:
            json.dump(bootstrap(port, admin, serve_port, static_body, ports=ports), f)
        started = time.monotonic()
        envoy = subprocess.Popen([ENVOY, "-c", boot, "--concurrency", str(workers), "--disable-hot-restart",
                                  "--log-level", "error"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 env=dict(os.environ, ENVOY_DYNAMIC_MODULES_SEARCH_PATH=os.path.dirname(NATIVE_SO)))
        procs.append(envoy)
        body = wait_token(port, started + 30)
        first_token_ms = (time.monotonic() - started) * 1000
        assert len(body) == len(static_body), (len(body), len(static_body))
        floor_body = get(f"http://127.0.0.1:{ports['floor']}/hms/fp/token?{QUERY}")[1]
        assert len(floor_body) == len(static_body), (len(floor_body), len(static_body))
        # a licence request: the token of a URL minted for this pass (it
        # expires in an hour), and an SPC-sized body
        token = mint_url(config_path).split("ExpressPlayToken=", 1)[1]
        rights = f"/hms/fp/rights/?ExpressPlayToken={token}"
        spc = lua(work, "spc.lua", "POST", "s" * SPC_BYTES, "application/octet-stream")
        form = lua(work, "post.lua", "POST", QUERY, "application/x-www-form-urlencoded")
        for key in ("scoped", "plain", "native"):  # the gate accepts the token; the origin answers both
            status, _ = get(f"http://127.0.0.1:{ports[key]}{rights}", data=b"s" * SPC_BYTES)
            assert status == 200, (key, status)
        # PlayReady's licence requests: the token in the query (dash.js) with a challenge without
        # CustomData, or in the challenge's CustomData (Bitmovin), both a real challenge's size
        pr_token = mint_playready(config_path)
        pr_query = f"{PR_PATH}?ExpressPlayToken={pr_token}"
        plain_challenge = pr_challenge("")
        token_challenge = pr_challenge(f"<CustomData>{pr_token}</CustomData>")
        xml = "text/xml; charset=utf-8"
        pr_q = lua_long(work, "pr-query.lua", plain_challenge, xml)
        pr_c = lua_long(work, "pr-custom.lua", token_challenge, xml)
        for key in ("scoped", "native"):
            for path, body in ((pr_query, plain_challenge), (PR_PATH, token_challenge)):
                status, _ = get(f"http://127.0.0.1:{ports[key]}{path}", data=body.encode())
                assert status == 200, (key, path, status)

        base = f"http://127.0.0.1:{port}"
        plain, scoped = f"http://127.0.0.1:{ports['plain']}", f"http://127.0.0.1:{ports['scoped']}"
        native = f"http://127.0.0.1:{ports['native']}"
        targets = {
            "A": (f"{plain}/static", None),
            "F": (f"http://127.0.0.1:{ports['floor']}/hms/fp/token?{QUERY}", None),
            "B": (f"{base}/hms/fp/token?{QUERY}", None),
            "BP": (f"{base}/hms/fp/token", form),
            "BS": (f"{scoped}/hms/fp/token?{QUERY}", None),
            "C": (f"{base}/backend/hms/fp/token?{QUERY}", None),
            "G": (f"{scoped}{rights}", spc),
            "P": (f"{plain}{rights}", spc),
            "U0": (f"{plain}/unrelated", None),
            "UA": (f"{base}/unrelated", None),
            "US": (f"{scoped}/unrelated", None),
            "W": (f"{base}/hms/wv/token?{WV_QUERY}", None),
            "N": (f"{native}/hms/fp/token?{QUERY}", None),
            "NW": (f"{native}/hms/wv/token?{WV_QUERY}", None),
            "NP": (f"{native}/hms/fp/token", form),
            "NG": (f"{native}{rights}", spc),
            "R": (f"{base}/hms/pr/token?{PR_QUERY}", None),
            "NR": (f"{native}/hms/pr/token?{PR_QUERY}", None),
            "GQ": (f"{scoped}{pr_query}", pr_q),
            "GC": (f"{scoped}{PR_PATH}", pr_c),
            "NGQ": (f"{native}{pr_query}", pr_q),
            "NGC": (f"{native}{PR_PATH}", pr_c),
            "NU": (f"{native}/unrelated", None),
        }
        for key, _ in SCENARIOS:  # warm-up
            u, script = targets[key]
            run_wrk(u, 2, args.connections, script)
        mem_warm = memory(admin)
        results = {key: [] for key, _ in SCENARIOS}
        for r in range(args.rounds):
            for key, label in SCENARIOS:
                u, script = targets[key]
                res = run_wrk(u, args.seconds, args.connections, script, pid=envoy.pid)
                if res["non2xx"] or res["socket_errors"]:
                    raise SystemExit(f"{label}: errors under load: {res}")
                results[key].append(res)
                print(f"workers {workers} round {r + 1} {label:38s} {res['rps']:9.0f} req/s"
                      f"  p50 {res['p50']:.3f} ms  p99 {res['p99']:.3f} ms  Envoy CPU {res['cpu_us']:.1f} us/req",
                      flush=True)
        med = {k: {m: statistics.median(x[m] for x in rs) for m in ("rps", "p50", "p99", "cpu_us")}
               for k, rs in results.items()}
        extra = {"first_token_ms": first_token_ms}
        if memory_check:  # a million requests, then memory again
            h2 = subprocess.run(["h2load", "--h1", "-n", str(args.million), "-c", str(args.connections), "-t", "1",
                                 f"{base}/hms/fp/token?{QUERY}"], capture_output=True, text=True, check=True).stdout
            done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", h2)
            extra.update(mem_warm=mem_warm, mem_million=memory(admin),
                         done=int(done.group(1)) if done else 0, failed=done.group(3) if done else "?")
        return med, extra
    finally:
        stop(procs)


def ratio_rows(med):
    """The goals of issue 12 against one run's medians: (what, measured, p99 ratio or '', goal, met)."""
    r = lambda a, b, m="rps": med[a][m] / med[b][m]
    floor = r("F", "A")
    rows = [
        ("mint GET / Wasm floor", r("B", "F"), r("B", "F", "p99"), ">= 0.90", r("B", "F") >= 0.90),
        ("mint GET / direct_response (floor / direct_response: %.2f)" % floor, r("B", "A"), r("B", "A", "p99"),
         ">= floor x 0.9 = %.2f" % (floor * 0.9), r("B", "A") >= floor * 0.9),
        ("mint POST / mint GET", r("BP", "B"), r("BP", "B", "p99"), ">= 0.90", r("BP", "B") >= 0.90),
        ("mint GET, scoped / mint GET", r("BS", "B"), r("BS", "B", "p99"), "about 1", None),
        ("licence request through the gate / proxied without the filter", r("G", "P"), r("G", "P", "p99"), ">= 0.90",
         r("G", "P") >= 0.90),
        ("unrelated route, scoped as shipped / no filter", r("US", "U0"), r("US", "U0", "p99"), ">= 0.97",
         r("US", "U0") >= 0.97),
        ("unrelated route, filter on every request / no filter", r("UA", "U0"), r("UA", "U0", "p99"), "(the unscoped way)",
         None),
        ("mint GET / fpgen serve behind Envoy (B/C)", r("B", "C"), r("B", "C", "p99"), ">= 1.5", r("B", "C") >= 1.5),
    ]
    p99 = r("B", "A", "p99")
    rows.append(("mint p99 / direct_response p99", p99, "", "<= 1.5", p99 <= 1.5))
    rows += [  # issue 22: the native module
        ("native mint GET / direct_response", r("N", "A"), r("N", "A", "p99"), ">= 0.90", r("N", "A") >= 0.90),
        ("native mint POST / direct_response", r("NP", "A"), r("NP", "A", "p99"), ">= 0.90", r("NP", "A") >= 0.90),
        ("native mint GET p99 / direct_response p99", r("N", "A", "p99"), "", "<= 1.2", r("N", "A", "p99") <= 1.2),
        ("licence request through the native gate / proxied without a filter", r("NG", "P"), r("NG", "P", "p99"),
         ">= 0.95", r("NG", "P") >= 0.95),
        ("Wasm mint GET / Wasm floor (issue 22's goal)", r("B", "F"), r("B", "F", "p99"), ">= 0.80", r("B", "F") >= 0.80),
        # issue 32: Widevine beside FairPlay
        ("Widevine mint GET / FairPlay mint GET (Wasm)", r("W", "B"), r("W", "B", "p99"), ">= 0.95", r("W", "B") >= 0.95),
        ("Widevine mint GET / FairPlay mint GET (native)", r("NW", "N"), r("NW", "N", "p99"), ">= 0.95",
         r("NW", "N") >= 0.95),
        # issue 32: PlayReady beside FairPlay (its gate holds and reads a challenge of the size of the
        # SPC that FairPlay's passes unread)
        ("PlayReady mint GET / FairPlay mint GET (Wasm)", r("R", "B"), r("R", "B", "p99"), ">= 0.95", r("R", "B") >= 0.95),
        ("PlayReady mint GET / FairPlay mint GET (native)", r("NR", "N"), r("NR", "N", "p99"), ">= 0.95",
         r("NR", "N") >= 0.95),
        ("PlayReady gate, query token / FairPlay gate (Wasm)", r("GQ", "G"), r("GQ", "G", "p99"), ">= 0.90",
         r("GQ", "G") >= 0.90),
        ("PlayReady gate, CustomData / FairPlay gate (Wasm)", r("GC", "G"), r("GC", "G", "p99"), ">= 0.90",
         r("GC", "G") >= 0.90),
        ("PlayReady gate, query token / FairPlay gate (native)", r("NGQ", "NG"), r("NGQ", "NG", "p99"), ">= 0.90",
         r("NGQ", "NG") >= 0.90),
        ("PlayReady gate, CustomData / FairPlay gate (native)", r("NGC", "NG"), r("NGC", "NG", "p99"), ">= 0.90",
         r("NGC", "NG") >= 0.90),
    ]
    return rows


def cpu_rows(med):
    """The goals of issue 34, from Envoy's CPU time per request: (what, measured, goal, met).
    Each pair runs on one listener kind: the native mint against a direct_response of the
    native module's own listener (the filter runs there too, and passes it by); the native
    gate against the same licence request proxied with no filter; the Wasm mints against the
    no-op Wasm module answering a constant URL."""
    c = lambda a, b: med[a]["cpu_us"] / med[b]["cpu_us"]
    row = lambda what, a, b, goal: (what, c(a, b), "<= %.2f" % goal, c(a, b) <= goal)
    return [
        row("native mint GET / direct_response on its listener (N/NU)", "N", "NU", 1.15),
        row("native Widevine mint GET / direct_response on its listener (NW/NU)", "NW", "NU", 1.15),
        row("native PlayReady mint GET / direct_response on its listener (NR/NU)", "NR", "NU", 1.15),
        row("native gate / licence request proxied without a filter (NG/P)", "NG", "P", 1.10),
        row("Wasm mint GET / Wasm floor (B/F)", "B", "F", 1.25),
        row("Wasm Widevine mint GET / Wasm floor (W/F)", "W", "F", 1.25),
        row("Wasm PlayReady mint GET / Wasm floor (R/F)", "R", "F", 1.25),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5, help="per scenario per round")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--workers", default="1,2", help="Envoy --concurrency of each pass, e.g. 1,2")
    ap.add_argument("--million", type=int, default=1_000_000, help="requests for the memory check (first pass)")
    ap.add_argument("--only", help="comma-separated scenario keys (e.g. G,GQ,GC,NG,NGQ,NGC): run just those, "
                                   "interleaved, and print their medians and the ratios they make; no memory check")
    args = ap.parse_args()
    if args.only:
        global SCENARIOS
        keep = args.only.split(",")
        SCENARIOS = [s for s in SCENARIOS if s[0] in keep]
        if len(SCENARIOS) != len(keep):
            raise SystemExit(f"--only: unknown scenario among {keep}")
    for tool in ("wrk", "h2load"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing (make bench installs it)")
    for module in (WASM, FLOOR_WASM, NATIVE_SO):
        if not os.path.exists(module):
            raise SystemExit(f"{module} is missing (make bench builds it)")
    work = tempfile.mkdtemp(prefix="fpgen-bench-")
    try:
        config_path = os.path.join(work, "config.json")
        with open(config_path, "w") as f:
            json.dump(CONFIG, f)
        # a licence URL of the realistic request, for the size of A's and F's bodies
        static_body = "x" * (len(mint_url(config_path)) + 2)
        passes = [int(w) for w in args.workers.split(",")]
        runs = {w: suite(args, w, work, static_body, config_path, memory_check=(i == 0 and not args.only))
                for i, w in enumerate(passes)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.only:
        write_report("focused.md", focused_report(passes, runs))
    else:
        write_report("results.md", report(args, passes, runs))


def focused_report(passes, runs):
    """`--only`'s report: the medians, and every ratio row whose two scenarios ran."""
    lines = [f"| scenario | workers | req/s | p50 ms | p99 ms | Envoy CPU µs/req |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    labels = dict(SCENARIOS)
    for w in passes:
        for k, _ in SCENARIOS:
            m = runs[w][0][k]
            lines.append(f"| {labels[k]} | {w} | {m['rps']:.0f} | {m['p50']:.3f} | {m['p99']:.3f} | {m['cpu_us']:.1f} |")
    lines += ["", "| ratio | workers | throughput (p99) | goal | met |", "| --- | ---: | ---: | --- | --- |"]
    nan = {"rps": float("nan"), "p50": float("nan"), "p99": float("nan"), "cpu_us": float("nan")}
    for w in passes:
        med = collections.defaultdict(lambda: nan, runs[w][0])
        for what, value, p99, goal, met in ratio_rows(med):
            if value == value:  # both scenarios ran (a missing one gives NaN)
                shown = f"{value:.3f}" + (f" ({p99:.2f})" if p99 != "" else "")
                lines.append(f"| {what} | {w} | {shown} | {goal} | {dict([(True, 'yes'), (False, 'no')]).get(met, '')} |")
    lines += ["", "| Envoy CPU per request, ratio | workers | measured | goal | met |", "| --- | ---: | ---: | --- | --- |"]
    for w in passes:
        med = collections.defaultdict(lambda: nan, runs[w][0])
        for what, value, goal, met in cpu_rows(med):
            if value == value:
                lines.append(f"| {what} | {w} | {value:.3f} | {goal} | {'yes' if met else 'no'} |")
    return lines


def report(args, passes, runs):
    wasm_size, floor_size = os.path.getsize(WASM), os.path.getsize(FLOOR_WASM)
    labels = dict(SCENARIOS)
    lines = [
        f"# fpgen benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        f"Machine: {os.cpu_count()} cores; Envoy 1.40.0; load: wrk -t1 -c{args.connections},"
        f" {args.rounds} interleaved rounds of {args.seconds} s per scenario, medians; one pass per worker count.",
        "",
        "| scenario | " + " | ".join(f"{w} worker{'s' if w > 1 else ''}: req/s, p50 ms, p99 ms, Envoy CPU µs/req"
                                     for w in passes) + " |",
        "| --- |" + " ---: |" * len(passes),
    ] + [f"| {labels[k]} | " + " | ".join(
        f"{runs[w][0][k]['rps']:.0f}, {runs[w][0][k]['p50']:.3f}, {runs[w][0][k]['p99']:.3f}, {runs[w][0][k]['cpu_us']:.1f}"
        for w in passes) + " |"
         for k, _ in SCENARIOS] + [
        "",
        "| ratio | " + " | ".join(f"{w} worker{'s' if w > 1 else ''}: throughput (p99)" for w in passes)
        + " | goal | met (first pass) |",
        "| --- |" + " ---: |" * len(passes) + " --- | --- |",
    ]
    tables = {w: ratio_rows(runs[w][0]) for w in passes}
    for i, row in enumerate(tables[passes[0]]):
        cells = []
        for w in passes:
            _, value, p99, _, _ = tables[w][i]
            cells.append(f"{value:.2f}" + (f" ({p99:.2f})" if p99 != "" else ""))
        met = {True: "yes", False: "no", None: ""}[row[4]]
        lines.append(f"| {row[0]} | " + " | ".join(cells) + f" | {row[3]} | {met} |")
    cpu_tables = {w: cpu_rows(runs[w][0]) for w in passes}
    lines += ["", "| Envoy CPU per request, ratio | " + " | ".join(f"{w} worker{'s' if w > 1 else ''}" for w in passes)
              + " | goal | met (first pass) |", "| --- |" + " ---: |" * len(passes) + " --- | --- |"]
    for i, row in enumerate(cpu_tables[passes[0]]):
        cells = [f"{cpu_tables[w][i][1]:.2f}" for w in passes]
        lines.append(f"| {row[0]} | " + " | ".join(cells) + f" | {row[2]} | {'yes' if row[3] else 'no'} |")
    first = runs[passes[0]][1]
    mw, mm = first["mem_warm"], first["mem_million"]
    lines += [
        "",
        f"- fpgen.wasm: {wasm_size} bytes ({wasm_size / 1024:.0f} KiB; goal <= 256 KiB: "
        f"{'yes' if wasm_size <= 262144 else 'no'}); the floor module: {floor_size} bytes",
        "- Envoy start to first token: " + ", ".join(f"{runs[w][1]['first_token_ms']:.0f} ms ({w} worker{'s' if w > 1 else ''})"
                                                     for w in passes) + " (demo-sized configuration; at scale: scale.md)",
        f"- Envoy memory (admin /memory, allocated / heap), {passes[0]} worker(s): after warm-up {mw[0] / 2**20:.1f} / "
        f"{mw[1] / 2**20:.1f} MiB; after {first['done']} more mints ({first['failed']} failed) {mm[0] / 2**20:.1f} / "
        f"{mm[1] / 2**20:.1f} MiB (growth {(mm[0] - mw[0]) / 2**20:+.2f} MiB; goal: flat)",
        "",
        "How to read it: A is the most Envoy can do when it answers locally; F is the most any proxy-wasm",
        "filter can do (entering V8, one header read, one local reply); B/F is what fpgen's own work leaves",
        "of that. G/P is the gate's cost on a licence request that goes upstream anyway. C is the same token",
        "work done by a separate native service behind Envoy. Ratios come from one run on one machine,",
        "interleaved, so load from other processes hits all scenarios alike; absolute numbers are not",
        "comparable across machines. With two workers on two cores, wrk competes with Envoy for the CPUs.",
        "Envoy CPU µs/req is Envoy's process CPU time (user + system, /proc/<pid>/stat) over the requests",
        "wrk counted in that run: what an operator pays per request, steadier than req/s when the machine's",
        "throughput swings; the origin of licence requests (G, P, NG) is a listener of the same Envoy, so",
        "their cost includes the upstream's answer, and C's excludes fpgen serve's own CPU.",
    ]
    return lines


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
