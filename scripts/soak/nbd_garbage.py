#!/usr/bin/env python3
"""Check 5: NBD garbage (docs/NBD.md).

An encrypted volume holding known random data is exported on a unix socket and on
loopback TCP (one attachment serves both). Each kind of garbage below is sent to
each export, on many connections; after every kind the attachment process must be
alive and a fresh, well-behaved connection must negotiate and read the known data
back. At the end nbdinfo answers on both exports, nbdcopy reads the whole volume
back unchanged, and the daemon's log holds no panic. The figure is the number of
(kind, export) pairs survived.
"""

import os
import random
import socket
import struct
import threading
import time

import soaklib
from soaklib import (IHAVEOPT, REQUEST_MAGIC, Nbd, NbdError, log, OPT_GO, OPT_EXPORT_NAME,
                     OPT_LIST, OPT_STARTTLS, OPT_SET_META_CONTEXT, OPT_ABORT,
                     OPT_LIST_META_CONTEXT, CMD_READ, CMD_WRITE, CMD_FLUSH,
                     CMD_TRIM, CMD_WRITE_ZEROES, CMD_BLOCK_STATUS, CMD_CACHE)

SIZE = 8 << 20
DATA = 4 << 20  # the first 4 MiB hold random data, the rest zeros


def rnd(n):
    return os.urandom(n)


def hello(addr):
    """A connection past the greeting with fixed newstyle + no zeroes."""
    c = Nbd(addr)
    c.greeting()
    return c


def ready(addr):
    """A connection in transmission."""
    c = Nbd(addr)
    c.connect()
    return c


def quietly(fn):
    """Garbage may legitimately end in a closed connection: only the server's
    survival is judged, so client-side errors are ignored."""
    try:
        fn()
    except (OSError, NbdError, struct.error):
        pass


# Each kind: a function(addr) that misbehaves once.

def close_at_once(addr):
    s = Nbd(addr)
    s.close()


def random_before_greeting(addr):
    c = Nbd(addr)
    quietly(lambda: c.send(rnd(random.randint(1, 4096))))
    quietly(c.drain)
    c.close()


def random_client_flags(addr):
    c = Nbd(addr)
    c.greeting(flags=None)
    quietly(lambda: c.send(rnd(random.randint(4, 2048))))
    quietly(c.drain)
    c.close()


def unknown_client_flags(addr):
    c = Nbd(addr)
    c.greeting(flags=0xFFFFFFFC)
    quietly(lambda: c.option(OPT_GO, struct.pack(">IH", 0, 0)))
    quietly(c.drain)
    c.close()


def truncated_client_flags(addr):
    c = Nbd(addr)
    c.greeting(flags=None)
    quietly(lambda: c.send(b"\0\0"))
    c.close()


def bad_option_magic(addr):
    c = hello(addr)
    quietly(lambda: c.send(struct.pack(">QII", 0x1122334455667788, OPT_GO, 6) + bytes(6)))
    quietly(c.drain)
    c.close()


def option_length_huge(addr):
    c = hello(addr)
    quietly(lambda: c.send(struct.pack(">QII", IHAVEOPT, OPT_GO, 0xFFFFFFFF) + rnd(1024)))
    quietly(c.drain)
    c.close()


def option_cut_short(addr):
    c = hello(addr)
    quietly(lambda: c.send(struct.pack(">QII", IHAVEOPT, OPT_GO, 1000) + rnd(10)))
    c.close()


def truncated_option_header(addr):
    c = hello(addr)
    quietly(lambda: c.send(struct.pack(">Q", IHAVEOPT)[:7]))
    c.close()


def refused(c):
    """The next option reply must be an error (the connection may stay open)."""
    _, rtype, data = c.reply()
    if not rtype & 0x80000000:
        raise NbdError(f"a malformed option was answered {rtype:#x} {data[:100]!r}")


def go_name_past_option(addr):
    c = hello(addr)
    c.option(OPT_GO, struct.pack(">I", 0xFFFF) + b"vol")
    refused(c)
    c.close()


