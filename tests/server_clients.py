#!/usr/bin/env python3
"""boto3/botocore against a running `ebsim serve` (tests/server.rs runs it).

Usage: server_clients.py MODE, with EBSIM_ENDPOINT, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION (and EBSIM_ACCOUNT) set. Each mode
asserts what it checks and prints `ok MODE …` last; any failure raises (exit 1).
Signatures are made by botocore, independently of ebsim's verifier.
"""
import base64
import datetime
import json
import os
import sys
import time
import urllib.error
import urllib.request

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.credentials
from botocore.exceptions import ClientError

ENDPOINT = os.environ["EBSIM_ENDPOINT"]
REGION = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
ACCOUNT = os.environ.get("EBSIM_ACCOUNT", "111122223333")
NO_RETRY = botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"})


def client(service, key=None, secret=None, token=None):
    return boto3.client(
        service,
        endpoint_url=ENDPOINT,
        region_name=REGION,
        aws_access_key_id=key or os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=secret or os.environ["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=token,
        config=NO_RETRY,
    )


def error_of(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["Error"].get("Message", ""), e.response
    raise AssertionError(f"{fn.__name__} succeeded; an error was expected")


def raw(method, service, headers, body, key=None, secret=None, when=None, sign=True, query=""):
    """A request signed by botocore's SigV4Auth (at `when`, if given), sent as is."""
    url = ENDPOINT + "/" + (("?" + query) if query else "")
    req = botocore.awsrequest.AWSRequest(method=method, url=url, data=body, headers=headers)
    if sign:
        creds = botocore.credentials.Credentials(
            key or os.environ["AWS_ACCESS_KEY_ID"], secret or os.environ["AWS_SECRET_ACCESS_KEY"]
        )
        real = botocore.auth.get_current_datetime
        if when is not None:
            botocore.auth.get_current_datetime = lambda remove_tzinfo=True: when
        try:
            botocore.auth.SigV4Auth(creds, service, REGION).add_auth(req)
        finally:
            botocore.auth.get_current_datetime = real
    prepared = req.prepare()
    r = urllib.request.Request(prepared.url, data=prepared.body, method=method, headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def kms_raw(target, body, **kw):
    headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target}
    status, headers, out = raw("POST", "kms", headers, body, **kw)
    assert "x-amzn-RequestId" in headers or "x-amzn-requestid" in {k.lower() for k in headers}, headers
    return status, json.loads(out) if out.strip().startswith(b"{") else out


def kms_all():
    """Every KMS operation ebsim serves, through boto3 (its parsers check the wire shapes)."""
    kms = client("kms")
    done = set()

    def call(op, **kw):
        done.add(op)
        name = "".join("_" + c.lower() if c.isupper() else c for c in op).lstrip("_")
        return getattr(kms, name)(**kw)

    root = f"arn:aws:iam::{ACCOUNT}:root"
    k = call("CreateKey", Description="every op", Tags=[{"TagKey": "t", "TagValue": "1"}])["KeyMetadata"]
    kid = k["KeyId"]
    assert isinstance(k["CreationDate"], datetime.datetime), k
    assert call("DescribeKey", KeyId=kid)["KeyMetadata"]["Description"] == "every op"
    assert any(x["KeyId"] == kid for x in call("ListKeys")["Keys"])
    call("UpdateKeyDescription", KeyId=kid, Description="renamed")
    call("DisableKey", KeyId=kid)
    assert kms.describe_key(KeyId=kid)["KeyMetadata"]["KeyState"] == "Disabled"
    call("EnableKey", KeyId=kid)
    call("CreateAlias", AliasName="alias/every", TargetKeyId=kid)
    k2 = kms.create_key()["KeyMetadata"]["KeyId"]
    call("UpdateAlias", AliasName="alias/every", TargetKeyId=k2)
    aliases = call("ListAliases", KeyId=k2)["Aliases"]
    assert [a["AliasName"] for a in aliases] == ["alias/every"], aliases
    call("DeleteAlias", AliasName="alias/every")
    call("TagResource", KeyId=kid, Tags=[{"TagKey": "env", "TagValue": "test"}])
    call("UntagResource", KeyId=kid, TagKeys=["t"])
    assert call("ListResourceTags", KeyId=kid)["Tags"] == [{"TagKey": "env", "TagValue": "test"}]
    call("EnableKeyRotation", KeyId=kid)
    assert call("GetKeyRotationStatus", KeyId=kid)["KeyRotationEnabled"] is True
    call("DisableKeyRotation", KeyId=kid)
    call("RotateKeyOnDemand", KeyId=kid)
    rotations = call("ListKeyRotations", KeyId=kid)["Rotations"]
    assert len(rotations) == 1 and isinstance(rotations[0]["RotationDate"], datetime.datetime), rotations
    policy = json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Sid": "root", "Effect": "Allow", "Principal": {"AWS": root}, "Action": "kms:*", "Resource": "*"}],
    })
    call("PutKeyPolicy", KeyId=kid, PolicyName="default", Policy=policy)
    assert json.loads(call("GetKeyPolicy", KeyId=kid, PolicyName="default")["Policy"])["Statement"][0]["Sid"] == "root"
    assert call("ListKeyPolicies", KeyId=kid)["PolicyNames"] == ["default"]
    g = call("CreateGrant", KeyId=kid, GranteePrincipal=root, RetiringPrincipal=root, Operations=["Decrypt", "Encrypt"])
    g2 = kms.create_grant(KeyId=kid, GranteePrincipal=root, Operations=["Decrypt"])
    assert len(call("ListGrants", KeyId=kid)["Grants"]) == 2
    assert any(x["GrantId"] == g["GrantId"] for x in call("ListRetirableGrants", RetiringPrincipal=root)["Grants"])
    call("RetireGrant", GrantToken=g["GrantToken"])
    call("RevokeGrant", KeyId=kid, GrantId=g2["GrantId"])
    assert kms.list_grants(KeyId=kid)["Grants"] == []
    ct = call("Encrypt", KeyId=kid, Plaintext=b"secret bytes", EncryptionContext={"a": "b"})["CiphertextBlob"]
    out = call("Decrypt", CiphertextBlob=ct, EncryptionContext={"a": "b"})
    assert out["Plaintext"] == b"secret bytes" and out["KeyId"].endswith(kid), out
    code, _, _ = error_of(kms.decrypt, CiphertextBlob=ct)
    assert code == "InvalidCiphertextException", code
    re = call("ReEncrypt", CiphertextBlob=ct, SourceEncryptionContext={"a": "b"}, DestinationKeyId=k2)
    assert kms.decrypt(CiphertextBlob=re["CiphertextBlob"])["Plaintext"] == b"secret bytes"
    dk = call("GenerateDataKey", KeyId=kid, KeySpec="AES_256")
    assert len(dk["Plaintext"]) == 32
    assert kms.decrypt(CiphertextBlob=dk["CiphertextBlob"])["Plaintext"] == dk["Plaintext"]
    assert "Plaintext" not in call("GenerateDataKeyWithoutPlaintext", KeyId=kid, NumberOfBytes=16)
    assert len(call("GenerateRandom", NumberOfBytes=48)["Plaintext"]) == 48
    d = call("ScheduleKeyDeletion", KeyId=k2, PendingWindowInDays=7)
    assert isinstance(d["DeletionDate"], datetime.datetime), d
    call("CancelKeyDeletion", KeyId=k2)
    code, msg, resp = error_of(kms.describe_key, KeyId="alias/none")
    assert code == "NotFoundException" and "alias/none" in msg, (code, msg)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 400
    expected = set(os.environ["EBSIM_KMS_OPERATIONS"].split(","))
    assert done == expected, f"not called: {sorted(expected - done)}; unknown: {sorted(done - expected)}"
    # CloudTrail over JSON 1.1: the calls above are in the region's log.
    ct_client = client("cloudtrail")
    ev = ct_client.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "CreateKey"}])
    assert ev["Events"] and isinstance(ev["Events"][0]["EventTime"], datetime.datetime), ev
    who = json.loads(ev["Events"][0]["CloudTrailEvent"])
    assert who["sourceIPAddress"] == "127.0.0.1" and "Boto3" in who["userAgent"], who
    print(f"ok kms-all {len(done)} operations")


