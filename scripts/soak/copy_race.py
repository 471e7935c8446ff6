#!/usr/bin/env python3
"""Check 3: the copy and collector race (docs/DATA-ROOT.md §4).

Two snapshots of two volumes of random data; one block of the second is damaged
(found by listing the block store before and after that snapshot). Each trial
starts, side by side and in a random order with a random gap, a copy of the good
snapshot under another KMS key (so every block is re-encrypted and written anew)
and a copy of the damaged one (which fails with SnapshotBlockCorrupt and then
collects the blocks it wrote). The good copy must complete; a volume restored from
it must hold exactly the source's bytes; the failed copy must leave no record and
no pending snapshot; and after `ebsim ec2 cleanup` the block store must hold
exactly the blocks the remaining snapshots name — none missing, none extra.
"""

import glob
import json
import os
import random
import shutil
import sqlite3
import tempfile
import time

import soaklib
from soaklib import Failed, log, MIB

SIZE = 48 * MIB


def blocks_dir(chk):
    return os.path.join(chk.home, "regions", "us-east-1", "snapshots", "blocks")


def stored_blocks(chk):
    """Digests of the blocks in the store (block files only, no temporaries)."""
    out = set()
    for p in glob.glob(os.path.join(blocks_dir(chk), "??", "*.blk")):
        out.add(os.path.basename(p)[:-4])
    return out


def referenced_blocks(chk):
    """Digests every snapshot record names, read from a copy of ec2.db (so the
    data root itself is not opened by anything but ebsim)."""
    src = os.path.join(chk.home, "regions", "us-east-1", "ec2.db")
    with tempfile.TemporaryDirectory(dir=chk.work) as d:
        for suffix in ("", "-wal"):
            if os.path.exists(src + suffix):
                shutil.copy(src + suffix, os.path.join(d, "ec2.db" + suffix))
        db = sqlite3.connect(os.path.join(d, "ec2.db"))
        try:
            rows = db.execute("SELECT snapshot_id, record FROM snapshots").fetchall()
        finally:
            db.close()
    out, states, manifests = set(), {}, {}
    for sid, rec in rows:
        r = json.loads(rec)
        states[sid] = r.get("state", "completed")
        manifests[sid] = {int(k): v for k, v in r.get("blocks", {}).items()}
        out.update(manifests[sid].values())
    return out, states, manifests