def go_info_count_past_option(addr):
    c = hello(addr)
    c.option(OPT_GO, struct.pack(">IH", 0, 1000) + b"\0\1")
    refused(c)
    c.close()


def unknown_options_then_go(addr):
    """Unknown options with payloads must be skipped in step: GO still works."""
    c = hello(addr)
    for _ in range(8):
        c.option(random.randint(12, 0xFFFF), rnd(random.randint(0, 300)))
        _, rtype, _ = c.reply()
        if not rtype & 0x80000000:
            raise NbdError(f"unknown option answered {rtype:#x}")
    c.go()
    c.read(0, 4096)
    c.close()


def export_name_unknown(addr):
    c = hello(addr)
    quietly(lambda: c.option(OPT_EXPORT_NAME, b"no-such-export"))
    quietly(c.drain)
    c.close()


def meta_context_garbage(addr):
    c = hello(addr)
    for opt in (OPT_SET_META_CONTEXT, OPT_LIST_META_CONTEXT):
        c.option(opt, struct.pack(">I", 0xFFFFFF) + b"x" + struct.pack(">I", 7) + rnd(9))
        refused(c)
    c.close()


def starttls_and_list_with_payload(addr):
    c = hello(addr)
    quietly(lambda: c.option(OPT_STARTTLS, b""))
    quietly(c.reply)
    quietly(lambda: c.option(OPT_LIST, rnd(33)))
    quietly(c.reply)
    quietly(lambda: c.option(OPT_ABORT, rnd(5)))
    quietly(c.drain)
    c.close()


def request_bad_magic(addr):
    c = ready(addr)
    quietly(lambda: c.send(struct.pack(">IHHQQI", 0xDEADBEEF, 0, CMD_READ, 1, 0, 4096)))
    quietly(c.drain)
    c.close()


def unknown_command_and_bad_flags(addr):
    """Refused requests get error replies; the connection stays usable."""
    c = ready(addr)
    for cmd, flags, off, n in [(0x7777, 0, 0, 512), (CMD_READ, 0xFFFF, 0, 512),
                               (CMD_FLUSH, 0, 5, 9), (CMD_BLOCK_STATUS, 0, 0, 4096),
                               (CMD_CACHE, 0, SIZE, 4096)]:
        c.request(cmd, off, n, flags)
        err, _, _ = c.simple_reply(n if cmd == CMD_READ else 0)
        if err == 0 and cmd in (0x7777, CMD_FLUSH):
            raise NbdError(f"command {cmd:#x} flags {flags:#x} was accepted")
    c.read(0, 4096)
    c.close()


def read_oversized_and_past_end(addr):
    c = ready(addr)
    for off, n in [(0, 0xFFFFFFFF), (SIZE - 512, 4096), (2**63, 512), (2**64 - 1, 1)]:
        c.request(CMD_READ, off, n)
        err, _, _ = c.simple_reply(0)
        if err == 0:
            raise NbdError(f"read of {n} at {off} succeeded")
    c.read(0, 4096)
    c.close()


def write_zeroes_and_trim_past_end(addr):
    c = ready(addr)
    for cmd in (CMD_WRITE_ZEROES, CMD_TRIM):
        c.request(cmd, SIZE, 0xFFFFFFFF)
        err, _, _ = c.simple_reply()
        if err == 0:
            raise NbdError(f"command {cmd} past the end succeeded")
    c.read(0, 4096)
    c.close()


def write_oversized_payload(addr):
    c = ready(addr)
    quietly(lambda: c.send(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_WRITE, 1, DATA,
                                       0x7FFFFFFF) + rnd(65536)))
    quietly(c.drain)
    c.close()


def write_payload_cut_short(addr):
    c = ready(addr)
    quietly(lambda: c.send(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_WRITE, 1, DATA,
                                       65536) + rnd(1000)))
    c.close()


def requests_after_disc(addr):
    c = ready(addr)
    c.disc()
    for i in range(16):
        quietly(lambda: c.request(CMD_READ, 0, 4096))
    quietly(lambda: c.send(rnd(4096)))
    quietly(c.drain)
    c.close()


