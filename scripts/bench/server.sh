#!/usr/bin/env bash
# KMS over HTTP: `ebsim serve` against moto_server, side by side in one run.
#
# For Encrypt (64 B), Decrypt and GenerateDataKey (AES_256), each with an
# encryption context, and 1, 16 and 64 concurrent connections, wrk sends one
# SigV4-signed AWS JSON 1.1 request (signed by botocore, scripts/bench/
# server_requests.py) again and again over keep-alive connections, and reports
# requests per second and its p50/p99 latency. ebsim verifies every signature
# (a real access key from `ebsim iam create-access-key`); moto checks none.
# The key and the ciphertext are made on each server through boto3 first.
#
# Every measurement alternates ebsim and moto (which goes first alternates by
# round), EBSIM_BENCH_ROUNDS times (default 3), after a 1 s warm-up at the same
# concurrency; the table gives medians. The servers run on CPU 1 and wrk on
# CPU 0 (EBSIM_BENCH_PIN=0: no pinning). Requests are signed anew before every
# round so that a round stays inside SigV4's 15-minute window.
#
#   scripts/bench/server.sh [--no-build] [--no-write]
#   (EBSIM_BENCH_RUNTIME=5 EBSIM_BENCH_ROUNDS=3 EBSIM_BENCH_PIN=1)
#
# Writes docs/BENCHMARKS.md between the server markers (not with --no-write)
# and keeps the raw wrk output in the directory it prints.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
build=1
write=1
for a in "$@"; do
    case $a in
    --no-build) build= ;;
    --no-write) write= ;;
    *) echo "usage: $0 [--no-build] [--no-write]" >&2; exit 2 ;;
    esac
done
ensure_apt wrk python3 util-linux curl
python3 -c 'import boto3, moto.server' 2>/dev/null || python3 -m pip install --quiet 'moto[server]' boto3
command -v moto_server >/dev/null || { echo "$0: moto_server is not on PATH (pip install 'moto[server]')" >&2; exit 2; }
if [ -n "$build" ]; then
    ensure_rust
    cargo build --release --quiet
fi
bin=$PWD/target/release/ebsim
[ -x "$bin" ] || { echo "$0: no $bin (build it, or drop --no-build)" >&2; exit 2; }

runtime=${EBSIM_BENCH_RUNTIME:-5}
rounds=${EBSIM_BENCH_ROUNDS:-3}
pin=${EBSIM_BENCH_PIN:-1}
ops=(Encrypt Decrypt GenerateDataKey)
conns=(1 16 64)
work=$(mktemp -d /var/tmp/ebsim-serverbench.XXXXXX)
out=$work/results
mkdir -p "$out"
SERVER_CPU=() GEN_CPU=()
if [ "$pin" = 1 ] && [ "$(nproc)" -ge 2 ]; then
    SERVER_CPU=(taskset -c 1) GEN_CPU=(taskset -c 0)
fi

pids=()
cleanup() {
    set +e
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$work/home"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

say "ebsim serve (data root $work/home)"
export EBSIM_HOME=$work/home
unset EBSIM_NOW RUST_LOG
keyjson=$("$bin" iam create-access-key)
ebsim_ak=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["AccessKey"]["AccessKeyId"])' "$keyjson")
ebsim_sk=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["AccessKey"]["SecretAccessKey"])' "$keyjson")
unset keyjson
"${SERVER_CPU[@]}" "$bin" serve --listen 127.0.0.1:0 >"$work/ebsim.out" 2>"$work/ebsim.err" &
pids+=($!)
ebsim_port=
for _ in $(seq 100); do
    ebsim_port=$(sed -n 's|.*http://127.0.0.1:\([0-9]*\).*|\1|p' "$work/ebsim.out" | head -1)
    [ -n "$ebsim_port" ] && break
    sleep 0.1
done
[ -n "$ebsim_port" ] || { cat "$work/ebsim.err" >&2; echo "$0: ebsim serve did not start" >&2; exit 1; }

