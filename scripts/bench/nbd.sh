#!/usr/bin/env bash
# NBD peers, in one run, all on unix sockets and all buffered (page cache warm):
#   ebsim-xts     ebsim ec2 attach-volume --nbd, encrypted volume (AES-256-XTS)
#   ebsim-plain   the same server over an unencrypted volume
#   qemu-raw      qemu-nbd over a raw image
#   qemu-luks     qemu-nbd over a LUKS1 image (aes-256-xts-plain64)
#   nbdkit-file   nbdkit's file plugin over the raw image
#   nbdkit-luks   nbdkit --filter=luks over the LUKS image
#   nbdkit-null   nbdkit's null plugin: a server that stores nothing, i.e. what the
#                 client and the socket alone cost (the floor for small requests)
# Jobs: scripts/bench/nbd/jobs.fio (fio's nbd engine) and nbdcopy to null: (whole
# volume, the connections nbdcopy chooses). Each job runs against every target in
# turn, EBSIM_BENCH_ROUNDS times (interleaved); the report takes medians.
# Results: a table in docs/BENCHMARKS.md (between the nbd markers), docs/nbd.png.
#   scripts/bench/nbd.sh     (EBSIM_BENCH_SIZE=1G EBSIM_BENCH_RUNTIME=8 EBSIM_BENCH_ROUNDS=2)
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
repo=$PWD
ensure_apt fio libnbd-bin nbdkit qemu-utils python3
ensure_rust
python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install --quiet matplotlib
say "building ebsim (release)"
cargo build --release --locked --quiet
ebsim=$repo/target/release/ebsim
size=${EBSIM_BENCH_SIZE:-1G}
runtime=${EBSIM_BENCH_RUNTIME:-8}
rounds=${EBSIM_BENCH_ROUNDS:-2}
bytes=$(numfmt --from=iec "$size")
work=$(mktemp -d /var/tmp/ebsim-nbd.XXXXXX)
export EBSIM_HOME=$work/home
out=$work/results
mkdir -p "$out" "$work/s"
PIDS=""
cleanup() {
    set +e
    for v in ${VOLS:-}; do "$ebsim" ec2 detach-volume --volume-id "$v" --force >/dev/null 2>&1; done
    for p in $PIDS; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
sock() { echo "nbd+unix:///?socket=$work/s/$1.sock"; }
wait_sock() { for _ in $(seq 100); do [ -S "$work/s/$1.sock" ] && return 0; sleep 0.1; done; echo "$1 did not start" >&2; exit 1; }

say "targets ($size each)"
head -c "$bytes" /dev/urandom > "$work/src.raw"
VX=$("$ebsim" ec2 create-volume --size-bytes "$bytes" --encrypted --query VolumeId --output text)
VP=$("$ebsim" ec2 create-volume --size-bytes "$bytes" --query VolumeId --output text)
VOLS="$VX $VP"
"$ebsim" ec2 attach-volume --volume-id "$VX" --nbd "unix:$work/s/ebsim-xts.sock" >/dev/null
"$ebsim" ec2 attach-volume --volume-id "$VP" --nbd "unix:$work/s/ebsim-plain.sock" >/dev/null
cp "$work/src.raw" "$work/raw.img"
qemu-img create -q -f luks --object secret,id=sec0,data=abc \
    -o key-secret=sec0,cipher-alg=aes-256,cipher-mode=xts,ivgen-alg=plain64,hash-alg=sha256 \
    "$work/luks.img" "$size"
qemu-nbd --persistent --shared=8 --format=raw --socket="$work/s/qemu-raw.sock" "$work/raw.img" &
PIDS="$PIDS $!"
qemu-nbd --persistent --shared=8 --object secret,id=sec0,data=abc \
    --image-opts "driver=luks,key-secret=sec0,file.driver=file,file.filename=$work/luks.img" \
    --socket="$work/s/qemu-luks.sock" &
PIDS="$PIDS $!"
wait_sock qemu-raw; wait_sock qemu-luks
# Fill the encrypted targets through their servers, so reads decrypt real data.
for t in ebsim-xts ebsim-plain qemu-luks; do nbdcopy --flush "$work/src.raw" "$(sock $t)"; done
# nbdkit gets copies of its own (same bytes, same LUKS header and key).
cp "$work/raw.img" "$work/raw-nbdkit.img"
cp "$work/luks.img" "$work/luks-nbdkit.img"
nbdkit --foreground --unix "$work/s/nbdkit-file.sock" file "$work/raw-nbdkit.img" &
PIDS="$PIDS $!"
nbdkit --foreground --unix "$work/s/nbdkit-luks.sock" --filter=luks file "$work/luks-nbdkit.img" passphrase=abc &
PIDS="$PIDS $!"
nbdkit --foreground --unix "$work/s/nbdkit-null.sock" null size="$bytes" &
PIDS="$PIDS $!"
wait_sock nbdkit-file; wait_sock nbdkit-luks; wait_sock nbdkit-null
targets=(ebsim-xts ebsim-plain qemu-raw qemu-luks nbdkit-file nbdkit-luks nbdkit-null)
for t in "${targets[@]}"; do
    printf '%-12s ' "$t"; nbdinfo --size "$(sock $t)"
done

jobs=$(grep -o '^\[[a-z0-9-]*\]' scripts/bench/nbd/jobs.fio | tr -d '[]' | grep -v global)
for job in $jobs; do
    for r in $(seq "$rounds"); do
        for t in "${targets[@]}"; do
            printf '%-20s %-12s round %s ' "$job" "$t" "$r"
            NBD_URI=$(sock "$t") FIO_SIZE=$size FIO_RUNTIME=$runtime \
                fio scripts/bench/nbd/jobs.fio --section "$job" --output-format=json \
                --output "$out/$t.$job.$r.json" >/dev/null
            python3 -c 'import json,sys; j=json.load(open(sys.argv[1]))["jobs"][0]; print("%8.0f IOPS %9.1f MiB/s" % (j["read"]["iops"]+j["write"]["iops"], (j["read"]["bw_bytes"]+j["write"]["bw_bytes"])/2**20))' "$out/$t.$job.$r.json"
        done
    done
done
for r in $(seq "$rounds"); do
    for t in "${targets[@]}"; do
        start=$(date +%s.%N)
        nbdcopy "$(sock "$t")" null:
        end=$(date +%s.%N)
        python3 -c 'import json,sys; b,s,e=int(sys.argv[1]),float(sys.argv[2]),float(sys.argv[3]); json.dump({"mib": b/2**20/(e-s)}, open(sys.argv[4],"w")); print("%-20s %-12s round %s %18.1f MiB/s" % ("nbdcopy-null", sys.argv[5], sys.argv[6], b/2**20/(e-s)))' \
            "$bytes" "$start" "$end" "$out/$t.nbdcopy-null.$r.json" "$t" "$r"
    done
done

say "report"
python3 scripts/bench/nbd_report.py "$out" docs/BENCHMARKS.md docs/nbd.png \
    "$(date -u +%F), $(nproc) CPUs, $size per target, ${runtime}s per fio job after 2s ramp, $rounds interleaved rounds (median), unix sockets, page cache warm"
echo "written: docs/BENCHMARKS.md (nbd section), docs/nbd.png"
