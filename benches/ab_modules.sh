#!/usr/bin/env bash
# A/B of two fpgen modules side by side: each runs in its own Envoy (one
# worker, envoy/envoy.yaml without its access log), and wrk drives an
# unrelated route (the 404 catch-all) and a mint GET, interleaved round by
# round. Prints each round and the medians' ratio B/A.
#
#   benches/ab_modules.sh A.wasm B.wasm [rounds] [seconds]
#
# Needs .venv/bin/envoy (make venv) and wrk (make bench-tools). Ports
# 10101/10102 and 9981/9982 on loopback.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
a=$(realpath "$1"); b=$(realpath "$2"); rounds=${3:-5}; seconds=${4:-3}
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT

start() { # wasm port admin
    python3 - "$1" "$2" "$3" "$work/envoy-$2.yaml" <<'PY'
import re, sys
wasm, port, admin, out = sys.argv[1:]
s = open("envoy/envoy.yaml").read()
s = s.replace("target/wasm32-wasip1/release/fpgen.wasm", wasm)
s = s.replace("port_value: 10000", f"port_value: {port}").replace("port_value: 9901", f"port_value: {admin}")
s = re.sub(r"          access_log:\n(.*\n)*?          # AUTO", "          # AUTO", s)
open(out, "w").write(s)
PY
    .venv/bin/envoy -c "$work/envoy-$2.yaml" --disable-hot-restart --concurrency 1 \
        --log-level warn >"$work/envoy-$2.log" 2>&1 &
    pids+=($!)
}
start "$a" 10101 9981
start "$b" 10102 9982
for port in 10101 10102; do # ready when the catch-all answers
    for _ in $(seq 100); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/x")" = 404 ] && break
        sleep 0.2
    done
done
mint='/hms/fp/token?customerAuthenticator=100001,0123456789abcdef0123456789abcdef&contentKey=000102030405060708090a0b0c0d0e0f&iv=0f0e0d0c0b0a09080706050403020100&cookie=c'
for round in $(seq "$rounds"); do
    for port in 10101 10102; do
        for what in unrelated mint; do
            path=/segments/1.ts; [ "$what" = mint ] && path=$mint
            rps=$(wrk -t1 -c32 -d"${seconds}s" "http://127.0.0.1:$port$path" | awk '/Requests\/sec/ {print $2}')
            echo "$round $([ $port = 10101 ] && echo A || echo B) $what $rps"
        done
    done
done | tee "$work/rounds.txt"
python3 - "$work/rounds.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for what in ("unrelated", "mint"):
    med = {m: statistics.median(float(r[3]) for r in rows if r[1] == m and r[2] == what) for m in "AB"}
    print(f"{what}: A {med['A']:.0f} req/s, B {med['B']:.0f} req/s, B/A {med['B'] / med['A']:.2f}")
PY