def body(chk):
    soaklib.need_tools("nbdcopy")
    k1, k2 = chk.create_key("soak source"), chk.create_key("soak copies")
    src = os.path.join(chk.work, "good.raw")
    soaklib.random_file(src, SIZE, holes=[(4 * MIB, MIB)])
    want = soaklib.sha256_file(src)

    def snapshot_of(path):
        vol = chk.create_volume(SIZE, k1)
        chk.write_volume(vol, path)
        before = stored_blocks(chk)
        snap = chk.ok("ec2", "create-snapshot", "--volume-id", vol, "--query", "SnapshotId",
                      "--output", "text")
        return snap, stored_blocks(chk) - before

    good, _ = snapshot_of(src)
    other = os.path.join(chk.work, "bad.raw")
    soaklib.random_file(other, SIZE)
    bad, bad_blocks = snapshot_of(other)
    if not bad_blocks:
        raise Failed("the second snapshot stored no block of its own")
    # A block two thirds of the way in: the failing copy writes many blocks first,
    # so its failure (and the collection it asks for) overlaps the good copy.
    manifest = referenced_blocks(chk)[2][bad]
    index = sorted(i for i, d in manifest.items() if d in bad_blocks)
    victim = manifest[index[len(index) * 2 // 3]]
    vpath = os.path.join(blocks_dir(chk), victim[:2], victim + ".blk")
    with open(vpath, "r+b") as f:
        f.seek(1000)
        b = f.read(1)
        f.seek(1000)
        f.write(bytes([b[0] ^ 0x5A]))
    log(f"damaged block {victim} of {bad}")
    stats = {"good": 0, "bad_failed": 0, "restored_ok": 0, "exact": 0, "extra": 0,
             "missing": 0, "overlap": 0}

    def copy_args(snap):
        return ["ec2", "copy-snapshot", "--source-region", "us-east-1",
                "--source-snapshot-id", snap, "--encrypted", "--kms-key-id", k2,
                "--query", "SnapshotId", "--output", "text"]

    def trial(i):
        order = [good, bad] if random.random() < 0.5 else [bad, good]
        gap = random.uniform(0, 0.15)
        procs, span = {}, {}
        for n, snap in enumerate(order):
            span[snap] = [time.monotonic(), None]
            procs[snap] = chk.spawn(*copy_args(snap))
            if n == 0:
                time.sleep(gap)
        end = time.monotonic() + 300
        while any(v[1] is None for v in span.values()) and time.monotonic() < end:
            for snap, p in procs.items():
                if span[snap][1] is None and p.poll() is not None:
                    span[snap][1] = time.monotonic()
            time.sleep(0.005)
        for p in procs.values():
            p.wait(timeout=10)
        (s0, e0), (s1, e1) = span[order[0]], span[order[1]]
        stats["overlap"] += s1 < e0 and s0 < e1
        g, b = procs[good], procs[bad]
        gout = open(g.out_path).read().strip()
        berr = open(b.err_path).read()
        log(f"trial {i}: {'good' if order[0] == good else 'bad'} first, gap {gap:.2f}s; "
            f"good exit {g.returncode} ({span[good][1] - span[good][0]:.2f}s), "
            f"bad exit {b.returncode} ({span[bad][1] - span[bad][0]:.2f}s)")
        if b.returncode == 253 and "SnapshotBlockCorrupt" in berr:
            stats["bad_failed"] += 1
        else:
            chk.problem(f"trial {i}: the copy of the damaged snapshot exited {b.returncode}: "
                        f"{berr[:300]}")
        if g.returncode != 0 or not gout.startswith("snap-"):
            raise Failed(f"the good copy exited {g.returncode}: "
                         f"{open(g.err_path).read()[:300]}")
        stats["good"] += 1
        vol = chk.ok("ec2", "create-volume", "--snapshot-id", gout, "--query", "VolumeId",
                     "--output", "text")
        got = chk.volume_sha256(vol)
        if got == want:
            stats["restored_ok"] += 1
        else:
            chk.problem(f"trial {i}: the volume restored from copy {gout} differs from "
                        f"the source ({got[:16]} != {want[:16]})")
        chk.ok("ec2", "delete-volume", "--volume-id", vol)
        cleanup = chk.json("ec2", "cleanup")
        log(f"cleanup: {json.dumps(cleanup)[:400]}")
        stored = stored_blocks(chk)
        named, states, _ = referenced_blocks(chk)
        not_done = {s: st for s, st in states.items() if st != "completed"}
        if not_done:
            chk.problem(f"trial {i}: snapshots not completed: {not_done}")
        if len(states) != 2 + stats["good"]:
            chk.problem(f"trial {i}: {len(states)} snapshot records, expected "
                        f"{2 + stats['good']}")
        missing, extra = named - stored, stored - named
        stats["missing"] += len(missing)
        stats["extra"] += len(extra)
        if missing or extra:
            chk.problem(f"trial {i}: the block store has {len(extra)} unreferenced blocks "
                        f"and lacks {len(missing)} named ones (e.g. "
                        f"{sorted(missing)[:1]} {sorted(extra)[:1]})")
        else:
            stats["exact"] += 1
        # Every other trial drops its copy, so the collector has real work.
        if i % 2:
            chk.ok("ec2", "delete-snapshot", "--snapshot-id", gout)
            stats["good"] -= 1

    for i in range(chk.trials_wanted):
        chk.trial(trial, i)
    chk.figure(f"good copies restored identical: {stats['restored_ok']}/{chk.trials}")
    chk.figure(f"damaged copies failed cleanly: {stats['bad_failed']}/{chk.trials}")
    chk.figure(f"copies overlapping: {stats['overlap']}/{chk.trials}")
    chk.figure(f"block store exact after cleanup: {stats['exact']}/{chk.trials} "
               f"(blocks missing {stats['missing']}, unreferenced {stats['extra']})")


if __name__ == "__main__":
    soaklib.main("copy-race", body, short_trials=3, long_trials=20)
