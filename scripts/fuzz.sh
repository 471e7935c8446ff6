#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) for SECONDS each (default 60), with
# cargo-fuzz and libFuzzer. The stable toolchain is used with RUSTC_BOOTSTRAP=1,
# since libFuzzer's sanitizer flags need nightly features.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_apt gcc g++
ensure_rust
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && mapfile -t targets < <(cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz list)
cd fuzz
for t in "${targets[@]}"; do
    say "fuzzing $t for ${secs}s"
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" -- -max_total_time="$secs"
done
