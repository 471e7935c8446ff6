#!/usr/bin/env bash
# pgbench on an encrypted DB instance against the same instance unencrypted, in
# one run (docs/RDS.md, docs/BENCHMARKS.md "RDS"): two `ebsim rds` instances of
# the same shape, one --storage-encrypted, pgbench's TPC-B-like load on each,
# rounds interleaved (enc, plain, enc, plain, …) so that both see the same
# machine. Also the time CreateDBInstance, StopDBInstance and StartDBInstance
# take. Needs root (the instances mount their storage).
#   scripts/bench/rds.sh     (EBSIM_BENCH_SCALE=20 EBSIM_BENCH_CLIENTS=4
#                             EBSIM_BENCH_RUNTIME=20 EBSIM_BENCH_ROUNDS=5)
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
repo=$PWD
[ "$(id -u)" -eq 0 ] || { echo "scripts/bench/rds.sh needs root (DB instances mount their storage)" >&2; exit 1; }
ensure_apt postgresql-15 postgresql-client-15 fuse3 e2fsprogs util-linux mount
ensure_rust
say "building ebsim (release)"
cargo build --release --locked --quiet
ebsim=$repo/target/release/ebsim
scale=${EBSIM_BENCH_SCALE:-20}
clients=${EBSIM_BENCH_CLIENTS:-4}
runtime=${EBSIM_BENCH_RUNTIME:-20}
rounds=${EBSIM_BENCH_ROUNDS:-5}
pgbench=/usr/lib/postgresql/15/bin/pgbench   # postgresql-15 has it
work=$(mktemp -d /var/tmp/ebsim-rds.XXXXXX)
export EBSIM_HOME=$work/home
export PGPASSWORD=bench-Password-1
cleanup() {
    set +e
    for db in enc plain enc-replica enc-restored; do
        "$ebsim" rds delete-db-instance --db-instance-identifier "$db" --skip-final-snapshot >/dev/null 2>&1
    done
    rm -rf "$work"
}
trap cleanup EXIT

cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -xE 'aes|avx2|vaes|vpclmulqdq|avx512f|avx512vl' | tr '\n' ' ')
now() { date +%s.%N; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$2"; }

port_enc=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
port_plain=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
create() { # id port [--storage-encrypted]
    "$ebsim" rds create-db-instance --db-instance-identifier "$1" --db-instance-class db.m5.large \
        --engine postgres --allocated-storage 20 --master-username bench \
        --master-user-password "$PGPASSWORD" --port "$2" ${3:-} >/dev/null
}
say "creating the instances"
t0=$(now); create enc "$port_enc" --storage-encrypted; t1=$(now)
create plain "$port_plain"; t2=$(now)
create_enc=$(secs "$t0" "$t1"); create_plain=$(secs "$t1" "$t2")
t0=$(now); "$ebsim" rds stop-db-instance --db-instance-identifier enc >/dev/null; t1=$(now)
"$ebsim" rds start-db-instance --db-instance-identifier enc >/dev/null; t2=$(now)
stop_enc=$(secs "$t0" "$t1"); start_enc=$(secs "$t1" "$t2")

say "pgbench -i -s $scale on each"
for p in "$port_enc" "$port_plain"; do
    "$pgbench" -h 127.0.0.1 -p "$p" -U bench -i -s "$scale" -q postgres >/dev/null 2>&1
done

say "a snapshot, a restore and a read replica of the encrypted instance (after pgbench -i)"
t0=$(now); "$ebsim" rds create-db-snapshot --db-snapshot-identifier enc-snap --db-instance-identifier enc >/dev/null; t1=$(now)
port_restored=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$ebsim" rds restore-db-instance-from-db-snapshot --db-instance-identifier enc-restored --db-snapshot-identifier enc-snap --port "$port_restored" >/dev/null; t2=$(now)
port_replica=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$ebsim" rds create-db-instance-read-replica --db-instance-identifier enc-replica --source-db-instance-identifier enc --port "$port_replica" >/dev/null; t3=$(now)
snap_enc=$(secs "$t0" "$t1"); restore_enc=$(secs "$t1" "$t2"); replica_enc=$(secs "$t2" "$t3")
db_mib=$(PGPASSWORD=$PGPASSWORD psql -h 127.0.0.1 -p "$port_enc" -U bench -d postgres -Atc "select pg_database_size('postgres') >> 20")
for db in enc-restored enc-replica; do
    "$ebsim" rds delete-db-instance --db-instance-identifier "$db" --skip-final-snapshot >/dev/null
done
"$ebsim" rds delete-db-snapshot --db-snapshot-identifier enc-snap >/dev/null

tps() { # port → tps (excluding connections); both instances checkpointed first,
    # so that no round carries the other's (or its own earlier) dirty pages
    for p in "$port_enc" "$port_plain"; do
        psql -h 127.0.0.1 -p "$p" -U bench -d postgres -Atqc checkpoint
    done
    "$pgbench" -h 127.0.0.1 -p "$1" -U bench -c "$clients" -j 2 -T "$runtime" -M prepared postgres 2>/dev/null |
        awk '/^tps = / { print $3; exit }'
}
enc=(); plain=()
for r in $(seq 1 "$rounds"); do
    say "round $r of $rounds (${runtime}s each)"
    enc+=("$(tps "$port_enc")")
    plain+=("$(tps "$port_plain")")
done

python3 - "$cpu" "$flags" "$(nproc)" "$scale" "$clients" "$runtime" "${enc[*]}" "${plain[*]}" \
    "$create_enc" "$create_plain" "$stop_enc" "$start_enc" "$snap_enc" "$restore_enc" "$replica_enc" "$db_mib" <<'EOF'
import statistics, sys
cpu, flags, ncpu, scale, clients, runtime, enc, plain, c_enc, c_plain, s_enc, st_enc, snap, restore, replica, mib = sys.argv[1:]
enc = [float(x) for x in enc.split()]
plain = [float(x) for x in plain.split()]
me, mp = statistics.median(enc), statistics.median(plain)
print(f"CPU: {cpu} ({ncpu} vCPUs; flags: {flags.strip()})")
print(f"pgbench TPC-B-like, scale {scale}, {clients} clients, -M prepared, {runtime} s a round, rounds interleaved")
print()
print("| instance | tps per round | median |")
print("|---|---|---|")
print(f"| encrypted (sse-kms) | {' / '.join(f'{x:.0f}' for x in enc)} | {me:.0f} |")
print(f"| unencrypted | {' / '.join(f'{x:.0f}' for x in plain)} | {mp:.0f} |")
print()
ratios = [e / p for e, p in zip(enc, plain)]
print(f"encrypted / unencrypted: {me / mp:.2f}x on the medians (per round: {', '.join(f'{r:.2f}' for r in ratios)}); target >= 0.8x")
print()
print(f"CreateDBInstance: {c_enc} s encrypted, {c_plain} s unencrypted; StopDBInstance {s_enc} s, StartDBInstance {st_enc} s (encrypted)")
print(f"With a {mib} MiB database (encrypted): CreateDBSnapshot {snap} s, RestoreDBInstanceFromDBSnapshot {restore} s, CreateDBInstanceReadReplica {replica} s")
EOF
