"""Shared helpers of the soak checks (scripts/soak/README.md).

Every check is a small program: `python3 CHECK.py --work DIR --trials N`, run by
run.sh in a fresh temporary directory DIR. The data root is DIR/home (EBSIM_HOME of
every ebsim this module starts), scratch files go to DIR/work. The check prints one
line of figures on stdout and exits 0 (passed), 1 (failed) or 77 (skipped); what it
did goes to stderr, which run.sh keeps as the check's log.

Whatever a check started is found again from DIR alone, so cleanup_root() works
after a failure, a timeout or a Ctrl-C, from the check or from run.sh's trap:
processes whose command line or EBSIM_HOME names DIR, filesystems mounted under DIR,
loop devices backed by a file under DIR.
"""

import base64
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import traceback

EBSIM = os.environ.get("EBSIM_BIN", "ebsim")
MIB = 1 << 20
REGION = "us-east-1"


class Skip(Exception):
    """The check cannot run here (not root, no /dev/fuse, a tool missing)."""


class Failed(Exception):
    """Something the check needs to go on went wrong (counted as a failure)."""


class Interrupted(BaseException):
    """SIGTERM, SIGINT or SIGHUP: stop, clean up, report."""


def log(*parts):
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# The check: its directories, counters and result line


class Check:
    def __init__(self, name, work, trials, mode):
        self.name = name
        self.root = os.path.realpath(work)
        self.home = os.path.join(self.root, "home")
        self.work = os.path.join(self.root, "work")
        os.makedirs(self.home, mode=0o700, exist_ok=True)
        os.makedirs(self.work, mode=0o700, exist_ok=True)
        self.trials_wanted = trials
        self.mode = mode
        self.trials = 0
        self.failures = 0
        self.problems = []
        self.figures = []
        self._failed_trial = False

    # -- bookkeeping -------------------------------------------------------

    def problem(self, msg):
        """Records what went wrong; the current trial (if any) counts as failed."""
        log("PROBLEM:", msg)
        self.problems.append(msg)
        self._failed_trial = True

    def trial(self, fn, *args):
        """Runs one trial: counts it, and counts it failed if it raised or
        recorded a problem. Returns fn's value (None when it raised)."""
        self.trials += 1
        self._failed_trial = False
        out = None
        try:
            out = fn(*args)
        except Exception as e:  # anything a trial raises fails that trial only
            log(traceback.format_exc())
            self.problem(f"trial {self.trials - 1}: {e}")
        if self._failed_trial:
            self.failures += 1
        return out

    def figure(self, text):
        self.figures.append(text)

    # -- running ebsim -----------------------------------------------------

    def env(self, extra=None):
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("EBSIM_") and k != "EBSIM_BIN":
                del env[k]
        env["EBSIM_HOME"] = self.home
        if extra:
            env.update(extra)
        return env

    def ebsim(self, *args, env=None, check=True, timeout=180, input=None):
        """Runs ebsim; returns (exit code, stdout, stderr). With check, a non-zero
        exit raises Failed naming the command."""
        cmd = [EBSIM, *args]
        t0 = time.monotonic()
        p = subprocess.run(
            cmd,
            env=self.env(env),
            input=input,
            capture_output=True,
            timeout=timeout,
            cwd=self.work,
        )
        out = p.stdout.decode(errors="replace").strip()
        err = p.stderr.decode(errors="replace").strip()
        code = p.returncode if p.returncode >= 0 else 128 - p.returncode
        log(f"ebsim {' '.join(args)} -> {code} ({time.monotonic() - t0:.2f}s)"
            + (f": {err[:300]}" if err and code else ""))
        if check and code != 0:
            raise Failed(f"`ebsim {' '.join(args)}` exited {code}: {err[:500]}")
        return code, out, err

    def ok(self, *args, **kw):
        return self.ebsim(*args, **kw)[1]

    def json(self, *args, **kw):
        return json.loads(self.ok(*args, **kw))

    def spawn(self, *args, env=None, **kw):
        """Starts ebsim without waiting (stdout and stderr to files in work/)."""
        tag = f"{int(time.monotonic() * 1e6)}"
        out = open(os.path.join(self.work, f".spawn-{tag}.out"), "wb")
        err = open(os.path.join(self.work, f".spawn-{tag}.err"), "wb")
        log(f"spawn ebsim {' '.join(args)}")
        p = subprocess.Popen([EBSIM, *args], env=self.env(env), stdout=out, stderr=err,
                             cwd=self.work, **kw)
        p.out_path, p.err_path = out.name, err.name
        out.close()
        err.close()
        return p

    # -- EC2 and KMS shortcuts ---------------------------------------------

    def create_key(self, description="soak"):
        return self.ok("kms", "create-key", "--description", description,
                       "--query", "KeyMetadata.Arn", "--output", "text")

    def create_volume(self, size_bytes, key=None):
        args = ["ec2", "create-volume", "--size-bytes", str(size_bytes), "--encrypted"]
        if key:
            args += ["--kms-key-id", key]
        return self.ok(*args, "--query", "VolumeId", "--output", "text")

    def describe_volume(self, vol):
        return self.json("ec2", "describe-volumes", "--volume-ids", vol)["Volumes"][0]

    def image_path(self, vol, region=REGION):
        return os.path.join(self.home, "regions", region, "volumes", vol + ".img")

    def attach_nbd(self, vol, sock=None):
        """Attaches vol with an NBD export on a unix socket; returns (pid, uri, sock)."""
        sock = sock or os.path.join(self.work, f"{vol}.sock")
        a = self.json("ec2", "attach-volume", "--volume-id", vol, "--nbd", f"unix:{sock}")
        return int(a["ProcessId"]), f"nbd+unix:///?socket={sock}", sock

    def attach_fuse(self, vol, directory=None):
        """Attaches vol through FUSE; returns (pid, path of the FUSE file)."""
        directory = directory or os.path.join(self.work, "fuse")
        os.makedirs(directory, exist_ok=True)
        a = self.json("ec2", "attach-volume", "--volume-id", vol, "--fuse", directory)
        return int(a["ProcessId"]), a["FuseFile"]

    def detach(self, vol, force=False):
        self.ok("ec2", "detach-volume", "--volume-id", vol, *(["--force"] if force else []))

    def write_volume(self, vol, path):
        """Copies the file at path onto the volume (offset 0) over NBD."""
        _, uri, _ = self.attach_nbd(vol)
        try:
            run(["nbdcopy", "--flush", path, uri])
        finally:
            self.detach(vol)

    def volume_sha256(self, vol, length=None):
        """SHA-256 of the volume's content (its first `length` bytes), read over NBD
        with nbdcopy into a scratch file."""
        _, uri, _ = self.attach_nbd(vol)
        out = os.path.join(self.work, f".{vol}.read")
        try:
            run(["nbdcopy", uri, out])
            return sha256_file(out, length)
        finally:
            if os.path.exists(out):
                os.unlink(out)
            self.detach(vol)

    def data_key(self, wrapped, vol, region=REGION):
        """KMS Decrypt of a data key wrapped for vol (context aws:ebs:id = vol; a
        snapshot id for a snapshot's own wrapped key)."""
        blob = os.path.join(self.work, f".{vol}.blob")
        with open(blob, "wb") as f:
            f.write(wrapped)
        try:
            out = self.ok("--region", region, "kms", "decrypt",
                          "--ciphertext-blob", f"fileb://{blob}",
                          "--encryption-context", f"aws:ebs:id={vol}",
                          "--output", "text", "--query", "Plaintext")
        finally:
            os.unlink(blob)
        return base64.b64decode(out)

    def volume_keys(self, vol, region=REGION):
        """The volume's data key(s), from its image header (parsed here, not by
        ebsim) and KMS Decrypt: [key] or, while a re-key runs, [old key, new key]."""
        h = read_header(self.image_path(vol, region))
        keys = [self.data_key(h["wrapped_key"], vol, region)]
        if h.get("new_wrapped_key"):
            keys.append(self.data_key(h["new_wrapped_key"], vol, region))
        return keys