def random_in_transmission(addr):
    c = ready(addr)
    quietly(lambda: c.send(rnd(random.randint(1, 65536))))
    quietly(c.drain)
    c.close()


def half_close_mid_request(addr):
    c = ready(addr)
    quietly(lambda: c.send(struct.pack(">IHHQ", REQUEST_MAGIC, 0, CMD_READ, 7)))
    quietly(lambda: c.s.shutdown(socket.SHUT_WR))
    quietly(c.drain)
    c.close()


def pipelined_reads_never_read(addr):
    """Thousands of 256 KiB reads whose replies the client never reads."""
    c = ready(addr)
    c.s.settimeout(2)
    reqs = b"".join(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_READ, i, 0, 256 << 10)
                    for i in range(2000))
    quietly(lambda: c.send(reqs))
    c.close()


def many_random_connections(addr):
    """64 connections at once, each sending random bytes at some stage."""
    def one():
        quietly(lambda: random.choice([random_before_greeting, random_client_flags,
                                       random_in_transmission, option_cut_short])(addr))
    ts = [threading.Thread(target=one) for _ in range(64)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)


def idle_connections(addr):
    """Connections that stop at each stage and wait, then go."""
    cs = []
    for i in range(24):
        quietly(lambda: cs.append([Nbd, hello, ready][i % 3](addr)))
    time.sleep(1)
    for c in cs:
        if isinstance(c, Nbd):
            c.close()


def export_name_without_fixed(addr):
    """Old-style client (no fixed newstyle) asking for the export by name: served."""
    c = Nbd(addr)
    c.greeting(flags=0)
    c.option(OPT_EXPORT_NAME, b"")
    size, flags = struct.unpack(">QH", c.recv_exact(10))
    c.recv_exact(124)
    if size != SIZE:
        raise NbdError(f"EXPORT_NAME size {size}")
    c.read(0, 4096)
    c.close()


KINDS = [close_at_once, random_before_greeting, random_client_flags, unknown_client_flags,
         truncated_client_flags, bad_option_magic, option_length_huge, option_cut_short,
         truncated_option_header, go_name_past_option, go_info_count_past_option,
         unknown_options_then_go, export_name_unknown, meta_context_garbage,
         starttls_and_list_with_payload, request_bad_magic, unknown_command_and_bad_flags,
         read_oversized_and_past_end, write_zeroes_and_trim_past_end,
         write_oversized_payload, write_payload_cut_short, requests_after_disc,
         random_in_transmission, half_close_mid_request, pipelined_reads_never_read,
         many_random_connections, idle_connections, export_name_without_fixed]