def caller():
    ident = client("sts").get_caller_identity()
    print(json.dumps({k: ident[k] for k in ("UserId", "Account", "Arn")}))


def sigv4_failures():
    bad_key = "AKIA" + "Z" * 16
    code, msg, resp = error_of(client("kms", secret="x" * 40).list_keys)
    assert code == "InvalidSignatureException" and msg.startswith("The request signature we calculated does not match"), (code, msg)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 400
    code, _, resp = error_of(client("sts", secret="x" * 40).get_caller_identity)
    assert code == "SignatureDoesNotMatch" and resp["ResponseMetadata"]["HTTPStatusCode"] == 403, code
    code, msg, _ = error_of(client("kms", key=bad_key).list_keys)
    assert (code, msg) == ("UnrecognizedClientException", "The security token included in the request is invalid."), (code, msg)
    code, _, resp = error_of(client("sts", key=bad_key).get_caller_identity)
    assert code == "InvalidClientTokenId" and resp["ResponseMetadata"]["HTTPStatusCode"] == 403, code
    # A date 20 minutes off, signed correctly otherwise.
    past = datetime.datetime.utcnow() - datetime.timedelta(minutes=20)
    status, body = kms_raw("TrentService.ListKeys", b"{}", when=past)
    assert status == 400 and body["__type"] == "InvalidSignatureException", (status, body)
    assert body["message"].startswith("Signature expired: "), body
    future = datetime.datetime.utcnow() + datetime.timedelta(minutes=20)
    status, body = kms_raw("TrentService.ListKeys", b"{}", when=future)
    assert status == 400 and body["message"].startswith("Signature not yet current: "), (status, body)
    now = datetime.datetime.utcnow() - datetime.timedelta(minutes=5)
    status, body = kms_raw("TrentService.ListKeys", b"{}", when=now)
    assert status == 200 and "Keys" in body, (status, body)
    # No signature at all; a header that is not SigV4.
    status, body = kms_raw("TrentService.ListKeys", b"{}", sign=False)
    assert (status, body["__type"]) == (400, "MissingAuthenticationTokenException"), body
    status, _, out = raw("POST", "kms", {"X-Amz-Target": "TrentService.ListKeys", "Authorization": "AWS4-HMAC-SHA256 Credential=x"}, b"{}", sign=False)
    assert status == 400 and json.loads(out)["__type"] == "IncompleteSignatureException", out
    # Signed for one service, sent to another.
    status, _, out = raw("POST", "sts", {"X-Amz-Target": "TrentService.ListKeys", "Content-Type": "application/x-amz-json-1.1"}, b"{}")
    assert status == 400 and json.loads(out)["message"].startswith("Credential should be scoped to correct service: 'kms'"), out
    # Presigned URLs (query-string SigV4): good, tampered, expired.
    sts = client("sts")
    url = sts.generate_presigned_url("get_caller_identity", ExpiresIn=60, HttpMethod="GET")
    with urllib.request.urlopen(url, timeout=30) as r:
        text = r.read().decode()
    assert r.status == 200 and "<GetCallerIdentityResult>" in text and f"<Account>{ACCOUNT}</Account>" in text, text
    sig_at = url.index("X-Amz-Signature=") + len("X-Amz-Signature=")
    flipped = url[:sig_at] + ("0" if url[sig_at] != "0" else "1") + url[sig_at + 1:]
    try:
        urllib.request.urlopen(flipped, timeout=30)
        raise AssertionError("a tampered presigned URL was accepted")
    except urllib.error.HTTPError as e:
        body = e.read().decode()
        assert e.code == 403 and "<Code>SignatureDoesNotMatch</Code>" in body, body
    url = sts.generate_presigned_url("get_caller_identity", ExpiresIn=1, HttpMethod="GET")
    time.sleep(2.5)
    try:
        urllib.request.urlopen(url, timeout=30)
        raise AssertionError("an expired presigned URL was accepted")
    except urllib.error.HTTPError as e:
        body = e.read().decode()
        assert e.code == 403 and "Signature expired" in body, body
    print("ok sigv4-failures")


