#!/usr/bin/env python3
"""Signed KMS requests for wrk (scripts/bench/server.sh).

usage: server_requests.py ENDPOINT ACCESS_KEY_ID SECRET STATE_JSON OUT_DIR

The first call for a STATE_JSON creates, through boto3 on ENDPOINT, a symmetric
key and the ciphertext of a 64-byte plaintext under it (encryption context
{"aws:ebs:id": "vol-bench"}), and keeps their ids in STATE_JSON. Every call then
signs one request per operation with botocore's SigV4 signer, as the AWS SDKs
sign, and writes it as a wrk script OUT_DIR/<op>.lua: the same bytes are sent
again and again, which SigV4 accepts while X-Amz-Date is within 15 minutes of
the server's clock, so server.sh signs anew before every round.

Each script's done() prints one line, RESULT key=value ..., with the request
count, the duration, wrk's latency percentiles (microseconds) and its error
counts (errors_status counts answers that were not 2xx/3xx).
"""

import base64
import json
import os
import sys
from urllib.parse import urlsplit

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

REGION = "us-east-1"
CONTEXT = {"aws:ebs:id": "vol-bench"}
PLAINTEXT = bytes(range(64))

DONE = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d mean_us=%.1f " ..
    "errors_connect=%d errors_read=%d errors_write=%d errors_status=%d errors_timeout=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def lua_string(s):
    out = ['"']
    for ch in s:
        if ch in '\\"':
            out.append("\\" + ch)
        elif 32 <= ord(ch) < 127:
            out.append(ch)
        else:
            out.append("\\%03d" % ord(ch))
    out.append('"')
    return "".join(out)


def prepare(endpoint, ak, sk, state_path):
    if os.path.exists(state_path):
        with open(state_path) as f:
            return json.load(f)
    kms = boto3.client(
        "kms",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ak,
        aws_secret_access_key=sk,
    )
    key_id = kms.create_key(Description="ebsim server bench")["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=PLAINTEXT, EncryptionContext=CONTEXT)["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT)["Plaintext"] == PLAINTEXT
    state = {"key_id": key_id, "ciphertext": base64.b64encode(blob).decode()}
    with open(state_path, "w") as f:
        json.dump(state, f)
    return state


def signed(endpoint, ak, sk, op, body):
    host = urlsplit(endpoint).netloc
    data = json.dumps(body, separators=(",", ":"))
    req = AWSRequest(
        method="POST",
        url=endpoint + "/",
        data=data,
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "TrentService." + op,
        },
    )
    SigV4Auth(Credentials(ak, sk), "kms", REGION).add_auth(req)
    headers = {k: v for k, v in req.headers.items()}
    headers["Host"] = host
    return data, headers


def main():
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    endpoint, ak, sk, state_path, out_dir = sys.argv[1:]
    state = prepare(endpoint, ak, sk, state_path)
    bodies = {
        "Encrypt": {
            "KeyId": state["key_id"],
            "Plaintext": base64.b64encode(PLAINTEXT).decode(),
            "EncryptionContext": CONTEXT,
        },
        "Decrypt": {"CiphertextBlob": state["ciphertext"], "EncryptionContext": CONTEXT},
        "GenerateDataKey": {
            "KeyId": state["key_id"],
            "KeySpec": "AES_256",
            "EncryptionContext": CONTEXT,
        },
    }
    os.makedirs(out_dir, exist_ok=True)
    for op, body in bodies.items():
        data, headers = signed(endpoint, ak, sk, op, body)
        lines = ['wrk.method = "POST"', 'wrk.path = "/"', "wrk.body = " + lua_string(data)]
        for k, v in headers.items():
            lines.append("wrk.headers[%s] = %s" % (lua_string(k), lua_string(v)))
        with open(os.path.join(out_dir, op + ".lua"), "w") as f:
            f.write("\n".join(lines) + "\n" + DONE)


if __name__ == "__main__":
    main()
