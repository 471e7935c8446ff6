#!/usr/bin/env bash
# fio through ebsim's FUSE front end, in one run, against four targets:
#   plain        a plain file on the data root's filesystem (the floor)
#   fuse-plain   the FUSE file of an unencrypted volume (the same code path, no XTS)
#   fuse-xts     the FUSE file of an encrypted volume
#   ext4-xts     a file on ext4 on a loop device on the encrypted FUSE file (root only)
# Jobs: scripts/bench/fio/jobs.fio. Results: a markdown table written into
# docs/BENCHMARKS.md (between the fio markers) and a chart, docs/fio.png.
#   scripts/bench/fio.sh            (EBSIM_BENCH_SIZE=1G EBSIM_BENCH_RUNTIME=10 by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
repo=$PWD
ensure_apt fio fuse3 e2fsprogs util-linux mount python3
ensure_rust
python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install --quiet matplotlib
say "building ebsim (release)"
cargo build --release --locked --quiet
ebsim=$repo/target/release/ebsim
size=${EBSIM_BENCH_SIZE:-1G}
runtime=${EBSIM_BENCH_RUNTIME:-10}
work=$(mktemp -d /var/tmp/ebsim-fio.XXXXXX)
export EBSIM_HOME=$work/home
out=$work/results
mkdir -p "$out" "$work/fuse-plain" "$work/fuse-xts" "$work/ext4"
cleanup() {
    set +e
    mountpoint -q "$work/ext4" && "$ebsim" unmount "$work/ext4" >/dev/null
    for v in ${VOLS:-}; do "$ebsim" ec2 detach-volume --volume-id "$v" --force >/dev/null 2>&1; done
    rm -rf "$work"
}
trap cleanup EXIT
bytes=$(numfmt --from=iec "$size")

say "targets ($size each, ${runtime}s per job)"
plain=$work/plain.img
VP=$("$ebsim" ec2 create-volume --size-bytes "$bytes" --query VolumeId --output text)
VX=$("$ebsim" ec2 create-volume --size-bytes "$bytes" --encrypted --query VolumeId --output text)
VOLS="$VP $VX"
"$ebsim" ec2 attach-volume --volume-id "$VP" --fuse "$work/fuse-plain" >/dev/null
"$ebsim" ec2 attach-volume --volume-id "$VX" --fuse "$work/fuse-xts" >/dev/null
targets=("plain=$plain" "fuse-plain=$work/fuse-plain/$VP" "fuse-xts=$work/fuse-xts/$VX")
# Fill every target with data first, so reads decrypt real units, not holes.
for t in "${targets[@]}"; do
    f=${t#*=}
    dd if=/dev/urandom of="$f" bs=1M count=$((bytes >> 20)) oflag=direct conv=notrunc status=none
done
if [ "$(id -u)" -eq 0 ]; then
    VE=$("$ebsim" ec2 create-volume --size-bytes $((bytes + (256 << 20))) --encrypted --query VolumeId --output text)
    VOLS="$VOLS $VE"
    "$ebsim" mount "$VE" "$work/ext4" --mkfs ext4 >/dev/null
    dd if=/dev/urandom of="$work/ext4/fio.dat" bs=1M count=$((bytes >> 20)) oflag=direct status=none
    targets+=("ext4-xts=$work/ext4/fio.dat")
else
    echo "not root: skipping ext4-xts (ebsim mount needs losetup and mount)"
fi

jobs=$(grep -o '^\[[a-z0-9-]*\]' scripts/bench/fio/jobs.fio | tr -d '[]' | grep -v global)
for job in $jobs; do
    for t in "${targets[@]}"; do
        name=${t%%=*}
        printf '%-20s %-12s ' "$job" "$name"
        FIO_FILE=${t#*=} FIO_SIZE=$size FIO_RUNTIME=$runtime \
            fio scripts/bench/fio/jobs.fio --section "$job" --output-format=json \
            --output "$out/$name.$job.json" >/dev/null
        python3 -c 'import json,sys; j=json.load(open(sys.argv[1]))["jobs"][0]; print("%8.0f IOPS %9.1f MiB/s" % (j["read"]["iops"]+j["write"]["iops"], (j["read"]["bw_bytes"]+j["write"]["bw_bytes"])/2**20))' "$out/$name.$job.json"
    done
done

say "report"
python3 scripts/bench/fio_report.py "$out" docs/BENCHMARKS.md docs/fio.png \
    "$(date -u +%F), $(nproc) CPUs, $size per target, ${runtime}s per job after 2s ramp, direct=1, psync"
echo "written: docs/BENCHMARKS.md (fio section), docs/fio.png"
