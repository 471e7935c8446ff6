#!/usr/bin/env python3
"""Independent implementation of docs/KMS.md "Ciphertext blob" (version 1) with
pyca/cryptography, used to produce tests/vectors/kms-ciphertext-v1.hex.

Inputs: backing key 0x11 * 32, key id 1234abcd-12ab-34cd-56ef-1234567890ab,
backing-key version 1, nonce 0x22 * 16, encryption context {"purpose": "test"},
plaintext b"hello".
"""
import struct
import uuid

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

backing_key = b"\x11" * 32
key_id = uuid.UUID("1234abcd-12ab-34cd-56ef-1234567890ab").bytes
nonce = b"\x22" * 16
context = {"purpose": "test"}

header = b"\x01" + key_id + struct.pack(">I", 1) + nonce
ctx = struct.pack(">I", len(context))
for k in sorted(context):
    kb, vb = k.encode(), context[k].encode()
    ctx += struct.pack(">I", len(kb)) + kb + struct.pack(">I", len(vb)) + vb

message_key = HKDF(
    algorithm=hashes.SHA256(), length=32, salt=nonce,
    info=b"ebsim kms symmetric v1" + header[:21],
).derive(backing_key)
body = AESGCM(message_key).encrypt(b"\x00" * 12, b"hello", header + ctx)
print((header + body).hex())
