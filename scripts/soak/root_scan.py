#!/usr/bin/env python3
"""Check 8: no plaintext and no key in the data root.

A representative workload in a fresh data root: volumes written (NBD, and FUSE and
ext4 through `ebsim mount` when they can run) with data carrying a marker unique to
this run; KMS encrypt of the marker; snapshots (full and incremental), a copy under
another key, a copy to another region, restores under the same and another key, a
re-key killed half-way then finished; generate-data-key. Then every file under the
data root (stores and their WAL, images, tracking files, snapshot blocks, audit
logs, attachment logs) is searched for:
- the marker;
- every data key (the 64-byte XTS key of each volume, past and present, from its
  image header and KMS Decrypt, as in check 7) and each 32-byte half;
- every plaintext data key generate-data-key handed out;
each raw, in hex and in base64 (at any alignment). None may appear.
"""

import base64
import os
import random
import time

import soaklib
from soaklib import log, MIB

MARKER_LEN = 4096


def b64_forms(b):
    """Base64 text that b produces wherever it sits in a longer encoded blob: for
    each of the 3 alignments, the characters that depend on b alone."""
    out = []
    for shift in range(3):
        e0 = base64.b64encode(b"\0" * shift + b + b"\0\0")
        e1 = base64.b64encode(b"\xff" * shift + b + b"\xff\xff")
        same = [i for i in range(len(e0)) if e0[i] == e1[i]]
        if same:
            out.append(e0[same[0]:same[-1] + 1])
    return out


def forms(b):
    return [b, b.hex().encode(), b.hex().upper().encode(), *b64_forms(b)]


def data_regions(f, size):
    """(offset, length) of the parts of a file that hold data (holes skipped)."""
    fd = f.fileno()
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:
            return
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, end - start
        pos = end


