#!/usr/bin/env bash
# AES-256-XTS on 4 KiB units, one core: ebsim's batched engine (criterion) and
# OpenSSL's EVP aes-256-xts (`openssl speed`), measured in the same run, one after
# the other on the same core. Prints both and the ratio.
#   scripts/bench/xts.sh [CPU]      (CPU to pin to, default 0)
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
ensure_apt openssl util-linux
ensure_rust
cpu=${1:-0}
pin() { taskset -c "$cpu" "$@"; }
say "building the benchmark"
cargo bench --bench xts --no-run >/dev/null 2>&1
round() {
    local ssl ours
    ssl=$(pin openssl speed -elapsed -seconds 3 -evp aes-256-xts -bytes 4096 2>/dev/null \
        | awk 'tolower($1) == "aes-256-xts" {v=$NF; sub(/k$/, "", v); printf "%.0f", v * 1000}')
    ours=$(pin cargo bench --bench xts -- --noplot --measurement-time 3 'ebsim_batched_1_units' 2>/dev/null \
        | awk '/thrpt:/ {v=$4; u=$5; m = (u ~ /GiB/) ? 1073741824 : (u ~ /MiB/ ? 1048576 : 1); printf "%.0f", v * m; exit}')
    echo "$ours $ssl"
}
say "3 rounds, alternating (bytes/s)"
printf '%-6s %14s %14s %7s\n' round ebsim openssl ratio
for r in 1 2 3; do
    read -r ours ssl < <(round)
    printf '%-6s %14s %14s %7s\n' "$r" "$ours" "$ssl" "$(awk -v a="$ours" -v b="$ssl" 'BEGIN {printf "%.2f", a / b}')"
done
