#!/usr/bin/env python3
"""Check 1: kill -9 of the attachment process under fio verify (--variant fuse,
nbd or mount).

Each trial: a new encrypted volume; fio writes random blocks with crc32c verify
headers and durable acknowledgements (FUSE: O_DIRECT + O_SYNC on the FUSE file;
NBD: fio's nbd engine with a flush after every write; mount: O_DIRECT + fsync on
files of ext4 on ebsim mount's loop device, written in full beforehand so no
acknowledged write waits on a filesystem metadata commit); at a random moment the
attachment process is killed with SIGKILL. fio fails on the dead device and saves
how far it got (verify_state_save). The volume is released (the next command sees
the dead attachment; under a mount, `ebsim unmount` first), attached again, and fio
replays the workload read-only up to that point (--verify_only
--verify_state_load). Every block that fails verification is an acknowledged
write lost.
"""

import glob
import json
import os
import random
import re
import subprocess
import time

import soaklib
from soaklib import Failed, log

VOL_SIZE = 256 << 20
JOBS = 2


def fio_target(variant, target, per_job):
    """fio options naming the device, its engine and its durable acks."""
    if variant == "fuse":
        return [f"--filename={target}", "--ioengine=psync", "--direct=1", "--sync=1",
                f"--size={per_job}", f"--offset_increment={per_job}"]
    if variant == "nbd":
        return ["--ioengine=nbd", f"--uri={target}", "--iodepth=8", "--fsync=1",
                f"--size={per_job}", f"--offset_increment={per_job}"]
    return [f"--directory={target}", "--ioengine=psync", "--direct=1", "--fsync=1",
            f"--size={per_job}"]


def fio_cmd(variant, target, per_job, seed, verify_only):
    cmd = ["fio", "--name=soak", "--rw=randwrite", "--bsrange=4k-64k",
           f"--numjobs={JOBS}", f"--randseed={seed}", "--verify=crc32c",
           *fio_target(variant, target, per_job)]
    if verify_only:
        # verify_state_save=0: a verify run must not overwrite the saved state.
        cmd += ["--verify_only", "--verify_state_load=1", "--verify_state_save=0",
                "--do_verify=1", "--verify_fatal=0", "--continue_on_error=verify",
                "--output-format=json"]
    else:
        # The completion latency log lists every write fio saw acknowledged
        # (offset, size); see acked_blocks().
        cmd += ["--do_verify=0", "--verify_state_save=1", "--write_lat_log=ack",
                "--log_offset=1"]
    return cmd


def acked_blocks(tdir):
    """(offset, length) of every write acknowledged to fio before the kill.

    fio's saved state says how many writes each job issued; with an asynchronous
    engine (nbd) the writes in flight when the server died are counted too, and
    the verify replay then expects them although no one acknowledged them. The
    completion log has only the completed ones, so a verify failure is an
    acknowledged write lost only when its block is in this set."""
    out = set()
    for f in glob.glob(os.path.join(tdir, "ack_clat.*.log")):
        with open(f) as fh:
            for line in fh:
                parts = [x.strip() for x in line.split(",")]
                if len(parts) >= 5:
                    out.add((int(parts[4]), int(parts[3])))
    return out


BLOCK = re.compile(r"requested block: offset=(\d+), length=(\d+)")


def verify_failures(stderr):
    """The blocks fio's verify replay found bad, and lines it could not place."""
    blocks, other = set(), []
    for line in stderr.splitlines():
        m = BLOCK.search(line)
        if m:
            blocks.add((int(m.group(1)), int(m.group(2))))
        elif line.startswith("verify:") or "verify failed" in line:
            other.append(line)
    return blocks, other


def fio_json(text):
    return json.loads(text[text.index("{"):])