def raw_errors():
    status, body = kms_raw("TrentService.Encrypt", json.dumps({"KeyId": "alias/x"}).encode())
    assert status == 400 and body == {
        "__type": "ValidationException",
        "message": "1 validation error detected: Value null at 'plaintext' failed to satisfy constraint: Member must not be null",
    }, body
    status, body = kms_raw("TrentService.Frobnicate", b"{}")
    assert (status, body["__type"]) == (400, "UnknownOperationException"), body
    status, body = kms_raw("TrentService.ListKeys", b"{not json")
    assert (status, body["__type"]) == (400, "SerializationException"), body
    status, body = kms_raw("TrentService.Encrypt", json.dumps({"KeyId": "alias/x", "Plaintext": "***"}).encode())
    assert (status, body["__type"]) == (400, "SerializationException"), body
    status, body = kms_raw("TrentService.DescribeKey", json.dumps({"KeyId": "1234abcd-12ab-34cd-56ef-1234567890ab"}).encode())
    assert (status, body["__type"]) == (400, "NotFoundException"), body
    big = json.dumps({"KeyId": "alias/x", "Plaintext": base64.b64encode(b"x" * (1024 * 1024)).decode()}).encode()
    status, body = kms_raw("TrentService.Encrypt", big)
    assert (status, body["__type"]) == (413, "RequestEntityTooLargeException"), (status, body)
    # STS: an action it does not have.
    status, _, out = raw("POST", "sts", {"Content-Type": "application/x-www-form-urlencoded"}, b"Action=GetSessionToken&Version=2011-06-15")
    assert status == 400 and b"<Code>InvalidAction</Code>" in out, out
    print("ok raw-errors")