def scan_tree(root, needles):
    """Every (file, needle name, offset) where a needle occurs; and the number of
    files and bytes read."""
    longest = max(len(n) for _, n in needles)
    hits, files, nbytes = [], 0, 0
    for d, _, names in os.walk(root):
        for name in names:
            p = os.path.join(d, name)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            files += 1
            with open(p, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                for start, length in data_regions(f, size):
                    off = start
                    carry = b""
                    while off < start + length:
                        f.seek(off)
                        chunk = f.read(min(16 * MIB, start + length - off))
                        if not chunk:
                            break
                        nbytes += len(chunk)
                        buf = carry + chunk
                        for what, n in needles:
                            i = buf.find(n)
                            if i >= 0:
                                hits.append((os.path.relpath(p, root), what,
                                             off - len(carry) + i))
                        carry = buf[-(longest - 1):]
                        off += len(chunk)
    return hits, files, nbytes


def body(chk):
    soaklib.need_tools("nbdcopy")
    marker = f"EBSIM-SOAK-PLAINTEXT-{os.urandom(8).hex()}-".encode()
    block = (marker * (MARKER_LEN // len(marker) + 1))[:MARKER_LEN]
    keys = {}  # name -> data key

    def remember(name, vol, region="us-east-1"):
        for n, k in enumerate(chk.volume_keys(vol, region)):
            keys[f"{name} {vol}{' (new)' if n else ''}"] = k

    chk.trials = 1
    k1, k2 = chk.create_key("soak scan a"), chk.create_key("soak scan b")
    # Data with the marker at every 4 KiB unit's start and at odd offsets too.
    src = os.path.join(chk.work, "marked.raw")
    with open(src, "wb") as f:
        for i in range(8 * MIB // MARKER_LEN):
            f.write(block if i % 3 else block[17:] + block[:17])
    v1 = chk.create_volume(32 * MIB, k1)
    chk.write_volume(v1, src)
    remember("v1", v1)
    s1 = chk.ok("ec2", "create-snapshot", "--volume-id", v1, "--query", "SnapshotId",
                "--output", "text")
    # More data through FUSE (and ext4 through ebsim mount) where they can run.
    fuse = os.path.exists("/dev/fuse") and os.geteuid() == 0
    if fuse:
        pid, ff = chk.attach_fuse(v1)
        with open(ff, "r+b") as f:
            f.seek(12 * MIB + 123)
            f.write(block * 64)
            os.fsync(f.fileno())
        chk.detach(v1)
        v4 = chk.create_volume(64 * MIB, k1)
        mnt = os.path.join(chk.work, "mnt")
        os.makedirs(mnt)
        chk.ok("mount", v4, mnt, "--mkfs", "ext4")
        with open(os.path.join(mnt, "marked.txt"), "wb") as f:
            f.write(block * 256)
            os.fsync(f.fileno())
        chk.ok("unmount", mnt)
        remember("v4 (ext4)", v4)
    else:
        log("no FUSE or not root: NBD only")
    s2 = chk.ok("ec2", "create-snapshot", "--volume-id", v1, "--query", "SnapshotId",
                "--output", "text")
    c1 = chk.ok("ec2", "copy-snapshot", "--source-region", "us-east-1",
                "--source-snapshot-id", s2, "--encrypted", "--kms-key-id", k2,
                "--query", "SnapshotId", "--output", "text")
    # A customer key in the other region: the AWS managed key's policy allows only
    # EC2's use of it, so this script could not Decrypt its data keys.
    kw = chk.ok("--region", "us-west-2", "kms", "create-key", "--query", "KeyMetadata.Arn",
                "--output", "text")
    w1 = chk.ok("--region", "us-west-2", "ec2", "copy-snapshot", "--source-region",
                "us-east-1", "--source-snapshot-id", s1, "--encrypted", "--kms-key-id", kw,
                "--query", "SnapshotId", "--output", "text")
    v2 = chk.ok("ec2", "create-volume", "--snapshot-id", c1, "--query", "VolumeId",
                "--output", "text")
    remember("v2 (from the copy, its data key)", v2)
    v3 = chk.ok("ec2", "create-volume", "--snapshot-id", s2, "--encrypted", "--kms-key-id",
                k2, "--query", "VolumeId", "--output", "text")
    remember("v3 (restored under another key)", v3)
    w2 = chk.ok("--region", "us-west-2", "ec2", "create-volume", "--snapshot-id", w1,
                "--query", "VolumeId", "--output", "text")
    remember("w2 (cross-region copy's data key)", w2, "us-west-2")
    # A re-key, killed half-way (both keys in the header), then finished.
    p = chk.spawn("ec2", "rekey-volume", "--volume-id", v1, "--kms-key-id", k2,
                  env={"EBSIM_REKEY_CHUNK_UNITS": "64"})
    time.sleep(random.uniform(0.05, 0.3))
    p.kill()
    p.wait()
    remember("v1 re-key", v1)
    chk.ok("ec2", "rekey-volume", "--volume-id", v1, "--kms-key-id", k2)
    remember("v1 after re-key", v1)
    # KMS: the marker encrypted, data keys handed out.
    mfile = os.path.join(chk.work, "marker.txt")
    with open(mfile, "wb") as f:
        f.write(marker)
    chk.ok("kms", "encrypt", "--key-id", k1, "--plaintext", f"fileb://{mfile}")
    gdk = []
    for _ in range(4):
        d = chk.json("kms", "generate-data-key", "--key-id", k2, "--key-spec", "AES_256")
        gdk.append(base64.b64decode(d["Plaintext"]))
    d = chk.json("kms", "generate-data-key", "--key-id", k1, "--number-of-bytes", "64")
    gdk.append(base64.b64decode(d["Plaintext"]))
    # The content survived all of it (so the scan looks at real ciphertext).
    if chk.volume_sha256(v3, 8 * MIB) != soaklib.sha256_file(src):
        chk.problem("v3 does not hold the marked data")

    needles = [(f"marker ({form})", n) for form, n in zip(
        ["raw", "hex", "HEX"] + ["base64"] * 3, forms(marker))]
    for name, k in keys.items():
        for part, b in (("key", k), ("first half", k[:32]), ("second half", k[32:])):
            for n in forms(b):
                needles.append((f"data key {name} {part}", n))
    for i, k in enumerate(gdk):
        for n in forms(k):
            needles.append((f"generate-data-key plaintext {i}", n))
    distinct = len({n for _, n in needles})
    t0 = time.monotonic()
    hits, files, nbytes = scan_tree(chk.home, needles)
    log(f"scanned {files} files, {nbytes >> 20} MiB in {time.monotonic() - t0:.1f}s")
    for path, what, off in hits[:20]:
        chk.problem(f"{what} found in {path} at offset {off}")
    chk.figure(f"found: {len(hits)}")
    chk.figure(f"{files} files, {nbytes >> 20} MiB scanned for {distinct} needles "
               f"(marker, {len(keys)} data keys + halves, {len(gdk)} data-key plaintexts; "
               "raw/hex/base64)")


if __name__ == "__main__":
    soaklib.main("root-scan", body, short_trials=1, long_trials=1)