def body(chk):
    variant = chk.variant
    if variant not in ("fuse", "nbd", "mount"):
        raise Failed(f"unknown variant {variant!r}")
    soaklib.need_tools("fio")
    if variant == "nbd":
        soaklib.need_tools("nbdinfo")
        out, err, _ = soaklib.run(["fio", "--enghelp=nbd"], check=False)
        if "uri" not in out + err:
            raise soaklib.Skip("fio has no nbd engine")
    else:
        soaklib.need_fuse()
    if variant == "mount":
        soaklib.need_root()
        soaklib.need_tools("losetup", "mkfs.ext4", "mount", "umount")
    totals = {"lost": 0, "verified": 0, "mid": 0, "acked": 0, "unacked": 0, "early": 0}
    key = chk.create_key()

    def attach(vol, tdir):
        if variant == "fuse":
            pid, f = chk.attach_fuse(vol, os.path.join(tdir, "fuse"))
            return pid, f
        if variant == "nbd":
            pid, uri, _ = chk.attach_nbd(vol, os.path.join(tdir, "nbd.sock"))
            return pid, uri
        mnt = os.path.join(tdir, "mnt")
        os.makedirs(mnt, exist_ok=True)
        first = not os.path.exists(os.path.join(tdir, ".made"))
        chk.ok("mount", vol, mnt, *(["--mkfs", "ext4"] if first else []))
        open(os.path.join(tdir, ".made"), "w").close()
        pids = soaklib.daemon_pids(vol)
        if len(pids) != 1:
            raise Failed(f"found {len(pids)} attachment processes for {vol}")
        return pids[0], mnt

    def release(vol, tdir):
        """After the kill: the volume must come back to available."""
        if variant == "mount":
            st = chk.describe_volume(vol)
            if st["State"] != "error":
                chk.problem(f"{vol}: a dead attachment under a mount shows "
                            f"{st['State']!r}, not 'error'")
            chk.ok("unmount", os.path.join(tdir, "mnt"))
        st = chk.describe_volume(vol)["State"]
        if st != "available":
            raise Failed(f"{vol} is {st!r} after its attachment process died")

    def detach(vol, tdir):
        if variant == "mount":
            chk.ok("unmount", os.path.join(tdir, "mnt"))
        else:
            chk.detach(vol)

    def trial(i):
        tdir = os.path.join(chk.work, f"t{i}")
        os.makedirs(tdir)
        vol = chk.create_volume(VOL_SIZE, key)
        seed = random.randrange(1, 2**31)
        per_job = (96 << 20) if variant != "mount" else (64 << 20)
        pid, target = attach(vol, tdir)
        if variant == "mount":
            # Files written in full first: later O_DIRECT overwrites need no
            # metadata commit, so an acknowledged write is in the device.
            for j in range(JOBS):
                soaklib.run(["dd", "if=/dev/zero", f"of={target}/soak.{j}.0", "bs=1M",
                             f"count={per_job >> 20}", "conv=fsync", "status=none"])
        w = subprocess.Popen(fio_cmd(variant, target, per_job, seed, False), cwd=tdir,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        delay = random.uniform(0.3, 3.0 if variant != "mount" else 2.0)
        time.sleep(delay)
        mid = w.poll() is None
        totals["mid"] += mid
        log(f"trial {i}: kill -9 {pid} after {delay:.2f}s ({'mid-write' if mid else 'fio had finished'})")
        os.kill(pid, 9)
        if not soaklib.wait_gone(pid):
            raise Failed(f"the attachment process {pid} survived SIGKILL")
        try:
            out, _ = w.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            w.kill()
            w.communicate()
            raise Failed("fio hung on the dead device")
        log(f"fio (write) exited {w.returncode}: "
            + " | ".join(l for l in out.decode(errors="replace").splitlines()
                         if "err" in l or "issued" in l)[:600])
        states = glob.glob(os.path.join(tdir, "local-soak-*-verify.state"))
        if not states and not acked_blocks(tdir):
            # Killed before fio had connected or written: nothing was acknowledged.
            totals["early"] += 1
            release(vol, tdir)
            chk.ok("ec2", "delete-volume", "--volume-id", vol)
            return
        if len(states) != JOBS:
            raise Failed(f"fio saved {len(states)} verify states, not {JOBS}")
        release(vol, tdir)
        pid2, target = attach(vol, tdir)
        v = subprocess.run(fio_cmd(variant, target, per_job, seed, True), cwd=tdir,
                           capture_output=True, timeout=600)
        text = v.stdout.decode(errors="replace")
        try:
            jobs = fio_json(text)["jobs"]
        except (ValueError, KeyError) as e:
            raise Failed(f"fio verify output unreadable ({e}): {text[:300]} "
                         f"{v.stderr[:300]!r}")
        verified = sum(j["read"]["total_ios"] for j in jobs)
        acked = acked_blocks(tdir)
        bad, unplaced = verify_failures(v.stderr.decode(errors="replace"))
        lost = len(bad & acked) + len(unplaced)
        unacked = len(bad - acked)
        totals["verified"] += verified
        totals["acked"] += len(acked)
        totals["lost"] += lost
        totals["unacked"] += unacked
        log(f"trial {i}: {len(acked)} writes acknowledged, {verified} replayed, "
            f"{lost} acknowledged lost, {unacked} unacknowledged (in flight) failed")
        if lost:
            chk.problem(f"trial {i} ({vol}, fio seed {seed}, killed after {delay:.2f}s): "
                        f"{lost} acknowledged writes lost of {len(acked)}; first: "
                        f"{sorted(bad & acked)[:3]} {unplaced[:2]}")
        elif not acked and mid:
            chk.problem(f"trial {i}: no acknowledged write to verify (killed at {delay:.2f}s)")
        detach(vol, tdir)
        chk.ok("ec2", "delete-volume", "--volume-id", vol)
        subprocess.run(["rm", "-rf", "--one-file-system", tdir])

    for i in range(chk.trials_wanted):
        chk.trial(trial, i)
    chk.figure(f"acked writes lost: {totals['lost']} (of {totals['acked']} acked)")
    chk.figure(f"in-flight writes replayed and bad: {totals['unacked']} (not acked)")
    chk.figure(f"kills mid-write: {totals['mid']}/{chk.trials}"
               + (f" ({totals['early']} before fio's first write)" if totals["early"] else ""))


if __name__ == "__main__":
    soaklib.main("kill9", body, short_trials=2, long_trials=20)
