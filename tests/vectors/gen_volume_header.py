#!/usr/bin/env python3
"""Writes volume_header_v1.hex: a header built from docs/FORMAT.md §2 alone.

This is an independent implementation of the spec (struct packing, HKDF-SHA-256
and HMAC-SHA-256 from Python's standard library); tests/volume_format.rs checks
that ebsim encodes the same inputs to the same bytes and accepts these bytes.
Run: python3 tests/vectors/gen_volume_header.py > tests/vectors/volume_header_v1.hex
"""
import hashlib
import hmac
import struct

DATA_KEY = bytes(range(64))            # the fixed test data key
VOLUME_ID = "vol-0123456789abcdef0"
REGION = "us-east-1"
ARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
CONTEXT = '{"aws:ebs:id":"vol-0123456789abcdef0"}'
SNAPSHOT = ""
WRAPPED = bytes((i * 7 + 3) % 256 for i in range(170))
SEQUENCE = 1
SIZE = 8 << 30
CREATED_MS = 1_767_225_600_000     # 2026-01-01T00:00:00Z


def hkdf_sha256(ikm, salt, info, length=32):
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


fields = [VOLUME_ID.encode(), REGION.encode(), ARN.encode(), CONTEXT.encode(),
          SNAPSHOT.encode(), WRAPPED]
length = 72 + sum(2 + len(f) for f in fields) + 32
body = b"EBSIMVOL" + struct.pack(
    "<HHIQQQQQIBBHq",
    1, length, 0, SEQUENCE, 0x1, 0, SIZE, 1 << 20, 4096, 1, 1, 0, CREATED_MS)
assert len(body) == 72
for f in fields:
    body += struct.pack("<H", len(f)) + f
key = hkdf_sha256(DATA_KEY, b"ebsim volume header v1", VOLUME_ID.encode())
header = body + hmac.new(key, body, hashlib.sha256).digest()
assert len(header) == length
for i in range(0, len(header), 32):
    print(header[i:i + 32].hex())
