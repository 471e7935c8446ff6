#!/usr/bin/env bash
# A/B of two builds of ebsim, side by side in one run, on this machine:
#   xts    the XTS engine on 4 KiB units, one core (benches/xts.rs of each tree,
#          `ebsim_batched_1_units`, pinned to CPU 0)
#   fuse   fio (psync, direct) on the FUSE file of an encrypted volume filled with
#          random data: 4k random read and write at queue depth 1, 1 MiB reads
#   nbd    fio's nbd engine on the NBD export (unix socket) of another such
#          volume: 4k random reads at queue depth 16, 1 MiB reads
# Every measurement alternates A and B, EBSIM_BENCH_ROUNDS times (default 3);
# the table gives each side's median and B/A. A is BASE_REV, B this checkout
# (or NEW_REV); a revision is built in a worktree under target/ab/ that is kept,
# so `--build-only` can build ahead of a quiet moment to measure in.
#   scripts/bench/ab.sh [--build-only] BASE_REV [NEW_REV]
#   (EBSIM_BENCH_SIZE=512M EBSIM_BENCH_RUNTIME=5 EBSIM_BENCH_ROUNDS=3)
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
build_only=
[ "${1:-}" = --build-only ] && { build_only=1; shift; }
[ $# -ge 1 ] || { echo "usage: $0 [--build-only] BASE_REV [NEW_REV]" >&2; exit 2; }
[ -n "$build_only" ] || [ "$(id -u)" = 0 ] || { echo "$0: FUSE attachments need root" >&2; exit 2; }
ensure_apt fio fuse3 libnbd-bin util-linux python3
ensure_rust
repo=$PWD
size=${EBSIM_BENCH_SIZE:-512M}
runtime=${EBSIM_BENCH_RUNTIME:-5}
rounds=${EBSIM_BENCH_ROUNDS:-3}
bytes=$(numfmt --from=iec "$size")
work=$(mktemp -d /var/tmp/ebsim-ab.XXXXXX)
out=$work/results
mkdir -p "$out"

declare -A tree bin
# A revision's worktree: target/ab/<commit>, made once.
worktree_of() {
    local sha dir
    sha=$(git rev-parse --verify "$1^{commit}")
    dir=$repo/target/ab/$sha
    if [ ! -d "$dir" ]; then
        mkdir -p "$repo/target/ab"
        git worktree add --quiet --detach "$dir" "$sha"
    fi
    echo "$dir"
}
tree[A]=$(worktree_of "$1")
if [ -n "${2:-}" ]; then
    tree[B]=$(worktree_of "$2")
else
    tree[B]=$repo
fi
cleanup() {
    set +e
    for s in A B; do
        for v in ${VOLS[$s]:-}; do
            EBSIM_HOME=$work/home-$s "${bin[$s]}" ec2 detach-volume --volume-id "$v" --force >/dev/null 2>&1
        done
    done
    rm -rf "$work"
}
declare -A VOLS
trap cleanup EXIT

for s in A B; do
    say "building $s ($(git -C "${tree[$s]}" rev-parse --short HEAD)): release binary and the xts bench"
    # A worktree shares nothing with this checkout's target/; seed it to save the
    # dependencies' build.
    if [ "${tree[$s]}" != "$repo" ] && [ ! -d "${tree[$s]}/target/release" ] && [ -d "$repo/target/release" ]; then
        mkdir -p "${tree[$s]}/target" && cp -a "$repo/target/release" "${tree[$s]}/target/"
    fi
    (cd "${tree[$s]}" && cargo build --release --quiet && cargo bench --bench xts --no-run --quiet >/dev/null 2>&1)
    bin[$s]=${tree[$s]}/target/release/ebsim
done
[ -z "$build_only" ] || { say "built; measure with: $0 $*"; exit 0; }

cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -xE 'aes|avx2|vaes|vpclmulqdq|avx512f|avx512vl' | tr '\n' ' ')

say "volumes: one for FUSE, one for NBD, per build, each filled with random data ($size)"
for s in A B; do
    export EBSIM_HOME=$work/home-$s
    mkdir -p "$work/fuse-$s" "$work/fill-$s"
    vf=$("${bin[$s]}" ec2 create-volume --size-bytes "$bytes" --encrypted --query VolumeId --output text)
    vn=$("${bin[$s]}" ec2 create-volume --size-bytes "$bytes" --encrypted --query VolumeId --output text)
    VOLS[$s]="$vf $vn"
    "${bin[$s]}" ec2 attach-volume --volume-id "$vn" --fuse "$work/fill-$s" >/dev/null
    head -c "$bytes" /dev/urandom | dd of="$work/fill-$s/$vn" bs=1M oflag=direct conv=notrunc status=none
    "${bin[$s]}" ec2 detach-volume --volume-id "$vn" >/dev/null
    "${bin[$s]}" ec2 attach-volume --volume-id "$vn" --nbd "unix:$work/nbd-$s.sock" >/dev/null
    "${bin[$s]}" ec2 attach-volume --volume-id "$vf" --fuse "$work/fuse-$s" >/dev/null
    head -c "$bytes" /dev/urandom | dd of="$work/fuse-$s/$vf" bs=1M oflag=direct conv=notrunc status=none
    eval "FILE_$s=$work/fuse-$s/$vf"
