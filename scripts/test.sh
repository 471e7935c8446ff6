#!/usr/bin/env bash
# Installs what the tests need, then: cargo fmt --check, clippy with warnings as
# errors, every test (unit, integration, golden CLI transcripts, property tests),
# and the fault campaign's short mode (scripts/soak/).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

say "installing what the tests need"
# libssl-dev and pkg-config: the openssl crate builds against the system OpenSSL
# (TLS-PSK for the NBD export, src/nbd/tls.rs).
ensure_apt bash coreutils ca-certificates gcc pkg-config libssl-dev openssl python3 util-linux mount e2fsprogs xfsprogs fuse3 fio libnbd-bin qemu-utils
# PostgreSQL 15 (server and psql): src/host/postgres.rs and tests/postgres_host.rs,
# the server RDS DB instances run (docs/RDS.md, tests/rds.rs).
ensure_apt postgresql-15 postgresql-client-15
ensure_rust
# pyca/cryptography drives OpenSSL's aes-256-xts for the XTS cross-check.
python3 -c 'import cryptography' 2>/dev/null || python3 -m pip install --quiet cryptography || ensure_apt python3-cryptography
# EC2 over Query is checked with botocore's own serializer and parser, boto3, and
# the AWS CLI v1 (pip) and v2 (Debian) (tests/ec2_query.rs, tests/ec2_query_cli.rs).
python3 -c 'import boto3' 2>/dev/null || python3 -m pip install --quiet boto3 || ensure_apt python3-boto3
python3 -m awscli --version >/dev/null 2>&1 || python3 -m pip install --quiet awscli || true
[ -x /usr/bin/aws ] || ensure_apt awscli

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

say "cargo test"
# Tests that cannot run here record themselves (tests/common: skip) in this file;
# libtest counts them as passed, the summary below does not.
skipped=target/tmp/skipped-tests.txt
rm -f "$skipped"
cargo test --all-targets --locked 2>&1 | tee target/test-output.txt
if [ -s "$skipped" ]; then
    echo; echo "skipped (counted as skipped below, not passed):"; sed 's/^/  /' "$skipped"
fi
# The totals, as one plain line.
k=0
if [ -f "$skipped" ]; then k=$(wc -l <"$skipped"); fi
awk -v k="$k" '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "\nsummary: %d passed, %d failed, %d skipped\n", p - k, f, s + k }' target/test-output.txt

# The fault campaign's short mode (scripts/soak/README.md), on the binary cargo test
# just built; it ends with its own "soak summary:" line and fails the run if a
# check failed.
say "fault campaign, short mode (scripts/soak/run.sh)"
EBSIM_BIN=target/debug/ebsim bash scripts/soak/run.sh --short