# ---------------------------------------------------------------------------
# Small utilities


def run(cmd, timeout=300, check=True, cwd=None, env=None):
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, timeout=timeout, cwd=cwd, env=env)
    out = p.stdout.decode(errors="replace")
    err = p.stderr.decode(errors="replace")
    log(f"{' '.join(cmd)[:200]} -> {p.returncode} ({time.monotonic() - t0:.2f}s)"
        + (f": {err.strip()[:300]}" if p.returncode else ""))
    if check and p.returncode != 0:
        raise Failed(f"`{' '.join(cmd)[:200]}` exited {p.returncode}: {err.strip()[:500]}")
    return out, err, p.returncode


def sha256_file(path, length=None):
    h = hashlib.sha256()
    left = length
    with open(path, "rb") as f:
        while left is None or left > 0:
            n = 4 * MIB if left is None else min(4 * MIB, left)
            b = f.read(n)
            if not b:
                break
            h.update(b)
            if left is not None:
                left -= len(b)
    return h.hexdigest()


def random_file(path, size, holes=()):
    """Writes size random bytes to path, with zeros over each (offset, length) hole."""
    with open(path, "wb") as f:
        f.write(os.urandom(size))
        for off, n in holes:
            f.seek(off)
            f.write(bytes(n))


def need_tools(*tools):
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise Skip(f"missing tool{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")


