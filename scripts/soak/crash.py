#!/usr/bin/env python3
"""Check 2: re-key and grow killed at injected points (--variant rekey or grow).

rekey: a volume holding random data with holes is re-keyed to another KMS key by
`ebsim ec2 rekey-volume`, killed with SIGKILL up to 4 times at random points
(small chunks, EBSIM_REKEY_CHUNK_UNITS; each kill soon after the header's
boundary passed a random unit), then run to the end. Its
content (read over NBD with nbdcopy) must be unchanged, its header (parsed here,
docs/FORMAT.md §2/§9) must name only the new key, the journal must be gone, and
while half-way it must refuse to attach.

grow: `ebsim ec2 modify-volume` is killed at each crash point of a grow
(EBSIM_FAULT=grow:after-set-len, grow:after-header-a, modify-volume:after-header).
The next command must show the size the image's newest header holds (the record
follows the header: docs/DATA-ROOT.md §3), the data must be intact, the grown part
zero, and the volume must grow again.
"""

import hashlib
import os
import random
import time

import soaklib
from soaklib import Failed, log, MIB

POINTS = [("grow:after-set-len", False), ("grow:after-header-a", True),
          ("modify-volume:after-header", True)]


def rekey(chk):
    soaklib.need_tools("nbdcopy")
    k1, k2 = chk.create_key("soak rekey a"), chk.create_key("soak rekey b")
    size = 32 * MIB
    chunk = {"EBSIM_REKEY_CHUNK_UNITS": "64"}  # 256 KiB: 128 steps over 32 MiB
    src = os.path.join(chk.work, "src.raw")
    stats = {"kills": 0, "mid": 0, "lost": 0}

    # How long one re-key takes here, so kills spread over all of it.
    cal = chk.create_volume(size, k1)
    soaklib.random_file(src, size)
    chk.write_volume(cal, src)
    t0 = time.monotonic()
    chk.ok("ec2", "rekey-volume", "--volume-id", cal, "--kms-key-id", k2, env=chunk)
    span = max(time.monotonic() - t0, 0.05)
    chk.ok("ec2", "delete-volume", "--volume-id", cal)
    log(f"one re-key of {size >> 20} MiB takes {span:.2f}s")

    def trial(i):
        holes = [(random.randrange(0, size // MIB) * MIB, random.choice([4096, 65536, MIB]))
                 for _ in range(4)]
        soaklib.random_file(src, size, holes=holes)
        want = soaklib.sha256_file(src)
        vol = chk.create_volume(size, k1)
        chk.write_volume(vol, src)
        old_key = chk.volume_keys(vol)[0]
        last_boundary = 0
        for k in range(4):
            p = chk.spawn("ec2", "rekey-volume", "--volume-id", vol, "--kms-key-id", k2,
                          env=chunk)
            # Killed once the header says it passed a random point of what is left
            # (then a little later, so the kill falls anywhere in a chunk's
            # journal, write and flush), not after a fixed time: how long a re-key
            # takes depends on what else the machine does.
            target = random.randrange(last_boundary, size // 4096)
            end = time.monotonic() + 4 * span + 5
            while p.poll() is None and time.monotonic() < end:
                h = soaklib.read_header(chk.image_path(vol))
                if h["incompat"] & 0x2 and h["boundary"] >= target:
                    break
                time.sleep(0.002)
            time.sleep(random.uniform(0, 0.02))
            p.kill()
            p.wait()
            stats["kills"] += 1
            h = soaklib.read_header(chk.image_path(vol))
            if h["incompat"] & 0x2:
                stats["mid"] += 1
                if h["new_kms_key_arn"] != k2:
                    chk.problem(f"{vol}: re-key in progress to {h['new_kms_key_arn']}, not {k2}")
                if h["boundary"] < last_boundary:
                    chk.problem(f"{vol}: the re-key boundary went back from "
                                f"{last_boundary} to {h['boundary']}")
                last_boundary = h["boundary"]
                code, _, err = chk.ebsim("ec2", "attach-volume", "--volume-id", vol, "--nbd",
                                         "unix:" + os.path.join(chk.work, "x.sock"),
                                         check=False)
                if code == 0 or "IncorrectState" not in err:
                    chk.problem(f"{vol}: attaching half-way through a re-key gave {code}: "
                                f"{err[:200]}")
                    if code == 0:
                        chk.detach(vol, force=True)
            log(f"trial {i} kill {k}: exit {p.returncode}, "
                f"{'mid-way, boundary %d' % h['boundary'] if h['incompat'] & 2 else 'not in progress'}")
            if not h["incompat"] & 0x2 and h["kms_key_arn"] == k2:
                break  # finished before the kill
        chk.ok("ec2", "rekey-volume", "--volume-id", vol, "--kms-key-id", k2, env=chunk)
        h = soaklib.read_header(chk.image_path(vol))
        if h["incompat"] & 0x2 or h["kms_key_arn"] != k2:
            chk.problem(f"{vol}: after the re-key the header has incompat {h['incompat']:#x} "
                        f"and key {h['kms_key_arn']}")
        if chk.describe_volume(vol)["KmsKeyId"] != k2:
            chk.problem(f"{vol}: the record does not name the new key")
        if os.path.exists(chk.image_path(vol)[:-4] + ".rekey"):
            chk.problem(f"{vol}: the re-key journal is left")
        if chk.volume_keys(vol)[0] == old_key:
            chk.problem(f"{vol}: the data key did not change")
        got = chk.volume_sha256(vol)
        if got != want:
            stats["lost"] += 1
            chk.problem(f"{vol}: content changed by the interrupted re-key "
                        f"(sha256 {got[:16]}, expected {want[:16]})")
        chk.ok("ec2", "delete-volume", "--volume-id", vol)

    for i in range(chk.trials_wanted):
        chk.trial(trial, i)
    chk.figure(f"volumes changed by interrupted re-keys: {stats['lost']}/{chk.trials}")
    chk.figure(f"kills mid-re-key: {stats['mid']}/{stats['kills']}")


def grow(chk):
    soaklib.need_tools("nbdcopy")
    stats = {"points": 0, "size_ok": 0, "data_ok": 0}
    src = os.path.join(chk.work, "src.raw")

    def trial(i):
        for point, grown in POINTS:
            soaklib.random_file(src, MIB)
            want = soaklib.sha256_file(src)
            vol = chk.create_volume(MIB)
            chk.write_volume(vol, src)
            stats["points"] += 1
            code, _, err = chk.ebsim("ec2", "modify-volume", "--volume-id", vol,
                                     "--size-bytes", str(2 * MIB), "--volume-type", "gp2",
                                     env={"EBSIM_FAULT": point}, check=False)
            if code != 137:
                chk.problem(f"{point}: modify-volume exited {code}, the point was not "
                            f"reached: {err[:200]}")
                continue
            v = chk.describe_volume(vol)  # the next command settles the grow
            h = soaklib.read_header(chk.image_path(vol))
            expect = 2 * MIB if grown else MIB
            if v["SizeBytes"] == h["size"] == expect and \
                    (v["VolumeType"] == "gp2") == grown:
                stats["size_ok"] += 1
            else:
                chk.problem(f"{point} ({vol}): record {v['SizeBytes']} {v['VolumeType']}, "
                            f"header {h['size']}, expected {expect}")
            whole = chk.volume_sha256(vol)
            first = chk.volume_sha256(vol, MIB) if grown else whole
            if first != want:
                chk.problem(f"{point} ({vol}): the data changed")
            elif grown:
                tail = hashlib.sha256(open(src, "rb").read() + bytes(MIB)).hexdigest()
                if whole != tail:
                    chk.problem(f"{point} ({vol}): the grown part is not zero")
                else:
                    stats["data_ok"] += 1
            else:
                stats["data_ok"] += 1
            chk.ok("ec2", "modify-volume", "--volume-id", vol, "--size-bytes", str(4 * MIB))
            v = chk.describe_volume(vol)
            if v["SizeBytes"] != 4 * MIB or soaklib.read_header(chk.image_path(vol))["size"] != 4 * MIB:
                chk.problem(f"{point} ({vol}): a second grow gave {v['SizeBytes']}")
            if chk.volume_sha256(vol, MIB) != want:
                chk.problem(f"{point} ({vol}): the data changed after the second grow")
            chk.ok("ec2", "delete-volume", "--volume-id", vol)

    for i in range(chk.trials_wanted):
        chk.trial(trial, i)
    chk.figure(f"sizes as the header says: {stats['size_ok']}/{stats['points']}")
    chk.figure(f"data intact: {stats['data_ok']}/{stats['points']}")
    chk.figure(f"crash points: {len(POINTS)}")


def body(chk):
    if chk.variant == "rekey":
        rekey(chk)
    elif chk.variant == "grow":
        grow(chk)
    else:
        raise Failed(f"unknown variant {chk.variant!r}")


if __name__ == "__main__":
    soaklib.main("crash", body, short_trials=2, long_trials=20)