def assume():
    """AssumeRole as the current credentials; writes the session to $EBSIM_SESSION_FILE."""
    sts = client("sts")
    role = f"arn:aws:iam::{ACCOUNT}:role/Deployer"
    out = sts.assume_role(RoleArn=role, RoleSessionName="job-7", DurationSeconds=900)
    c = out["Credentials"]
    assert c["AccessKeyId"].startswith("ASIA") and len(c["AccessKeyId"]) == 20, c
    assert len(c["SecretAccessKey"]) == 40 and isinstance(c["Expiration"], datetime.datetime), c
    assert out["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/Deployer/job-7", out
    session = client("sts", key=c["AccessKeyId"], secret=c["SecretAccessKey"], token=c["SessionToken"])
    ident = session.get_caller_identity()
    assert ident["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/Deployer/job-7", ident
    assert ident["UserId"].startswith("AROA") and ident["UserId"].endswith(":job-7"), ident
    # The session acts as the role: no identity policy lets it list keys.
    kms = client("kms", key=c["AccessKeyId"], secret=c["SecretAccessKey"], token=c["SessionToken"])
    code, msg, _ = error_of(kms.list_keys)
    assert code == "AccessDeniedException" and "assumed-role/Deployer/job-7" in msg, (code, msg)
    # The session's key without its token, or with another token, is refused.
    code, _, _ = error_of(client("kms", key=c["AccessKeyId"], secret=c["SecretAccessKey"]).list_keys)
    assert code == "UnrecognizedClientException", code
    code, _, _ = error_of(client("kms", key=c["AccessKeyId"], secret=c["SecretAccessKey"], token="ebsim/other").list_keys)
    assert code == "UnrecognizedClientException", code
    # A role whose trust policy does not name the caller.
    code, msg, _ = error_of(sts.assume_role, RoleArn=f"arn:aws:iam::{ACCOUNT}:role/Nobody", RoleSessionName="s1")
    assert code == "AccessDenied", (code, msg)
    with open(os.environ["EBSIM_SESSION_FILE"], "w") as f:
        json.dump({k: c[k] for k in ("AccessKeyId", "SecretAccessKey", "SessionToken")}, f)
    print("ok assume")


def expired():
    with open(os.environ["EBSIM_SESSION_FILE"]) as f:
        c = json.load(f)
    kms = client("kms", key=c["AccessKeyId"], secret=c["SecretAccessKey"], token=c["SessionToken"])
    code, msg, _ = error_of(kms.list_keys)
    assert (code, msg) == ("ExpiredTokenException", "The security token included in the request is expired"), (code, msg)
    sts = client("sts", key=c["AccessKeyId"], secret=c["SecretAccessKey"], token=c["SessionToken"])
    code, _, resp = error_of(sts.get_caller_identity)
    assert code == "ExpiredToken" and resp["ResponseMetadata"]["HTTPStatusCode"] == 403, code
    print("ok expired")


def iam_query():
    """IAM over the Query protocol: users, policies, roles, access keys, errors."""
    iam = client("iam")
    user = iam.create_user(UserName="carol", Path="/team/")["User"]
    assert user["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/team/carol", user
    assert isinstance(user["CreateDate"], datetime.datetime) and user["UserId"].startswith("AIDA"), user
    assert iam.get_user(UserName="carol")["User"]["UserName"] == "carol"
    assert [u["UserName"] for u in iam.list_users()["Users"]] == ["carol"]
    code, msg, resp = error_of(iam.create_user, UserName="carol")
    assert (code, resp["ResponseMetadata"]["HTTPStatusCode"]) == ("EntityAlreadyExists", 409), (code, msg)
    code, _, resp = error_of(iam.get_user, UserName="nobody")
    assert (code, resp["ResponseMetadata"]["HTTPStatusCode"]) == ("NoSuchEntity", 404), code
    doc = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"}]}
    iam.put_user_policy(UserName="carol", PolicyName="who", PolicyDocument=json.dumps(doc))
    got = iam.get_user_policy(UserName="carol", PolicyName="who")
    assert got["PolicyDocument"] == doc, got  # URL-encoded on the wire, decoded by botocore
    assert iam.list_user_policies(UserName="carol")["PolicyNames"] == ["who"]
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "sts:AssumeRole"}]}
    role = iam.create_role(RoleName="Reader", AssumeRolePolicyDocument=json.dumps(trust), Description="reads")["Role"]
    assert role["Arn"] == f"arn:aws:iam::{ACCOUNT}:role/Reader" and role["AssumeRolePolicyDocument"] == trust, role
    assert iam.get_role(RoleName="Reader")["Role"]["Description"] == "reads"
    assert [r["RoleName"] for r in iam.list_roles()["Roles"]] == ["Reader"]
    k = iam.create_access_key(UserName="carol")["AccessKey"]
    assert k["AccessKeyId"].startswith("AKIA") and len(k["SecretAccessKey"]) == 40 and k["Status"] == "Active", k
    iam.create_access_key(UserName="carol")
    code, msg, resp = error_of(iam.create_access_key, UserName="carol")
    assert (code, resp["ResponseMetadata"]["HTTPStatusCode"]) == ("LimitExceeded", 409), (code, msg)
    keys = iam.list_access_keys(UserName="carol")["AccessKeyMetadata"]
    assert len(keys) == 2 and all(x["UserName"] == "carol" for x in keys), keys
    # carol signs as herself.
    carol = client("sts", key=k["AccessKeyId"], secret=k["SecretAccessKey"])
    assert carol.get_caller_identity()["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/team/carol"
    code, msg, resp = error_of(client("iam", key=k["AccessKeyId"], secret=k["SecretAccessKey"]).list_users)
    assert (code, resp["ResponseMetadata"]["HTTPStatusCode"]) == ("AccessDenied", 403), (code, msg)
    used = iam.get_access_key_last_used(AccessKeyId=k["AccessKeyId"])
    assert used["UserName"] == "carol" and used["AccessKeyLastUsed"]["ServiceName"] in ("sts", "iam"), used
    iam.update_access_key(UserName="carol", AccessKeyId=k["AccessKeyId"], Status="Inactive")
    code, _, _ = error_of(carol.get_caller_identity)
    assert code == "InvalidClientTokenId", code
    code, _, resp = error_of(iam.delete_user, UserName="carol")
    assert (code, resp["ResponseMetadata"]["HTTPStatusCode"]) == ("DeleteConflict", 409), code
    for x in iam.list_access_keys(UserName="carol")["AccessKeyMetadata"]:
        iam.delete_access_key(UserName="carol", AccessKeyId=x["AccessKeyId"])
    iam.delete_user_policy(UserName="carol", PolicyName="who")
    iam.delete_user(UserName="carol")
    iam.delete_role(RoleName="Reader")
    assert iam.list_users()["Users"] == [] and iam.list_roles()["Roles"] == []
    code, _, _ = error_of(iam.create_group, GroupName="g")
    assert code == "InvalidAction", code
    print("ok iam")


def harness():
    """The test-harness endpoints: health unsigned; reset only for the account
    root, refused while a volume is attached unless forced (EBSIM_ATTACHED names
    it), and the root's key still works after it."""
    req = urllib.request.Request(ENDPOINT + "/_ebsim/health")
    with urllib.request.urlopen(req, timeout=30) as resp:
        health = json.loads(resp.read())
    assert resp.status == 200 and health["status"] == "running", health
    assert health["services"]["kms"] == "running" and "us-east-1" in health["regions"], health
    with urllib.request.urlopen(ENDPOINT + "/_localstack/health", timeout=30) as resp:
        assert json.loads(resp.read())["services"]["ec2"] == "running"
    # Unsigned, and signed by a user: refused, nothing changed.
    r = urllib.request.Request(ENDPOINT + "/_ebsim/reset", data=b"", method="POST")
    try:
        urllib.request.urlopen(r, timeout=30)
        raise AssertionError("an unsigned reset was taken")
    except urllib.error.HTTPError as e:
        assert e.code == 403 and b"AccessDenied" in e.read(), e.code
    user_key, user_secret = os.environ["EBSIM_USER_KEY"].split(":")
    status, _, out = raw_path("POST", "/_ebsim/reset", key=user_key, secret=user_secret)
    assert status == 403 and b"only the account root" in out, (status, out)
    kms = client("kms")
    assert len(kms.list_keys()["Keys"]) >= 1
    vol = os.environ["EBSIM_ATTACHED"]
    status, _, out = raw_path("POST", "/_ebsim/reset")
    assert status == 409 and b"VolumeInUse" in out and vol.encode() in out, (status, out)
    assert len(kms.list_keys()["Keys"]) >= 1, "a refused reset changed nothing"
    status, _, out = raw_path("POST", "/_ebsim/reset", query="force=true")
    report = json.loads(out)
    assert status == 200 and report["Detached"] == [vol], (status, out)
    assert kms.list_keys()["Keys"] == []
    assert kms.list_aliases()["Aliases"] == [] or all(a["AliasName"].startswith("alias/aws/") for a in kms.list_aliases()["Aliases"])
    assert client("iam").list_users()["Users"] == []
    assert client("sts").get_caller_identity()["Arn"] == f"arn:aws:iam::{ACCOUNT}:root"
    # Usable at once: a new key, and its events, in a reset region.
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"after reset")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"after reset"
    # The answer's x-amzn-RequestId is the CloudTrail record's requestID, for a
    # success and for an error alike.
    body = json.dumps({"KeyId": key_id, "Plaintext": base64.b64encode(b"x").decode()}).encode()
    ids = {}
    for name, payload in [("ok", body), ("missing", json.dumps({"KeyId": "alias/nope", "Plaintext": "eA=="}).encode())]:
        status, headers, _ = raw("POST", "kms", {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.Encrypt"}, payload)
        ids[name] = {k.lower(): v for k, v in headers.items()}["x-amzn-requestid"]
    events = client("cloudtrail").lookup_events(
        LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "Encrypt"}]
    )["Events"]
    recorded = {json.loads(e["CloudTrailEvent"])["requestID"] for e in events}
    assert ids["ok"] in recorded and ids["missing"] in recorded, (ids, recorded)
    print("ok harness")