def need_root():
    if os.geteuid() != 0:
        raise Skip("needs root")


def need_fuse():
    if not os.path.exists("/dev/fuse"):
        raise Skip("no /dev/fuse")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        raise Skip("/dev/fuse is not usable by this user")


def alive(pid):
    """True while any thread of pid runs. A process killed by a signal shows as a
    zombie as soon as its main thread is gone, but its files (and the locks on
    them) are released only when its last thread has exited."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    return True
        except OSError:
            continue
    return False


def wait_gone(pid, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def daemon_pids(vol):
    """The attachment processes of vol (`ebsim ec2 attach-volume … --foreground`)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            c = cmdline(int(d))
            if "attach-volume" in c and "--foreground" in c and vol in c:
                out.append(int(d))
    return out


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


# ---------------------------------------------------------------------------
# The image header (docs/FORMAT.md §2, §5, §9), parsed here independently


def parse_header(slot):
    """Parses one 4096-byte header copy; returns a dict or raises ValueError.
    Checks the structure only: the MAC needs the data key."""
    if slot[:8] != b"EBSIMVOL":
        raise ValueError("bad magic")
    version, header_len = struct.unpack_from("<HH", slot, 8)
    if version != 1 or not 72 + 12 + 32 <= header_len <= 4096:
        raise ValueError(f"version {version}, header_len {header_len}")
    seq, incompat, compat, size, data_offset = struct.unpack_from("<QQQQQ", slot, 16)
    data_unit, cipher, mac = struct.unpack_from("<IBB", slot, 56)
    end = header_len - 32
    pos = 72
    fields = []
    names = ["volume_id", "region", "kms_key_arn", "encryption_context",
             "source_snapshot_id", "wrapped_key"]
    if incompat & 0x2:
        names += ["new_kms_key_arn", "new_wrapped_key"]
    for _ in names:
        if pos + 2 > end:
            raise ValueError("field length past the MAC")
        (n,) = struct.unpack_from("<H", slot, pos)
        pos += 2
        if pos + n > end:
            raise ValueError("field past the MAC")
        fields.append(bytes(slot[pos:pos + n]))
        pos += n
    h = dict(zip(names, fields))
    if incompat & 0x2:
        if pos + 8 > end:
            raise ValueError("boundary past the MAC")
        (h["boundary"],) = struct.unpack_from("<Q", slot, pos)
        pos += 8
    if pos != end:
        raise ValueError("bytes between the last field and the MAC")
    for k in ("volume_id", "region", "kms_key_arn", "encryption_context",
              "source_snapshot_id", "new_kms_key_arn"):
        if k in h:
            h[k] = h[k].decode()
    h.update(sequence=seq, incompat=incompat, compat=compat, size=size,
             data_offset=data_offset, data_unit=data_unit, cipher=cipher, mac=mac)
    return h


def read_header(path):
    """The structurally valid header copy with the higher sequence (A on a tie)."""
    with open(path, "rb") as f:
        raw = f.read(8192)
    best = None
    for slot in (raw[:4096], raw[4096:8192]):
        try:
            h = parse_header(slot)
        except (ValueError, struct.error, UnicodeDecodeError):
            continue
        if best is None or h["sequence"] > best["sequence"]:
            best = h
    if best is None:
        raise Failed(f"{path}: no header copy parses")
    return best


# ---------------------------------------------------------------------------
# A minimal NBD client written from the protocol (NetworkBlockDevice doc/proto.md)

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS, OPT_INFO, OPT_GO = 1, 2, 3, 5, 6, 7
OPT_STRUCTURED_REPLY, OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT = 8, 9, 10
REP_ACK, REP_INFO = 1, 3
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM = 0, 1, 2, 3, 4
CMD_CACHE, CMD_WRITE_ZEROES, CMD_BLOCK_STATUS = 5, 6, 7


