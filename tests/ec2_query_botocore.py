#!/usr/bin/env python3
"""Checks ebsim's EC2 Query codec against botocore's own (tests/ec2_query.rs runs it).

    ec2_query_botocore.py requests OPS...   # one JSON line per request botocore's
                                            # EC2Serializer makes for each operation
    ec2_query_botocore.py serialize SVC OP  # the body botocore sends for params on stdin
    ec2_query_botocore.py parse SVC OP FILE # what botocore reads from an XML response
    ec2_query_botocore.py responses DIR     # parses DIR/<Op>.xml with botocore's
                                            # EC2QueryParser, checks every element
                                            # against the model and the parsed
                                            # values against DIR/<Op>.json

`requests`: for each operation, one request with every member of the model's
input (lists of two, structures whole), then one per member with that member
and the required ones; each line is {"op", "member", "params", "body"} where
body is the form body botocore would send. Exit status 3: botocore is missing.

`responses`: fails (exit 1, one line per problem) if an element is not in the
output shape (besides requestId, and `return` for operations without output),
if botocore cannot parse the document, or if what it parses differs from the
service's JSON response (ebsim's own members, which EC2 has no element for,
excepted). DIR/error-<name>.xml are error documents: botocore must read the
code in DIR/error-<name>.code and a message from them.
"""

import datetime
import json
import os
import sys
import urllib.parse
import xml.etree.ElementTree as ET

try:
    import botocore.model
    import botocore.parsers
    import botocore.serialize
    import botocore.session
except ImportError:
    sys.exit(3)

# ebsim's own response members, which have no element in EC2's XML.
EBSIM_MEMBERS = {
    "SizeBytes",
    "BlockCount",
    "StateMessage",
    "FuseFile",
    "ProcessId",
    "NbdUri",
    "LoopDevice",
    "MountPoint",
}


def model():
    return botocore.session.get_session().get_service_model("ec2")


def sample(shape, name, depth=0):
    t = shape.type_name
    if t == "structure":
        return {m: sample(s, m, depth + 1) for m, s in shape.members.items()}
    if t == "list":
        return [sample(shape.member, name, depth + 1) for _ in range(2)]
    if t in ("integer", "long"):
        return 7
    if t == "boolean":
        return True
    if t == "timestamp":
        return datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    if shape.enum:
        return shape.enum[0]
    return f"{name}-{depth}"


def requests(ops):
    m = model()
    ser = botocore.serialize.EC2Serializer()
    for op in ops:
        if op not in m.operation_names:
            print(json.dumps({"op": op, "not_in_model": True}))
            continue
        o = m.operation_model(op)
        shape = o.input_shape
        full = sample(shape, op)
        required = {k: full[k] for k in shape.required_members}
        cases = [(None, full)] + [
            (name, {**required, name: full[name]}) for name in shape.members
        ]
        for member, params in cases:
            req = ser.serialize_to_request(params, o)
            body = urllib.parse.urlencode(req["body"])
            print(
                json.dumps(
                    {"op": op, "member": member, "params": params, "body": body},
                    default=lambda d: d.isoformat(),
                )
            )


def local(tag):
    return tag.split("}", 1)[-1]


def check_elements(el, shape, path, problems):
    """Every child element of `el` must be a member of structure `shape`."""
    by_name = {}
    for name, s in shape.members.items():
        by_name[s.serialization.get("name", name)] = s
    for child in el:
        tag = local(child.tag)
        s = by_name.get(tag)
        if s is None:
            problems.append(f"{path}/{tag}: not a member of {shape.name}")
            continue
        walk(child, s, f"{path}/{tag}", problems)


def walk(el, shape, path, problems):
    t = shape.type_name
    if t == "structure":
        check_elements(el, shape, path, problems)
    elif t == "list":
        item = shape.member.serialization.get("name", "member")
        for child in el:
            if local(child.tag) != item:
                problems.append(f"{path}/{local(child.tag)}: list items are <{item}>")
            else:
                walk(child, shape.member, f"{path}/{item}", problems)
    elif len(el):
        problems.append(f"{path}: a {t} has child elements")