def raw_path(method, path, key=None, secret=None, query=""):
    """A SigV4-signed request (service kms) to one of ebsim's own paths."""
    url = ENDPOINT + path + (("?" + query) if query else "")
    req = botocore.awsrequest.AWSRequest(method=method, url=url, data=b"", headers={})
    creds = botocore.credentials.Credentials(
        key or os.environ["AWS_ACCESS_KEY_ID"], secret or os.environ["AWS_SECRET_ACCESS_KEY"]
    )
    botocore.auth.SigV4Auth(creds, "kms", REGION).add_auth(req)
    prepared = req.prepare()
    r = urllib.request.Request(prepared.url, data=prepared.body, method=method, headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(r, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def audit_before_answer():
    """Concurrent clients (their answers coalesced by the server's workers):
    every answer's CloudTrail record, found by the answer's request id, is
    already in the log file when the client reads the answer."""
    import threading

    trail = os.environ["EBSIM_TRAIL"]
    key_id = client("kms").create_key()["KeyMetadata"]["KeyId"]
    missing, done = [], []

    def worker(n):
        kms = client("kms")
        for i in range(40):
            if i % 2:
                r = kms.encrypt(KeyId=key_id, Plaintext=b"x" * 32)
            else:
                r = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
            rid = r["ResponseMetadata"]["RequestId"]
            with open(trail) as f:
                if ('"requestID":"%s"' % rid) not in f.read():
                    missing.append(rid)
            done.append(rid)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(done) == 16 * 40, len(done)
    assert not missing, "answers whose records were not yet in the log: %s" % missing[:5]
    # Each record once, as a whole line.
    with open(trail) as f:
        lines = f.read().splitlines()
    ids = [json.loads(l)["requestID"] for l in lines]
    for rid in done:
        assert ids.count(rid) == 1, rid
    print("ok audit-before-answer %d answers" % len(done))


MODES = {
    "audit-before-answer": audit_before_answer,
    "iam": iam_query,
    "kms-all": kms_all,
    "caller": caller,
    "sigv4-failures": sigv4_failures,
    "raw-errors": raw_errors,
    "assume": assume,
    "expired": expired,
    "harness": harness,
}

if __name__ == "__main__":
    MODES[sys.argv[1]]()
