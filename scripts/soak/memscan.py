#!/usr/bin/env python3
"""Finds copies of a key in a running process's memory, and whether each is locked.

    scripts/soak/memscan.py PID HEXKEY [--all] [--quarters]

Reads /proc/PID/smaps (each mapping's range, permissions, name and VmFlags; `lo`
means mlock'ed) and /proc/PID/mem, and searches every readable mapping for the key,
each 32-byte half of it and, with --quarters, each 16-byte quarter. Prints every
copy outside locked memory (with --all, every copy) as

    UNLOCKED <needle> <address> <mapping range> <perms> <name>

and a summary line. Exit status: 0 if every copy is locked, 1 if any is not, 2 if
the process's memory cannot be read (needs ptrace access: for ebsim, which makes
itself non-dumpable, CAP_SYS_PTRACE, i.e. root). The same scan as `ebsim::crypto::memscan::scan`
(tests/key_memory.rs), for soak runs without a Rust build. For a volume's XTS key,
the key is KMS Decrypt of the image header's wrapped key with the context
aws:ebs:id=<volume id>.
"""

import os
import re
import sys

HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+ ?(.*)$")
CHUNK = 4 << 20


def mappings(pid):
    out = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if line.startswith("VmFlags:"):
                if out:
                    out[-1]["locked"] = "lo" in line.split()[1:]
                continue
            m = HEADER.match(line)
            if m:
                out.append({
                    "start": int(m.group(1), 16),
                    "end": int(m.group(2), 16),
                    "perms": m.group(3),
                    "name": m.group(4).strip(),
                    "locked": False,
                })
    # Name the anonymous mappings that hold a blocked thread's stack pointer.
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/syscall") as f:
                fields = f.read().split()
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if len(fields) != 9:
            continue
        sp = int(fields[7], 16)
        for m in out:
            if m["start"] <= sp < m["end"] and m["name"] in ("", "[stack]"):
                m["name"] = f"[stack:{tid} {comm}]"
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 2:
        sys.exit(__doc__)
    pid, key = int(args[0]), bytes.fromhex(args[1])
    needles = [("whole key", key)]
    if len(key) >= 32:
        half = len(key) // 2
        needles += [("first half", key[:half]), ("second half", key[half:])]
    if "--quarters" in sys.argv:
        q = len(key) // 4
        needles += [(f"quarter {i}", key[i * q:(i + 1) * q]) for i in range(4)]
    try:
        maps = mappings(pid)
        mem = open(f"/proc/{pid}/mem", "rb", buffering=0)
    except OSError as e:
        print(f"cannot read process {pid}: {e}", file=sys.stderr)
        sys.exit(2)
    overlap = max(len(n) for _, n in needles) - 1
    hits, seen, read = [], set(), 0
    carry, carry_at = b"", 0
    for m in maps:
        if not m["perms"].startswith("r") or m["name"].startswith("[vvar") or m["name"] == "[vsyscall]":
            carry = b""
            continue
        if carry_at + len(carry) != m["start"]:
            carry = b""
        at = m["start"]
        while at < m["end"]:
            n = min(CHUNK, m["end"] - at)
            try:
                mem.seek(at)
                data = mem.read(n)
            except OSError as e:
                if read == 0 and e.errno in (1, 13):
                    print(f"cannot read process {pid}: {e}", file=sys.stderr)
                    sys.exit(2)
                print(f"unreadable {m['start']:x}-{m['end']:x} {m['name']}: {e}", file=sys.stderr)
                break
            read += len(data)
            buf, base = carry + data, at - len(carry)
            for label, needle in needles:
                i = buf.find(needle)
                while i >= 0:
                    addr = base + i
                    if (label, addr) not in seen:
                        seen.add((label, addr))
                        under = [x for x in maps if x["start"] < addr + len(needle) and addr < x["end"]]
                        hits.append((label, addr, under[0], all(x["locked"] for x in under)))
                    i = buf.find(needle, i + 1)
            carry = buf[-overlap:] if overlap else b""
            carry_at = base + len(buf) - len(carry)
            at += n
    bad = 0
    for label, addr, m, locked in hits:
        bad += not locked
        if not locked or "--all" in sys.argv:
            print(f"{'locked  ' if locked else 'UNLOCKED'} {label} {addr:#x} "
                  f"{m['start']:x}-{m['end']:x} {m['perms']} {m['name'] or '[anonymous]'}")
    print(f"process {pid}: {len(maps)} mappings, {read >> 20} MiB read, "
          f"{len(hits)} copies, {bad} not locked")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