def normal(v):
    """JSON and parsed values in one form: times as UTC to the millisecond."""
    if isinstance(v, datetime.datetime):
        v = v.astimezone(datetime.timezone.utc)
        return v.replace(microsecond=v.microsecond // 1000 * 1000).isoformat()
    if isinstance(v, dict):
        return {k: normal(x) for k, x in v.items()}
    if isinstance(v, list):
        return [normal(x) for x in v]
    return v


def expected(value, shape):
    """The service's JSON as botocore should read it back: ebsim's own members
    dropped, times parsed."""
    t = shape.type_name
    if t == "structure":
        out = {}
        for k, v in value.items():
            if v is None:
                continue
            if k not in shape.members:
                if k in EBSIM_MEMBERS:
                    continue
                out[k] = ("NOT IN MODEL", v)
                continue
            out[k] = expected(v, shape.members[k])
        return out
    if t == "list":
        return [expected(v, shape.member) for v in value]
    if t == "timestamp":
        return normal(datetime.datetime.fromisoformat(value.replace("Z", "+00:00")))
    if t in ("integer", "long") and isinstance(value, str):
        return int(value)
    return value


def responses(d):
    m = model()
    problems = []
    names = sorted(f[:-4] for f in os.listdir(d) if f.endswith(".xml"))
    if not names:
        problems.append(f"no responses in {d}")
    for name in [n for n in names if n.startswith("error-")]:
        body = open(os.path.join(d, name + ".xml"), "rb").read()
        code = open(os.path.join(d, name + ".code")).read().strip()
        parsed = botocore.parsers.EC2QueryParser().parse(
            {"body": body, "headers": {}, "status_code": 400}, None
        )
        err = parsed.get("Error", {})
        if err.get("Code") != code or not err.get("Message"):
            problems.append(f"{name}: botocore reads {parsed}, expected code {code}")
        if not parsed.get("ResponseMetadata", {}).get("RequestId"):
            problems.append(f"{name}: botocore finds no request id in {parsed}")
    for op in [n for n in names if not n.startswith("error-")]:
        body = open(os.path.join(d, op + ".xml"), "rb").read()
        out = m.operation_model(op).output_shape
        try:
            root = ET.fromstring(body)
        except ET.ParseError as e:
            problems.append(f"{op}: not XML: {e}")
            continue
        if local(root.tag) != op + "Response":
            problems.append(f"{op}: root element is {root.tag}")
        if not root.tag.startswith("{http://ec2.amazonaws.com/doc/2016-11-15/}"):
            problems.append(f"{op}: root element not in EC2's namespace: {root.tag}")
        rest = [c for c in root if local(c.tag) != "requestId"]
        if len(rest) == len(root):
            problems.append(f"{op}: no requestId")
        if out is None:
            if [local(c.tag) for c in rest] != ["return"]:
                problems.append(f"{op}: an operation without output answers <return> only")
            continue
        fake = ET.Element("r")
        fake.extend(rest)
        check_elements(fake, out, op, problems)
        parsed = botocore.parsers.EC2QueryParser().parse(
            {"body": body, "headers": {}, "status_code": 200}, out
        )
        parsed.pop("ResponseMetadata", None)
        want = expected(json.load(open(os.path.join(d, op + ".json"))), out)
        if normal(parsed) != want:
            problems.append(
                f"{op}: botocore reads {json.dumps(normal(parsed), sort_keys=True)}\n"
                f"  the service said   {json.dumps(want, sort_keys=True)}"
            )
    for p in problems:
        print(p)
    sys.exit(1 if problems else 0)


def serialize(service, op):
    """The form body botocore sends for `op` of `service` with the params on stdin."""
    m = botocore.session.get_session().get_service_model(service)
    o = m.operation_model(op)
    ser = botocore.serialize.create_serializer(m.metadata["protocol"])
    req = ser.serialize_to_request(json.load(sys.stdin), o)
    print(urllib.parse.urlencode(req["body"]))


def parse(service, op, path):
    """What botocore reads from the XML response in `path` (status 200)."""
    m = botocore.session.get_session().get_service_model(service)
    o = m.operation_model(op)
    parser = botocore.parsers.create_parser(m.metadata["protocol"])
    body = open(path, "rb").read()
    out = parser.parse({"body": body, "headers": {}, "status_code": 200}, o.output_shape)
    print(json.dumps(out, default=lambda d: d.isoformat()))


if __name__ == "__main__":
    if sys.argv[1] == "requests":
        requests(sys.argv[2:])
    elif sys.argv[1] == "serialize":
        serialize(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "parse":
        parse(sys.argv[2], sys.argv[3], sys.argv[4])
    elif sys.argv[1] == "responses":
        responses(sys.argv[2])
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")
