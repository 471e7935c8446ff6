#!/usr/bin/env bash
# The fault campaign (issue 14), repeatable: every check in its own temporary data
# root, one line of figures each, a summary, exit status 1 if any check failed.
# scripts/soak/README.md says what each check does and what its figures mean.
#
#   scripts/soak/run.sh [--short | --long] [--trials N] [--only NAME,...] [--list]
#
#   --short      few trials each, a few minutes in all (the default; scripts/test.sh)
#   --long       many trials each, for docs/BENCHMARKS.md
#   --trials N   N trials per check (rounds over every case for stores and
#                nbd-garbage, commands per process for load)
#   --only A,B   run only these checks (names as --list prints them)
#
# EBSIM_BIN names the ebsim binary (default target/release/ebsim, built with cargo
# if missing). SOAK_LOGS names the directory for the checks' logs (default
# target/soak/<date>); SOAK_TIMEOUT the time limit of one check in seconds.
set -uo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

checks=(
    "kill9-fuse    kill9.py --variant fuse"
    "kill9-nbd     kill9.py --variant nbd"
    "kill9-mount   kill9.py --variant mount"
    "crash-rekey   crash.py --variant rekey"
    "crash-grow    crash.py --variant grow"
    "copy-race     copy_race.py"
    "stores        stores.py"
    "nbd-garbage   nbd_garbage.py"
    "load          load.py"
    "key-memory    key_memory.py"
    "root-scan     root_scan.py"
)

mode=short trials="" only=""
while [ $# -gt 0 ]; do
    case "$1" in
        --short) mode=short ;;
        --long) mode=long ;;
        --trials) trials="${2:?--trials needs a number}"; shift ;;
        --trials=*) trials="${1#--trials=}" ;;
        --only) only="${2:?--only needs check names}"; shift ;;
        --only=*) only="${1#--only=}" ;;
        --list) for c in "${checks[@]}"; do echo "${c%% *}"; done; exit 0 ;;
        -h|--help) sed -n '2,/^[^#]/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ -n "$trials" ] && ! [[ "$trials" =~ ^[1-9][0-9]*$ ]]; then
    echo "run.sh: --trials takes a positive number" >&2; exit 2
fi

command -v python3 >/dev/null || { echo "run.sh: python3 is needed" >&2; exit 2; }
if [ -z "${EBSIM_BIN:-}" ]; then
    EBSIM_BIN=$repo/target/release/ebsim
    if [ ! -x "$EBSIM_BIN" ]; then
        echo "building $EBSIM_BIN"
        cargo build --release --locked --bin ebsim || exit 2
    fi
fi
EBSIM_BIN=$(realpath "$EBSIM_BIN")
[ -x "$EBSIM_BIN" ] || { echo "run.sh: no ebsim binary at $EBSIM_BIN" >&2; exit 2; }
export EBSIM_BIN
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ in the tree

logs=${SOAK_LOGS:-$repo/target/soak/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$logs"
if [ "$mode" = long ]; then limit=${SOAK_TIMEOUT:-7200}; else limit=${SOAK_TIMEOUT:-600}; fi

work=""
release() {
    if [ -n "$work" ]; then
        python3 "$repo/scripts/soak/cleanup.py" "$work" 2>>"$logs/cleanup.log"
        rm -rf --one-file-system "$work" 2>/dev/null
        work=""
    fi
}
interrupted() {
    echo "run.sh: interrupted; releasing what the running check started" >&2
    release
    exit 130
}
trap release EXIT
trap interrupted INT TERM HUP

passed=0 failed=0 skipped=0 failed_names=()
start=$(date +%s)
echo "fault campaign: $mode mode${trials:+, $trials trials}, $EBSIM_BIN ($(uname -m), $(nproc) CPUs)"
for entry in "${checks[@]}"; do
    read -r name script args <<<"$entry"
    if [ -n "$only" ] && [[ ",$only," != *",$name,"* ]]; then
        continue
    fi
    work=$(mktemp -d "${TMPDIR:-/tmp}/ebsim-soak.XXXXXX")
    extra=()
    [ "$mode" = long ] && extra+=(--long)
    [ -n "$trials" ] && extra+=(--trials "$trials")
    # shellcheck disable=SC2086  # args holds "--variant X" or nothing
    timeout --signal=TERM --kill-after=30 "$limit" \
        python3 "$repo/scripts/soak/$script" $args --work "$work" "${extra[@]}" \
        2>"$logs/$name.log" &
    wait $! && rc=0 || rc=$?
    case $rc in
        0) passed=$((passed + 1)) ;;
        77) skipped=$((skipped + 1)) ;;
        124|137)
            # The check was stopped (SIGTERM): it printed its FAIL line itself,
            # unless it did not even get to that.
            printf '        (%s timed out after %ss; log: %s)\n' "$name" "$limit" "$logs/$name.log"
            failed=$((failed + 1)); failed_names+=("$name") ;;
        *)
            failed=$((failed + 1)); failed_names+=("$name")
            echo "        (log: $logs/$name.log)" ;;
    esac
    release
done
secs=$(( $(date +%s) - start ))
printf '\nsoak summary: %d passed, %d failed, %d skipped (%s mode, %dm%02ds; logs in %s)\n' \
    "$passed" "$failed" "$skipped" "$mode" $((secs / 60)) $((secs % 60)) "$logs"
if [ "$failed" -gt 0 ]; then
    echo "soak failed: ${failed_names[*]}"
    exit 1
fi