say "moto_server"
moto_port=$(free_port)
"${SERVER_CPU[@]}" moto_server -H 127.0.0.1 -p "$moto_port" >"$work/moto.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$moto_port/" && break
    sleep 0.2
done

declare -A endpoint ak sk
endpoint[ebsim]=http://127.0.0.1:$ebsim_port ak[ebsim]=$ebsim_ak sk[ebsim]=$ebsim_sk
endpoint[moto]=http://127.0.0.1:$moto_port ak[moto]=AKIAMOTOBENCH000000X sk[moto]=moto-checks-no-secret

cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -xE 'aes|avx2|vaes|vpclmulqdq|avx512f|avx512vl|sha_ni' | tr '\n' ' ')
{
    echo "date: $(date -u +%Y-%m-%d)"
    echo "cpu: $cpu"
    echo "cpus: $(nproc)"
    echo "flags: $flags"
    echo "kernel: $(uname -r)"
    echo "ebsim: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo '+dirty'), $("$bin" --version 2>/dev/null | head -1)"
    echo "moto: $(python3 -c 'import importlib.metadata as m; print(m.version("moto"), "(werkzeug", m.version("werkzeug") + ", flask", m.version("flask") + ")")') on $(python3 -V)"
    echo "botocore: $(python3 -c 'import botocore; print(botocore.__version__)')"
    echo "wrk: $(wrk -v 2>&1 | head -1 | awk '{print $2}')"
    if [ ${#SERVER_CPU[@]} -gt 0 ]; then echo "pinning: servers on CPU 1, wrk on CPU 0"; else echo "pinning: none"; fi
    echo "runtime: ${runtime}s per measurement after a 1 s warm-up, $rounds rounds"
} >"$out/meta"
cat "$out/meta"

measure() { # server op conns round
    local lua=$work/req-$1/$2.lua threads=$(( $3 < 2 ? 1 : 2 ))
    # One wrk thread per CPU it may use: with pinning that is one.
    [ ${#GEN_CPU[@]} -gt 0 ] && threads=1
    "${GEN_CPU[@]}" wrk -t"$threads" -c"$3" -d1s --timeout 10s -s "$lua" "${endpoint[$1]}/" >/dev/null
    "${GEN_CPU[@]}" wrk -t"$threads" -c"$3" -d"${runtime}s" --timeout 10s -s "$lua" "${endpoint[$1]}/" \
        >"$out/$2.$3.$1.$4"
    local line
    line=$(grep '^RESULT' "$out/$2.$3.$1.$4") || { cat "$out/$2.$3.$1.$4" >&2; exit 1; }
    printf 'round %s %-5s %-15s c=%-3s %s\n' "$4" "$1" "$2" "$3" "$line"
    case $line in
    *errors_status=0\ *) ;;
    *) echo "$0: $1 answered $2 with errors; its log ends:" >&2
       tail -n 5 "$work/$1".* >&2
       exit 1 ;;
    esac
}

say "$rounds rounds, ebsim and moto alternating"
for r in $(seq "$rounds"); do
    for s in ebsim moto; do
        python3 scripts/bench/server_requests.py "${endpoint[$s]}" "${ak[$s]}" "${sk[$s]}" \
            "$work/state-$s.json" "$work/req-$s"
    done
    if [ $((r % 2)) = 1 ]; then order=(ebsim moto); else order=(moto ebsim); fi
    for op in "${ops[@]}"; do
        for c in "${conns[@]}"; do
            for s in "${order[@]}"; do
                measure "$s" "$op" "$c" "$r"
            done
        done
    done
done

if [ -n "$write" ]; then
    python3 scripts/bench/server_report.py "$out" docs/BENCHMARKS.md
    echo "written: docs/BENCHMARKS.md (server section)"
fi
python3 scripts/bench/server_report.py "$out" -
echo "raw results: $out"
trap - EXIT
cleanup
