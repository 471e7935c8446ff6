#!/usr/bin/env python3
"""Check 6: concurrent KMS and EC2 load.

P worker threads each run K ebsim commands, as separate processes, all at once
against one data root: encrypt/decrypt round trips (random plaintext and
encryption context; the exact plaintext must come back), generate-data-key then
decrypt of its blob (the same key must come back), create-key + create-alias,
create-volume, create-snapshot of the worker's newest volume, delete-volume of its
oldest; then a burst of create-volume and delete-volume only. At the end the data root must agree exactly with what the workers were told:
every key, alias, volume and snapshot they created is listed once, none they did not
create, deleted volumes are gone, every snapshot is completed; the audit log has
exactly one successful Encrypt, GenerateDataKey, CreateKey and CreateAlias event per
call made; no command failed or said "database is locked"; and `ebsim ec2 cleanup`
finds nothing to settle.
"""

import base64
import collections
import json
import os
import random
import threading

import soaklib
from soaklib import log


def body(chk):
    workers = 8
    per = chk.trials_wanted
    shared = chk.create_key("soak shared")
    lock = threading.Lock()
    made = collections.defaultdict(set)
    calls = collections.Counter()
    failures = []
    ops_done = [0]

    def call(*args):
        code, out, err = chk.ebsim(*args, check=False)
        if code != 0 or "locked" in err.lower():
            with lock:
                failures.append(f"`ebsim {' '.join(args)[:120]}` exited {code}: {err[:200]}")
            return None
        return out

    def worker(w):
        mine = []
        tmp = os.path.join(chk.work, f"w{w}")
        os.makedirs(tmp)
        for j in range(per):
            op = (j + w) % 6
            if op == 0:
                pt = os.urandom(random.randint(1, 4096))
                ctx = f"worker=w{w},op={j}"
                with open(f"{tmp}/pt", "wb") as f:
                    f.write(pt)
                out = call("kms", "encrypt", "--key-id", shared, "--plaintext",
                           f"fileb://{tmp}/pt", "--encryption-context", ctx,
                           "--output", "text", "--query", "CiphertextBlob")
                if out is None:
                    continue
                with lock:
                    calls["Encrypt"] += 1
                with open(f"{tmp}/ct", "wb") as f:
                    f.write(base64.b64decode(out))
                back = call("kms", "decrypt", "--ciphertext-blob", f"fileb://{tmp}/ct",
                            "--encryption-context", ctx, "--output", "text",
                            "--query", "Plaintext")
                if back is not None and base64.b64decode(back) != pt:
                    with lock:
                        failures.append(f"worker {w} op {j}: decrypt gave other bytes")
            elif op == 1:
                out = call("kms", "generate-data-key", "--key-id", shared, "--key-spec",
                           "AES_256")
                if out is None:
                    continue
                with lock:
                    calls["GenerateDataKey"] += 1
                d = json.loads(out)
                with open(f"{tmp}/dk", "wb") as f:
                    f.write(base64.b64decode(d["CiphertextBlob"]))
                back = call("kms", "decrypt", "--ciphertext-blob", f"fileb://{tmp}/dk",
                            "--output", "text", "--query", "Plaintext")
                if back is not None and back != d["Plaintext"]:
                    with lock:
                        failures.append(f"worker {w} op {j}: the data key did not round-trip")
            elif op == 2:
                key = call("kms", "create-key", "--description", f"w{w} {j}", "--query",
                           "KeyMetadata.KeyId", "--output", "text")
                if key is None:
                    continue
                alias = f"alias/soak-w{w}-{j}"
                with lock:
                    calls["CreateKey"] += 1
                    made["keys"].add(key)
                if call("kms", "create-alias", "--alias-name", alias, "--target-key-id",
                        key) is not None:
                    with lock:
                        calls["CreateAlias"] += 1
                        made["aliases"].add((alias, key))
            elif op == 3:
                vol = call("ec2", "create-volume", "--size-bytes", "1048576", "--encrypted",
                           "--kms-key-id", shared, "--query", "VolumeId", "--output", "text")
                if vol:
                    mine.append(vol)
                    with lock:
                        made["volumes"].add(vol)
            elif op == 4 and mine:
                snap = call("ec2", "create-snapshot", "--volume-id", mine[-1], "--query",
                            "SnapshotId", "--output", "text")
                if snap:
                    with lock:
                        made["snapshots"].add(snap)
            elif op == 5 and len(mine) > 1:
                vol = mine.pop(0)
                if call("ec2", "delete-volume", "--volume-id", vol) is not None:
                    with lock:
                        made["volumes"].discard(vol)
                        made["deleted"].add(vol)
            with lock:
                ops_done[0] += 1

    def burst(w):
        """EC2 only: volumes created and deleted as fast as the processes go."""
        mine = []
        for j in range(per // 2):
            if j % 3 == 2 and mine:
                vol = mine.pop(0)
                if call("ec2", "delete-volume", "--volume-id", vol) is not None:
                    with lock:
                        made["volumes"].discard(vol)
                        made["deleted"].add(vol)
                continue
            vol = call("ec2", "create-volume", "--size-bytes", "1048576", "--encrypted",
                       "--kms-key-id", shared, "--query", "VolumeId", "--output", "text")
            if vol:
                mine.append(vol)
                with lock:
                    made["volumes"].add(vol)

    for phase in (worker, burst):
        ts = [threading.Thread(target=phase, args=(w,)) for w in range(workers)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    chk.trials = workers * (per + per // 2)
    for f in failures:
        chk.problem(f)
    chk.failures = len(failures)

    inexact = []

    def check(what, have, want):
        if have != want:
            inexact.append(what)
            chk.problem(f"{what}: {len(have - want)} unexpected {sorted(have - want)[:3]}, "
                        f"{len(want - have)} missing {sorted(want - have)[:3]}")

    keys = chk.json("kms", "list-keys")["Keys"]
    ids = [k["KeyId"] for k in keys]
    if len(ids) != len(set(ids)):
        chk.problem("list-keys lists a key twice")
    check("keys", set(ids), made["keys"] | {shared.rsplit("/", 1)[1]})
    aliases = {(a["AliasName"], a.get("TargetKeyId"))
               for a in chk.json("kms", "list-aliases")["Aliases"]
               if a["AliasName"].startswith("alias/soak-")}
    check("aliases", aliases, made["aliases"])
    vols = chk.json("ec2", "describe-volumes")["Volumes"]
    check("volumes", {v["VolumeId"] for v in vols}, made["volumes"])
    snaps = chk.json("ec2", "describe-snapshots")["Snapshots"]
    check("snapshots", {s["SnapshotId"] for s in snaps}, made["snapshots"])
    states = collections.Counter(s["State"] for s in snaps)
    if set(states) - {"completed"}:
        chk.problem(f"snapshot states: {dict(states)}")
    images = {n[:-4] for n in os.listdir(os.path.join(chk.home, "regions", "us-east-1",
                                                      "volumes")) if n.endswith(".img")}
    check("images", images, made["volumes"])
    events = collections.Counter()
    with open(os.path.join(chk.home, "regions", "us-east-1", "cloudtrail.jsonl")) as f:
        for line in f:
            e = json.loads(line)
            if not e.get("errorCode"):
                events[e.get("eventName")] += 1
    want_events = dict(calls, CreateKey=calls["CreateKey"] + 1)
    got_events = {k: events[k] for k in want_events}
    if got_events != want_events:
        chk.problem(f"audit events {got_events}, expected {want_events}")
    cleanup = chk.json("ec2", "cleanup")
    pending = {k: v for k, v in cleanup.items()
               if k in ("AbandonedOperations", "RemovedFiles", "RestoredImages",
                        "UnrecordedImages") and v}
    if pending or cleanup.get("CollectedBlocks"):
        chk.problem(f"cleanup found something: {json.dumps(cleanup)[:300]}")
    log(f"made: { {k: len(v) for k, v in made.items()} }, calls {dict(calls)}")
    chk.figure(f"{workers} processes x {per} mixed + {per // 2} EC2 operations")
    chk.figure(f"keys {len(made['keys'])}, aliases {len(made['aliases'])}, volumes "
               f"{len(made['volumes'])} (+{len(made['deleted'])} deleted), snapshots "
               f"{len(made['snapshots'])}: "
               + ("exact" if not inexact else "NOT exact: " + ", ".join(inexact)))
    chk.figure(f"commands failed: {len(failures)}")
    chk.figure("cleanup: " + ("nothing pending" if not pending else "found some"))


if __name__ == "__main__":
    soaklib.main("load", body, short_trials=40, long_trials=150)