def body(chk):
    soaklib.need_tools("nbdinfo", "nbdcopy")
    src = os.path.join(chk.work, "src.raw")
    soaklib.random_file(src, SIZE, holes=[(DATA, SIZE - DATA)])
    want = soaklib.sha256_file(src)
    with open(src, "rb") as f:
        probe = f.read(1 << 20)
    # One attachment per export: a unix socket, and loopback TCP on a port the
    # daemon picks.
    # And loopback TCP behind TLS (a PSK): the garbage meets the FORCEDTLS
    # negotiation and the handshake; health is checked with nbdinfo over TLS.
    psk = os.path.join(chk.work, "keys.psk")
    with open(os.open(psk, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write("alice:" + os.urandom(32).hex() + "\n")
    exports = []
    for name, spec, extra in (("unix", "unix:" + os.path.join(chk.work, "g.sock"), []),
                              ("tcp", "tcp:127.0.0.1:0", ["--nbd-no-tls"]),
                              ("tls", "tcp:127.0.0.1:0", ["--tls-psk", psk])):
        vol = chk.create_volume(SIZE)
        chk.write_volume(vol, src)
        a = chk.json("ec2", "attach-volume", "--volume-id", vol, "--nbd", spec, *extra)
        uri = a["NbdUri"]
        if name == "unix":
            addr = spec[len("unix:"):]
        else:
            hostport = uri.split("://", 1)[1].split("/")[0]
            addr = (hostport.rsplit(":", 1)[0], int(hostport.rsplit(":", 1)[1]))
        if name == "tls":
            # libnbd takes the PSK identity from the URI's user part.
            uri = uri.replace("nbds://", "nbds://alice@", 1)
            uri += ("&" if "?" in uri else "?") + "tls-psk-file=" + psk
        exports.append((name, addr, vol, int(a["ProcessId"]), uri))
    log(f"exports: {exports}")
    survived = [0, 0]

    tls_uri = next(e[4] for e in exports if e[0] == "tls")

    def healthy(addr, pid, name="unix"):
        if not soaklib.alive(pid):
            raise soaklib.Failed(f"the attachment process {pid} died")
        if name == "tls":
            out, _, _ = soaklib.run(["nbdinfo", "--size", tls_uri])
            if int(out.strip()) != SIZE:
                raise soaklib.Failed(f"size over TLS {out.strip()}")
            return
        c = ready(addr)
        try:
            if c.size != SIZE:
                raise soaklib.Failed(f"size {c.size}")
            off = random.randrange(0, (1 << 20) - 65536, 4096)
            if c.read(off, 65536) != probe[off:off + 65536]:
                raise soaklib.Failed("a fresh connection reads other data")
        finally:
            c.close()

    def one(kind, name, addr, pid):
        survived[1] += 1
        t0 = time.monotonic()
        try:
            kind(addr)
        except (OSError, NbdError) as e:
            # Kinds that expect answers raise when the server answers wrongly; a
            # TLS export answers everything before STARTTLS with TLS_REQD, which
            # such kinds do not expect: there only survival counts.
            if name != "tls":
                chk.problem(f"{kind.__name__} on {name}: {e}")
        try:
            healthy(addr, pid, name)
            survived[0] += 1
            log(f"{kind.__name__} on {name}: survived ({time.monotonic() - t0:.2f}s)")
        except (OSError, NbdError, soaklib.Failed) as e:
            chk.problem(f"after {kind.__name__} on {name}: the server is not healthy: {e}")

    rss0 = [soaklib.rss_kib(e[3]) or 0 for e in exports]
    for _ in range(chk.trials_wanted):
        for kind in KINDS:
            for name, addr, _, pid, _ in exports:
                if soaklib.alive(pid):
                    chk.trial(one, kind, name, addr, pid)
    rss1 = [soaklib.rss_kib(e[3]) or 0 for e in exports]
    for name, addr, vol, pid, uri in exports:
        if not soaklib.alive(pid):
            chk.problem(f"the {name} export's attachment process died")
            continue
        out, _, _ = soaklib.run(["nbdinfo", "--size", uri])
        if int(out.strip()) != SIZE:
            chk.problem(f"nbdinfo on {name}: size {out.strip()}")
        back = os.path.join(chk.work, "back.raw")
        soaklib.run(["nbdcopy", uri, back])
        if soaklib.sha256_file(back) != want:
            chk.problem(f"the {name} export's data changed")
        os.unlink(back)
        chk.detach(vol, force=True)
        logf = os.path.join(chk.home, "regions", "us-east-1", "attachments", f"{vol}.log")
        if os.path.exists(logf) and "panicked" in open(logf, errors="replace").read():
            chk.problem(f"the {name} attachment's log has a panic ({logf})")
    chk.figure(f"kinds of garbage survived: {survived[0]}/{survived[1]} "
               f"({len(KINDS)} kinds x {'+'.join(e[0] for e in exports)})")
    chk.figure("data intact: " + ("yes" if not chk.problems else "see below"))
    chk.figure("daemon RSS " + ", ".join(f"{a // 1024}->{b // 1024} MiB"
                                         for a, b in zip(rss0, rss1)))


if __name__ == "__main__":
    soaklib.main("nbd-garbage", body, short_trials=1, long_trials=10)
