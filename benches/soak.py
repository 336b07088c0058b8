#!/usr/bin/env python3
"""make soak: Envoy with two workers under concurrent load of valid and invalid
token requests for several minutes (bounded in time), loopback only.

Checks: zero 5xx, every answer the expected one for its request (counted by
status per request kind), a sample of minted tokens verified with
`fpgen inspect`, and Envoy's memory over time (admin /memory).
Writes target/bench/soak.md.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

# (request path+query, expected status) — wrk cycles through them
KINDS = [
    (f"/hms/fp/token?{bench.QUERY}", 200),
    ("/hms/fp/token?customerAuthenticator=100001,0123456789abcdef0123456789abcdef&contentKey=00&iv=00&errorFormat=json", 400),
    ("/hms/fp/token?customerAuthenticator=100001,wrong&contentKey=000102030405060708090a0b0c0d0e0f&iv=0f0e0d0c0b0a09080706050403020100", 401),
    ("/hms/fp/token?customerAuthenticator=100001,0123456789abcdef0123456789abcdef&contentKey=000102030405060708090a0b0c0d0e0f&iv=0f0e0d0c0b0a09080706050403020100&expirationTime=2000-01-01T00:00:00Z", 400),
    ("/hms/fp/token?" + "&".join(f"p{i}=v" for i in range(200)) + "&" + bench.QUERY, 200),
]

# One wrk per request kind, all at once; each counts answers against its
# kind's expected status.
LUA = """
wrk.path = %s
local threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function(args) good = 0; bad = 0; fivexx = 0 end
response = function(status, headers, body)
  if status >= 500 then fivexx = fivexx + 1 end
  if status == %d then good = good + 1 else bad = bad + 1 end
end
done = function(summary, latency, requests)
  local g, b, f = 0, 0, 0
  for _, t in ipairs(threads) do
    g = g + t:get("good"); b = b + t:get("bad"); f = f + t:get("fivexx")
  end
  io.write(string.format("SOAK good=%%d bad=%%d fivexx=%%d\\n", g, b, f))
end
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="fpgen-soak-")
    procs = []
    try:
        config_path = os.path.join(work, "config.json")
        with open(config_path, "w") as f:
            json.dump(bench.CONFIG, f)
        port, admin = bench.free_port(), bench.free_port()
        boot = os.path.join(work, "envoy.json")
        with open(boot, "w") as f:
            json.dump(bench.bootstrap(port, admin, 1, "x"), f)
        envoy = subprocess.Popen([bench.ENVOY, "-c", boot, "--concurrency", "2", "--disable-hot-restart",
                                  "--log-level", "warn", "--log-path", os.path.join(work, "envoy.log")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(envoy)
        bench.wait_token(port, time.monotonic() + 30)
        seconds = int(args.minutes * 60)
        per_kind = max(1, args.connections // len(KINDS))
        wrks = []
        for i, (path, status) in enumerate(KINDS):
            lua = os.path.join(work, f"soak{i}.lua")
            with open(lua, "w") as f:
                f.write(LUA % (json.dumps(path), status))
            wrks.append(subprocess.Popen(["wrk", "-t1", f"-c{per_kind}", f"-d{seconds}s", "-s", lua,
                                          f"http://127.0.0.1:{port}"], stdout=subprocess.PIPE, text=True))
        memory, samples, sample_failures = [], 0, []
        start = time.monotonic()
        while any(w.poll() is None for w in wrks):
            memory.append((round(time.monotonic() - start), bench.memory(admin)[0]))
            for _ in range(10):
                # sample a token and verify it with the library, through the fpgen command
                try:
                    _, body = bench.get(f"http://127.0.0.1:{port}/hms/fp/token?{bench.QUERY}", timeout=5)
                    out = subprocess.run([bench.FPGEN, "inspect", "--config", config_path, "--show-content-key",
                                          body.decode().strip()], capture_output=True, text=True)
                    lic = json.loads(out.stdout)["licence"] if out.returncode == 0 else None
                    ok = lic and lic["content_key"] == "000102030405060708090a0b0c0d0e0f" and lic["cookie"] == "bench-session-0001"
                    samples += 1
                    if not ok:
                        sample_failures.append(out.stderr or out.stdout)
                except Exception as e:  # a failed sample is a failure, not a crash of the soak
                    sample_failures.append(repr(e))
                time.sleep(1)
        memory.append((round(time.monotonic() - start), bench.memory(admin)[0]))
        good = bad = fivexx = requests = 0
        for w in wrks:
            out = w.stdout.read()
            m = re.search(r"SOAK good=(\d+) bad=(\d+) fivexx=(\d+)", out)
            g, b, f = (int(x) for x in m.groups())
            good, bad, fivexx = good + g, bad + b, fivexx + f
            requests += int(re.search(r"(\d+) requests in", out).group(1))
        alive = envoy.poll() is None
        mem_mib = [f"{t}s {b / 2**20:.1f}" for t, b in memory]
        lines = [
            f"# fpgen soak ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
            "",
            f"Envoy 1.40.0 --concurrency 2, {len(KINDS)} wrk (one per request kind, -c{per_kind} each) for {seconds} s:"
            " (valid GET, bad key, wrong secret, past expiry, 200 unknown parameters + valid).",
            "",
            f"- requests: {requests}; expected answers: {good}; unexpected: {bad}; 5xx: {fivexx}",
            f"- sampled tokens verified with fpgen inspect: {samples - len(sample_failures)}/{samples}",
            f"- Envoy alive at the end: {alive}",
            f"- Envoy memory allocated (MiB) over time: {', '.join(mem_mib)}",
            f"- growth from the first to the last reading: {(memory[-1][1] - memory[0][1]) / 2**20:+.2f} MiB",
        ]
        bench.write_report("soak.md", lines)
        if bad or fivexx or sample_failures or not alive:
            print("SOAK FAILED", sample_failures[:3])
            sys.exit(1)
    finally:
        for w in locals().get("wrks", []):
            if w.poll() is None:
                w.kill()
        bench.stop(procs)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
