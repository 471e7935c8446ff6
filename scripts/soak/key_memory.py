#!/usr/bin/env python3
"""Check 7: copies of data keys in the memory of ebsim's processes.

The scanner is scripts/soak/memscan.py (`memscan.py PID HEXKEY`: exit 0 when every
copy of the key, or of either half, is in locked memory; 1 when one is not; 2 when
the memory cannot be read). It is written on its own branch; until it is here this
check reports SKIPPED, never a pass. SOAK_MEMSCAN=PATH runs another copy of it.

The keys are found independently of the processes scanned: this script parses the
image header (docs/FORMAT.md §2) and asks KMS to Decrypt the wrapped data key with
the context aws:ebs:id = the volume id. Scanned:
- the attachment process serving FUSE and NBD, after writes and reads through both;
- `ebsim ec2 rekey-volume` stopped (SIGSTOP) half-way, for the old and the new key.
"""

import os
import random
import signal
import subprocess
import time

import soaklib
from soaklib import Failed, log, MIB

HERE = os.path.dirname(os.path.abspath(__file__))


def scanner():
    path = os.environ.get("SOAK_MEMSCAN") or os.path.join(HERE, "memscan.py")
    return path if os.path.isfile(path) else None


def body(chk):
    scan = scanner()
    if scan is None:
        raise soaklib.Skip("scanner not present (scripts/soak/memscan.py)")
    soaklib.need_root()  # the processes are not dumpable: reading them takes root
    soaklib.need_tools("nbdcopy")
    stats = {"scans": 0, "unlocked": 0}

    def run_scan(pid, key, what):
        p = subprocess.run(["python3", scan, str(pid), key.hex()], capture_output=True,
                           timeout=600)
        out = p.stdout.decode(errors="replace")
        log(f"memscan {what} (pid {pid}) -> {p.returncode}: {out.strip()[-400:]}")
        stats["scans"] += 1
        if p.returncode == 1:
            n = sum(1 for l in out.splitlines() if l.startswith("UNLOCKED"))
            stats["unlocked"] += max(n, 1)
            chk.problem(f"{what}: key copies outside locked memory:\n"
                        + "\n".join(l for l in out.splitlines() if l.startswith("UNLOCKED"))[:600])
        elif p.returncode != 0:
            raise Failed(f"memscan could not scan {what} (exit {p.returncode}): "
                         f"{p.stderr.decode(errors='replace')[:300]}")

    k1, k2 = chk.create_key("soak memory a"), chk.create_key("soak memory b")

    def attachment(i):
        vol = chk.create_volume(64 * MIB, k1)
        key = chk.volume_keys(vol)[0]
        src = os.path.join(chk.work, "src.raw")
        soaklib.random_file(src, 16 * MIB)
        sock = os.path.join(chk.work, "m.sock")
        args = ["ec2", "attach-volume", "--volume-id", vol, "--nbd", f"unix:{sock}"]
        fuse = os.path.exists("/dev/fuse")
        if fuse:
            os.makedirs(os.path.join(chk.work, "fuse"), exist_ok=True)
            args += ["--fuse", os.path.join(chk.work, "fuse")]
        a = chk.json(*args)
        pid = int(a["ProcessId"])
        uri = f"nbd+unix:///?socket={sock}"
        soaklib.run(["nbdcopy", "--flush", src, uri])
        if fuse:
            with open(a["FuseFile"], "r+b") as f:
                f.seek(32 * MIB)
                f.write(os.urandom(4 * MIB))
                f.flush()
                os.fsync(f.fileno())
                f.seek(0)
                while f.read(4 * MIB):
                    pass
        run_scan(pid, key, f"the attachment process of {vol} (NBD{' + FUSE' if fuse else ''})")
        chk.detach(vol)
        chk.ok("ec2", "delete-volume", "--volume-id", vol)

    def rekey(i):
        vol = chk.create_volume(32 * MIB, k1)
        src = os.path.join(chk.work, "src.raw")
        soaklib.random_file(src, 32 * MIB)
        chk.write_volume(vol, src)
        old = chk.volume_keys(vol)[0]
        for attempt in range(6):
            p = chk.spawn("ec2", "rekey-volume", "--volume-id", vol, "--kms-key-id", k2,
                          env={"EBSIM_REKEY_CHUNK_UNITS": "64"})
            time.sleep(random.uniform(0.1, 0.4) / (attempt + 1))
            p.send_signal(signal.SIGSTOP)
            h = soaklib.read_header(chk.image_path(vol))
            if p.poll() is None and h["incompat"] & 0x2:
                try:
                    new = chk.data_key(h["new_wrapped_key"], vol)
                    run_scan(p.pid, old, f"rekey-volume of {vol} (old key)")
                    run_scan(p.pid, new, f"rekey-volume of {vol} (new key)")
                finally:
                    p.send_signal(signal.SIGCONT)
                    p.wait(timeout=300)
                break
            p.send_signal(signal.SIGCONT)
            p.wait(timeout=300)
            log(f"attempt {attempt}: the re-key was not caught half-way")
        else:
            raise Failed("no re-key could be stopped half-way")
        chk.ok("ec2", "rekey-volume", "--volume-id", vol, "--kms-key-id", k2)
        chk.ok("ec2", "delete-volume", "--volume-id", vol)

    for i in range(chk.trials_wanted):
        chk.trial(attachment, i)
        chk.trial(rekey, i)
    chk.figure(f"key copies outside locked memory: {stats['unlocked']} "
               f"({stats['scans']} scans: attachment process after FUSE/NBD I/O, "
               "rekey-volume half-way for old and new key)")


if __name__ == "__main__":
    soaklib.main("key-memory", body, short_trials=1, long_trials=5)