done
unset EBSIM_HOME

iops_mib() {
    python3 -c 'import json,sys; j=json.load(open(sys.argv[1]))["jobs"][0]; print("%.0f %.1f" % (j["read"]["iops"]+j["write"]["iops"], (j["read"]["bw_bytes"]+j["write"]["bw_bytes"])/2**20))' "$1"
}

fuse_job() { # name rw bs file json
    fio --name="$1" --filename="$3" --rw="$2" --bs="$4" --size="$size" --runtime="$runtime" \
        --ramp_time=2 --time_based=1 --direct=1 --ioengine=psync --randrepeat=0 \
        --norandommap=1 --output-format=json --output="$5" >/dev/null
}
nbd_job() { # name rw bs iodepth socket json
    fio --name="$1" --ioengine=nbd --uri="nbd+unix:///?socket=$5" --rw="$2" --bs="$3" \
        --iodepth="$4" --size="$size" --runtime="$runtime" --ramp_time=2 --time_based=1 \
        --randrepeat=0 --norandommap=1 --output-format=json --output="$6" >/dev/null
}

say "$rounds rounds, A and B alternating"
for r in $(seq "$rounds"); do
    for s in A B; do
        ours=$(cd "${tree[$s]}" && taskset -c 0 cargo bench --bench xts -- --noplot \
            --measurement-time 3 'ebsim_batched_1_units' 2>/dev/null \
            | awk '/thrpt:/ {v=$4; u=$5; m = (u ~ /GiB/) ? 1024 : 1; printf "%.1f", v * m; exit}')
        echo "$ours" >"$out/xts-4k-1core.$s.$r"
        printf 'round %s %s %-22s %10s MiB/s\n' "$r" "$s" xts-4k-1core "$ours"
    done
    for job in "fuse-randread-4k-qd1 randread 4k" "fuse-randwrite-4k-qd1 randwrite 4k" "fuse-read-1m read 1M"; do
        set -- $job
        for s in A B; do
            f=FILE_$s
            fuse_job "$1" "$2" "${!f}" "$3" "$out/$1.$s.$r.json"
            read -r iops mib < <(iops_mib "$out/$1.$s.$r.json")
            echo "$iops $mib" >"$out/$1.$s.$r"
            printf 'round %s %s %-22s %10s IOPS %8s MiB/s\n' "$r" "$s" "$1" "$iops" "$mib"
        done
    done
    for job in "nbd-randread-4k-qd16 randread 4k 16" "nbd-read-1m-qd4 read 1M 4"; do
        set -- $job
        for s in A B; do
            nbd_job "$1" "$2" "$3" "$4" "$work/nbd-$s.sock" "$out/$1.$s.$r.json"
            read -r iops mib < <(iops_mib "$out/$1.$s.$r.json")
            echo "$iops $mib" >"$out/$1.$s.$r"
            printf 'round %s %s %-22s %10s IOPS %8s MiB/s\n' "$r" "$s" "$1" "$iops" "$mib"
        done
    done
done

say "medians"
python3 - "$out" "$rounds" "$(git -C "${tree[A]}" rev-parse --short HEAD)" \
    "$(git -C "${tree[B]}" rev-parse --short HEAD)$( [ "${tree[B]}" = "$repo" ] && ! git diff --quiet HEAD && echo +changes)" \
    "$cpu" "$flags" "$(nproc)" "$size" "$runtime" <<'EOF'
import statistics, sys, os
out, rounds, a, b, cpu, flags, ncpu, size, runtime = sys.argv[1:]
rounds = int(rounds)
def med(name, side, col):
    vals = []
    for r in range(1, rounds + 1):
        with open(os.path.join(out, f"{name}.{side}.{r}")) as f:
            vals.append(float(f.read().split()[col]))
    return statistics.median(vals), min(vals), max(vals)
print(f"CPU: {cpu} ({ncpu} vCPUs; flags: {flags.strip()})")
print(f"A = {a}, B = {b}; {rounds} interleaved rounds, medians (min–max); {size} volumes, {runtime}s fio jobs after 2s ramp")
print()
print("| measurement | unit | A | B | B/A |")
print("|---|---|---|---|---|")
rows = [("xts-4k-1core", "MiB/s", 0)]
rows += [(n, "IOPS", 0) for n in ["fuse-randread-4k-qd1", "fuse-randwrite-4k-qd1", "nbd-randread-4k-qd16"]]
rows += [(n, "MiB/s", 1) for n in ["fuse-read-1m", "nbd-read-1m-qd4"]]
for name, unit, col in rows:
    (ma, la, ha), (mb, lb, hb) = med(name, "A", col), med(name, "B", col)
    print(f"| {name} | {unit} | {ma:.0f} ({la:.0f}–{ha:.0f}) | {mb:.0f} ({lb:.0f}–{hb:.0f}) | {mb/ma:.2f} |")
EOF
