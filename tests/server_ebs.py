#!/usr/bin/env python3
"""boto3's `ebs` client against a running `ebsim serve` (tests/server_ebs.rs runs it).

Usage: server_ebs.py MODE [ARGS], with EBSIM_ENDPOINT, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION set. Each mode asserts what it checks
and prints one JSON line last; any failure raises (exit 1).
"""
import base64
import hashlib
import json
import os
import sys

import boto3
import botocore.config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["EBSIM_ENDPOINT"]
REGION = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
BLOCK = 524288


def ebs():
    return boto3.client(
        "ebs",
        endpoint_url=ENDPOINT,
        region_name=REGION,
        config=botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def sha(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def error_of(fn, **kwargs):
    try:
        fn(**kwargs)
    except ClientError as e:
        return e.response["Error"]["Code"], e.response
    raise AssertionError(f"{fn.__name__} succeeded; an error was expected")


def read(snapshot, outdir):
    """Every block of `snapshot` to OUTDIR/<index>, checksums checked."""
    c = ebs()
    r = c.list_snapshot_blocks(SnapshotId=snapshot)
    assert r["BlockSize"] == BLOCK, r
    assert r["VolumeSize"] == 1, r
    assert r["ExpiryTime"].year >= 2025, r
    indices = []
    for b in r["Blocks"]:
        g = c.get_snapshot_block(SnapshotId=snapshot, BlockIndex=b["BlockIndex"], BlockToken=b["BlockToken"])
        data = g["BlockData"].read()
        assert len(data) == BLOCK == g["DataLength"], g
        assert g["ChecksumAlgorithm"] == "SHA256"
        assert g["Checksum"] == sha(data), "checksum"
        with open(os.path.join(outdir, str(b["BlockIndex"])), "wb") as f:
            f.write(data)
        indices.append(b["BlockIndex"])
    # A token is for its block only.
    if len(r["Blocks"]) > 1:
        code, resp = error_of(
            c.get_snapshot_block,
            SnapshotId=snapshot,
            BlockIndex=r["Blocks"][1]["BlockIndex"],
            BlockToken=r["Blocks"][0]["BlockToken"],
        )
        assert code == "ValidationException", resp
        assert resp["Reason"] == "INVALID_BLOCK_TOKEN", resp
    code, resp = error_of(c.list_snapshot_blocks, SnapshotId="snap-0000000000000000f")
    assert code == "ResourceNotFoundException", resp
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 404, resp
    assert resp["Reason"] == "SNAPSHOT_NOT_FOUND", resp
    print(json.dumps({"blocks": indices}))


def changed(first, second):
    c = ebs()
    r = c.list_changed_blocks(FirstSnapshotId=first, SecondSnapshotId=second)
    out = []
    for b in r["ChangedBlocks"]:
        out.append([b["BlockIndex"], "FirstBlockToken" in b, "SecondBlockToken" in b])
        if "SecondBlockToken" in b:
            g = c.get_snapshot_block(SnapshotId=second, BlockIndex=b["BlockIndex"], BlockToken=b["SecondBlockToken"])
            assert g["Checksum"] == sha(g["BlockData"].read())
    # A page of 100 and its NextToken: the page tokens are good for the next call.
    whole = c.list_changed_blocks(SecondSnapshotId=second)
    print(json.dumps({"changed": out, "all_of_second": [b["BlockIndex"] for b in whole["ChangedBlocks"]]}))


def write(key_arn, outdir):
    """A 1 GiB snapshot written block by block: blocks 0 and 7."""
    c = ebs()
    s = c.start_snapshot(VolumeSize=1, Encrypted=True, KmsKeyArn=key_arn, Timeout=60,
                         Description="direct", Tags=[{"Key": "made-by", "Value": "boto3"}])
    assert s["Status"] == "pending", s
    assert s["BlockSize"] == BLOCK and s["VolumeSize"] == 1, s
    assert s["KmsKeyArn"] == key_arn, s
    sid = s["SnapshotId"]
    blocks = {0: bytes([0x5A]) * BLOCK, 7: bytes(range(256)) * (BLOCK // 256)}
    # A wrong checksum is refused, and nothing is kept.
    code, resp = error_of(c.put_snapshot_block, SnapshotId=sid, BlockIndex=3, BlockData=blocks[0],
                          DataLength=BLOCK, Checksum=sha(b"other"), ChecksumAlgorithm="SHA256")
    assert code == "ValidationException", resp
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 400, resp
    assert "checksum" in resp["Error"]["Message"], resp
    for i, data in blocks.items():
        p = c.put_snapshot_block(SnapshotId=sid, BlockIndex=i, BlockData=data, DataLength=BLOCK,
                                 Checksum=sha(data), ChecksumAlgorithm="SHA256", Progress=50)
        assert p["Checksum"] == sha(data), p
    # Not completed while it is pending: no reading yet.
    code, resp = error_of(c.list_snapshot_blocks, SnapshotId=sid)
    assert code == "ValidationException", resp
    # The count must match.
    code, resp = error_of(c.complete_snapshot, SnapshotId=sid, ChangedBlocksCount=3)
    assert code == "ValidationException", resp
    linear = base64.b64encode(hashlib.sha256(b"".join(
        hashlib.sha256(blocks[i]).digest() for i in sorted(blocks))).digest()).decode()
    done = c.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=2, Checksum=linear,
                               ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
    assert done["Status"] == "completed", done
    r = c.list_snapshot_blocks(SnapshotId=sid)
    assert [b["BlockIndex"] for b in r["Blocks"]] == [0, 7], r
    for i, data in blocks.items():
        with open(os.path.join(outdir, f"w{i}"), "wb") as f:
            f.write(data)
    print(json.dumps({"snapshot": sid}))


def denied(snapshot):
    """A user allowed ebs:ListSnapshotBlocks only."""
    c = ebs()
    r = c.list_snapshot_blocks(SnapshotId=snapshot)
    b = r["Blocks"][0]
    code, resp = error_of(c.get_snapshot_block, SnapshotId=snapshot, BlockIndex=b["BlockIndex"],
                          BlockToken=b["BlockToken"])
    assert code == "AccessDeniedException", resp
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 403, resp
    assert resp["Reason"] == "UNAUTHORIZED_ACCOUNT", resp
    assert "ebs:GetSnapshotBlock" in resp["Error"]["Message"], resp
    code, resp = error_of(c.start_snapshot, VolumeSize=1)
    assert code == "AccessDeniedException", resp
    print(json.dumps({"denied": True}))


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    {"read": read, "changed": changed, "write": write, "denied": denied}[mode](*args)
