#!/usr/bin/env bash
# Snapshot, copy and re-key costs on one volume, measured in one run:
#   cp --sparse=always of the image (the floor: read + write every allocated byte)
#   rekey-volume to another key (decrypt + re-encrypt every block in place, journaled)
#   copy-snapshot under another key (decrypt + re-encrypt every block into new blocks)
#   a full snapshot, then an incremental one after changing 1% of the volume
# Targets (docs/BENCHMARKS.md): re-key and key-changing copy <= 1.3x cp;
# incremental after 1% <= 5% of the full snapshot.
#   scripts/bench/snapshots.sh        (EBSIM_BENCH_SNAP_SIZE=4G by default; needs root for FUSE;
#                                      EBSIM_BENCH_BIN=path skips the build and measures that binary)
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
ensure_apt fuse3 coreutils bc python3
ensure_rust
# EBSIM_BENCH_BIN=path measures another build (an A/B of two commits in one sitting).
if [ -n "${EBSIM_BENCH_BIN:-}" ]; then
    ebsim=$EBSIM_BENCH_BIN
else
    say "building ebsim (release)"
    cargo build --release --locked --quiet
    ebsim=$PWD/target/release/ebsim
fi
size=${EBSIM_BENCH_SNAP_SIZE:-4G}
bytes=$(numfmt --from=iec "$size")
work=$(mktemp -d /var/tmp/ebsim-snap.XXXXXX)
export EBSIM_HOME=$work/home
cleanup() { set +e; "$ebsim" ec2 detach-volume --volume-id "${VOL:-none}" --force >/dev/null 2>&1; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/att"
secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }

A=$("$ebsim" kms create-key --query KeyMetadata.Arn --output text)
B=$("$ebsim" kms create-key --query KeyMetadata.Arn --output text)
VOL=$("$ebsim" ec2 create-volume --size-bytes "$bytes" --encrypted --kms-key-id "$A" --query VolumeId --output text)
say "filling $size with random data"
"$ebsim" ec2 attach-volume --volume-id "$VOL" --fuse "$work/att" >/dev/null
dd if=/dev/urandom of="$work/att/$VOL" bs=4M count=$((bytes >> 22)) conv=notrunc,fsync status=none
"$ebsim" ec2 detach-volume --volume-id "$VOL" >/dev/null
img=$EBSIM_HOME/regions/us-east-1/volumes/$VOL.img
sync

# Every timed operation starts with its source in the page cache, as cp's does:
# snapshot blocks are written with O_DIRECT (not cached), so without this the copy
# would read its source from the disk while cp reads the image from memory.
blocks=$EBSIM_HOME/regions/us-east-1/snapshots/blocks
warm() { find "$@" -type f -exec cat {} + >/dev/null; }

say "measuring"
warm "$img"
t_cp=$(secs cp --sparse=always "$img" "$work/copy.img"); rm -f "$work/copy.img"; sync
# ebsim's operations are durable when they return (fsync / syncfs); cp is not
# until its data is synced, so the like-for-like floor is cp followed by sync.
cp_sync() { cp --sparse=always "$img" "$work/copy.img" && sync -f "$work/copy.img"; }
warm "$img"
t_cps=$(secs cp_sync); rm -f "$work/copy.img"; sync
warm "$img"
t_full=$(secs "$ebsim" ec2 create-snapshot --volume-id "$VOL")
S1=$("$ebsim" ec2 describe-snapshots --query 'Snapshots[0].SnapshotId' --output text)
# Change 1% of the volume: rewrite 1% of its 512 KiB blocks, chosen at random.
"$ebsim" ec2 attach-volume --volume-id "$VOL" --fuse "$work/att" >/dev/null
python3 - "$work/att/$VOL" "$bytes" <<'PY'
import os, random, sys
path, size = sys.argv[1], int(sys.argv[2])
blocks = size // (512 * 1024)
fd = os.open(path, os.O_WRONLY)
for b in random.sample(range(blocks), max(1, blocks // 100)):
    os.pwrite(fd, os.urandom(512 * 1024), b * 512 * 1024)
os.fsync(fd); os.close(fd)
PY
"$ebsim" ec2 detach-volume --volume-id "$VOL" >/dev/null
warm "$img"
t_incr=$(secs "$ebsim" ec2 create-snapshot --volume-id "$VOL")
warm "$blocks"
t_copy=$(secs "$ebsim" ec2 copy-snapshot --source-region us-east-1 --source-snapshot-id "$S1" --encrypted --kms-key-id "$B")
warm "$img"
t_rekey=$(secs "$ebsim" ec2 rekey-volume --volume-id "$VOL" --kms-key-id "$B")

ratio() { echo "scale=2; $1 / $2" | bc -l; }
pct() { echo "scale=1; 100 * $1 / $2" | bc -l; }
printf '\n%-42s %8s %8s\n' "operation ($size, $(nproc) CPUs)" seconds ratio
printf '%-42s %8s %8s %10s\n' "" "" "vs cp" "vs cp+sync"
printf '%-42s %8.2f %8s %10s\n' "cp --sparse=always of the image" "$t_cp" "1.00x" ""
printf '%-42s %8.2f %8s %10s\n' "cp --sparse=always, then sync -f" "$t_cps" "" "1.00x"
printf '%-42s %8.2f %7sx %9sx\n' "rekey-volume to another key" "$t_rekey" "$(ratio "$t_rekey" "$t_cp")" "$(ratio "$t_rekey" "$t_cps")"
printf '%-42s %8.2f %7sx %9sx\n' "copy-snapshot under another key" "$t_copy" "$(ratio "$t_copy" "$t_cp")" "$(ratio "$t_copy" "$t_cps")"
printf '%-42s %8.2f %8s\n' "create-snapshot, full" "$t_full" ""
printf '%-42s %8.2f %7s%%\n' "create-snapshot after changing 1%" "$t_incr" "$(pct "$t_incr" "$t_full")"