class NbdError(Exception):
    pass


class Nbd:
    """One connection. addr: a unix socket path or (host, port)."""

    def __init__(self, addr, timeout=10):
        fam = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET
        self.s = socket.socket(fam, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(addr)
        self.size = None
        self.cookie = 0

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass

    def send(self, data):
        self.s.sendall(data)

    def recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            b = self.s.recv(n - len(buf))
            if not b:
                raise NbdError(f"connection closed after {len(buf)} of {n} bytes")
            buf += b
        return bytes(buf)

    def drain(self, timeout=5):
        """Reads until the server closes; True if it did within timeout."""
        self.s.settimeout(timeout)
        try:
            while self.s.recv(65536):
                pass
            return True
        except (socket.timeout, TimeoutError):
            return False
        except OSError:
            return True

    def greeting(self, flags=0x3):
        magic, opt, hflags = struct.unpack(">QQH", self.recv_exact(18))
        if magic != NBDMAGIC or opt != IHAVEOPT:
            raise NbdError("bad greeting")
        if flags is not None:
            self.send(struct.pack(">I", flags))
        return hflags

    def option(self, opt, data=b""):
        self.send(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)

    def reply(self):
        magic, opt, rtype, n = struct.unpack(">QIII", self.recv_exact(20))
        if magic != REPLY_MAGIC:
            raise NbdError(f"bad option reply magic {magic:#x}")
        return opt, rtype, self.recv_exact(n)

    def go(self, name=b""):
        """NBD_OPT_GO; sets self.size. Returns the transmission flags."""
        self.option(OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
        flags = None
        while True:
            _, rtype, data = self.reply()
            if rtype == REP_ACK:
                break
            if rtype == REP_INFO and len(data) >= 12 and struct.unpack(">H", data[:2])[0] == 0:
                self.size, flags = struct.unpack(">QH", data[2:12])
            elif rtype & 0x80000000:
                raise NbdError(f"GO refused: {rtype:#x} {data[:200]!r}")
        return flags

    def connect(self):
        self.greeting()
        return self.go()

    def request(self, cmd, offset=0, length=0, flags=0, data=b""):
        self.cookie += 1
        self.send(struct.pack(">IHHQQI", REQUEST_MAGIC, flags, cmd, self.cookie, offset,
                              length) + data)
        return self.cookie

    def simple_reply(self, length=0):
        magic, err, cookie = struct.unpack(">IIQ", self.recv_exact(16))
        if magic != SIMPLE_REPLY_MAGIC:
            raise NbdError(f"bad reply magic {magic:#x}")
        data = self.recv_exact(length) if err == 0 and length else b""
        return err, cookie, data

    def read(self, offset, length):
        self.request(CMD_READ, offset, length)
        err, _, data = self.simple_reply(length)
        if err:
            raise NbdError(f"read error {err}")
        return data

    def write(self, offset, data, flags=0):
        self.request(CMD_WRITE, offset, len(data), flags, data)
        err, _, _ = self.simple_reply()
        if err:
            raise NbdError(f"write error {err}")

    def flush(self):
        self.request(CMD_FLUSH)
        err, _, _ = self.simple_reply()
        if err:
            raise NbdError(f"flush error {err}")

    def disc(self):
        self.request(CMD_DISC)


# ---------------------------------------------------------------------------
# Cleanup: everything started under a check's directory


def _environ_home(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            for kv in f.read().split(b"\0"):
                if kv.startswith(b"EBSIM_HOME="):
                    return kv[len(b"EBSIM_HOME="):].decode(errors="replace")
    except OSError:
        pass
    return None


def _ancestors():
    out, pid = set(), os.getpid()
    while pid > 1:
        out.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


def processes_under(root):
    """Processes (not this one or its ancestors) whose command line or EBSIM_HOME
    names a path under root."""
    mine = _ancestors()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in mine:
            continue
        pid = int(d)
        home = _environ_home(pid) or ""
        if home == root or home.startswith(root + "/") or any(root in a for a in cmdline(pid)):
            out.append(pid)
    return out


def mounts_under(root):
    """Mount points under root, deepest first."""
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split()[4].replace("\\040", " ")
                if mp == root or mp.startswith(root + "/"):
                    out.append(mp)
    except OSError:
        pass
    return sorted(set(out), key=len, reverse=True)


def loops_under(root):
    out = []
    base = "/sys/block"
    for d in os.listdir(base) if os.path.isdir(base) else []:
        if not d.startswith("loop"):
            continue
        try:
            with open(f"{base}/{d}/loop/backing_file") as f:
                backing = f.read().strip()
        except OSError:
            continue
        if backing.startswith(root + "/"):
            out.append("/dev/" + d)
    return out


def _quiet(cmd):
    try:
        subprocess.run(cmd, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        pass


def cleanup_root(root, remove=False):
    """Stops and releases everything started under root; returns what it found
    (so a check can tell whether it left something behind)."""
    root = os.path.realpath(root)
    found = []
    # Filesystems first (ebsim mount's ext4 sits on a loop device on a FUSE file),
    # then loop devices, then the processes (attachment daemons end their FUSE
    # mounts), then whatever FUSE mount a killed daemon left.
    for mp in mounts_under(root):
        found.append(f"mount {mp}")
        _quiet(["umount", "-l", mp])
    for dev in loops_under(root):
        found.append(f"loop {dev}")
        _quiet(["losetup", "-d", dev])
    pids = processes_under(root)
    for pid in pids:
        found.append(f"process {pid} ({' '.join(cmdline(pid))[:120]})")
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    end = time.monotonic() + 5
    while pids and time.monotonic() < end:
        pids = [p for p in pids if alive(p)]
        time.sleep(0.05)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    for pid in pids:
        wait_gone(pid, 5)
    for mp in mounts_under(root):
        found.append(f"mount {mp}")
        _quiet(["umount", "-l", mp])
    for dev in loops_under(root):
        found.append(f"loop {dev}")
        _quiet(["losetup", "-d", dev])
    if remove and os.path.isdir(root) and not mounts_under(root):
        _quiet(["rm", "-rf", "--one-file-system", root])
    return found


# ---------------------------------------------------------------------------
# Entry point of every check


def _on_signal(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


def main(name, body, short_trials, long_trials):
    """Parses --work/--trials/--long, runs body(check), prints the result line."""
    import argparse

    ap = argparse.ArgumentParser(prog=name)
    ap.add_argument("--work", required=True)
    ap.add_argument("--trials", type=int)
    ap.add_argument("--long", action="store_true")
    ap.add_argument("--variant", help="for checks with variants (kill9: fuse, nbd, mount)")
    a = ap.parse_args()
    if a.variant:
        name = f"{name}-{a.variant}"
    trials = a.trials or (long_trials if a.long else short_trials)
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, _on_signal)
    random.seed()
    chk = Check(name, a.work, trials, "long" if a.long else "short")
    chk.variant = a.variant
    status, reason = None, ""
    t0 = time.monotonic()
    try:
        body(chk)
    except Skip as e:
        status, reason = "SKIPPED", str(e)
    except Interrupted as e:
        chk.problem(f"interrupted by {e}")
    except BaseException as e:  # a crash of the check itself is a failure too
        log(traceback.format_exc())
        chk.problem(f"check crashed: {type(e).__name__}: {e}")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        left = cleanup_root(chk.root)
        if left:
            log("cleanup released:", "; ".join(left))
    if status is None and left and not chk.problems:
        # Every check detaches what it attached: anything still there was left
        # behind by ebsim (or by the check, which is as much a bug).
        chk.problem("left behind after the check: " + "; ".join(left))
    if status is None:
        if chk.problems and chk.failures == 0:
            chk.failures = 1  # a problem outside any trial
        status = "FAIL" if chk.failures else "PASS"
    secs = time.monotonic() - t0
    if status == "SKIPPED":
        line = f"{status:<7} {name:<13} {reason}"
    else:
        line = (f"{status:<7} {name:<13} trials {chk.trials}, failures {chk.failures} | "
                + "; ".join(chk.figures) + f" ({secs:.0f}s)")
    print(line, flush=True)
    for p in chk.problems[:8]:
        print(f"        - {p[:400]}", flush=True)
    if len(chk.problems) > 8:
        print(f"        - … {len(chk.problems) - 8} more in the log", flush=True)
    sys.exit({"PASS": 0, "FAIL": 1, "SKIPPED": 77}[status])
