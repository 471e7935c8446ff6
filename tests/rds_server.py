"""RDS over `ebsim serve` with boto3 (tests/rds_server.rs starts the server and
runs this): SigV4-signed Query requests, botocore's parser and waiters, a real
PostgreSQL client against the instances. Prints `ok` last."""
import os
import subprocess
import sys

import boto3
import botocore

endpoint = os.environ["EBSIM_ENDPOINT"]
pw = os.environ["EBSIM_PASSWORD"]
port, west_port = int(os.environ["EBSIM_PORT"]), int(os.environ["EBSIM_WEST_PORT"])
marker = "ebsim-wire-row"


def client(region):
    return boto3.client("rds", endpoint_url=endpoint, region_name=region)


def psql(p, sql):
    out = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", str(p), "-U", "dbadmin", "-d", "postgres", "-Atc", sql],
        env={**os.environ, "PGPASSWORD": pw}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def error(f, **kw):
    try:
        f(**kw)
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Message"]
    raise AssertionError(f"{f.__name__} succeeded")


east, west = client("us-east-1"), client("us-west-2")
r = east.create_db_instance(
    DBInstanceIdentifier="wire-db", DBInstanceClass="db.t3.micro", Engine="postgres",
    AllocatedStorage=20, MasterUsername="dbadmin", MasterUserPassword=pw,
    StorageEncrypted=True, Port=port, Tags=[{"Key": "team", "Value": "data"}])["DBInstance"]
assert r["DBInstanceStatus"] == "creating", r
east.get_waiter("db_instance_available").wait(DBInstanceIdentifier="wire-db", WaiterConfig={"Delay": 1})
d = east.describe_db_instances(DBInstanceIdentifier="wire-db")["DBInstances"][0]
assert d["StorageEncrypted"] is True and d["StorageEncryptionType"] == "sse-kms", d
assert d["Endpoint"] == {"Address": "127.0.0.1", "Port": port}, d
assert d["TagList"] == [{"Key": "team", "Value": "data"}], d
assert d["DBInstanceArn"] == "arn:aws:rds:us-east-1:111122223333:db:wire-db", d
assert d["KmsKeyId"].startswith("arn:aws:kms:us-east-1:"), d
assert d["VpcSecurityGroups"] == [] and d["DBParameterGroups"][0]["DBParameterGroupName"] == "default.postgres15"
psql(port, f"create table t(x text); insert into t select '{marker} ' || g from generate_series(1, 500) g")

s = east.create_db_snapshot(DBSnapshotIdentifier="wire-snap", DBInstanceIdentifier="wire-db")["DBSnapshot"]
assert s["Encrypted"] is True and s["Status"] == "creating", s
east.get_waiter("db_snapshot_available").wait(DBSnapshotIdentifier="wire-snap", WaiterConfig={"Delay": 1})

# Across regions: botocore presigns the source region's request (SourceRegion).
west_key = boto3.client("kms", endpoint_url=endpoint, region_name="us-west-2").create_key()["KeyMetadata"]["Arn"]
arn = "arn:aws:rds:us-east-1:111122223333:snapshot:wire-snap"
code, status, msg = error(west.copy_db_snapshot, SourceDBSnapshotIdentifier=arn,
                          TargetDBSnapshotIdentifier="wire-west", SourceRegion="us-east-1")
assert code == "InvalidParameterCombination" and status == 400, (code, msg)
c = west.copy_db_snapshot(SourceDBSnapshotIdentifier=arn, TargetDBSnapshotIdentifier="wire-west",
                          KmsKeyId=west_key, SourceRegion="us-east-1")["DBSnapshot"]
assert c["KmsKeyId"] == west_key and c["SourceRegion"] == "us-east-1", c
west.restore_db_instance_from_db_snapshot(DBInstanceIdentifier="wire-west-db", DBSnapshotIdentifier="wire-west", Port=west_port)
west.get_waiter("db_instance_available").wait(DBInstanceIdentifier="wire-west-db", WaiterConfig={"Delay": 1})
assert psql(west_port, "select count(*) from t") == "500"
w = west.describe_db_instances(DBInstanceIdentifier="wire-west-db")["DBInstances"][0]
assert w["KmsKeyId"] == west_key, w

# A read replica through the wire: it streams the source's rows.
rep_port = int(os.environ["EBSIM_REPLICA_PORT"])
rr = east.create_db_instance_read_replica(DBInstanceIdentifier="wire-rep", SourceDBInstanceIdentifier="wire-db", Port=rep_port)["DBInstance"]
assert rr["ReadReplicaSourceDBInstanceIdentifier"] == "wire-db", rr
east.get_waiter("db_instance_available").wait(DBInstanceIdentifier="wire-rep", WaiterConfig={"Delay": 1})
src = east.describe_db_instances(DBInstanceIdentifier="wire-db")["DBInstances"][0]
assert src["ReadReplicaDBInstanceIdentifiers"] == ["wire-rep"], src
assert psql(rep_port, "select count(*) from t") == "500"
assert east.promote_read_replica(DBInstanceIdentifier="wire-rep")["DBInstance"]["DBInstanceStatus"] == "modifying"
assert "ReadReplicaSourceDBInstanceIdentifier" not in east.describe_db_instances(DBInstanceIdentifier="wire-rep")["DBInstances"][0]
east.delete_db_instance(DBInstanceIdentifier="wire-rep", SkipFinalSnapshot=True)

# Errors in RDS's codes and statuses.
code, status, msg = error(east.describe_db_instances, DBInstanceIdentifier="nope")
assert (code, status) == ("DBInstanceNotFound", 404) and msg == "DBInstance nope not found.", (code, status, msg)
code, status, _ = error(east.describe_db_snapshots, DBSnapshotIdentifier="nope")
assert (code, status) == ("DBSnapshotNotFound", 404), code
code, _, msg = error(east.delete_db_instance, DBInstanceIdentifier="wire-db")
assert code == "InvalidParameterCombination", (code, msg)
code, _, _ = error(east.create_db_instance, DBInstanceIdentifier="wire-db", DBInstanceClass="db.t3.micro",
                   Engine="postgres", AllocatedStorage=20, MasterUsername="dbadmin", MasterUserPassword=pw, Port=port + 1)
assert code == "DBInstanceAlreadyExists", code

# Stop and start through the wire; paginated describe.
assert east.stop_db_instance(DBInstanceIdentifier="wire-db")["DBInstance"]["DBInstanceStatus"] == "stopping"
assert east.describe_db_instances(DBInstanceIdentifier="wire-db")["DBInstances"][0]["DBInstanceStatus"] == "stopped"
east.start_db_instance(DBInstanceIdentifier="wire-db")
east.get_waiter("db_instance_available").wait(DBInstanceIdentifier="wire-db", WaiterConfig={"Delay": 1})
assert psql(port, "select count(*) from t") == "500"
pages = list(east.get_paginator("describe_db_instances").paginate())
assert [i["DBInstanceIdentifier"] for p in pages for i in p["DBInstances"]] == ["wire-db"]

for cl, db in [(east, "wire-db"), (west, "wire-west-db")]:
    assert cl.delete_db_instance(DBInstanceIdentifier=db, SkipFinalSnapshot=True)["DBInstance"]["DBInstanceStatus"] == "deleting"
    cl.get_waiter("db_instance_deleted").wait(DBInstanceIdentifier=db, WaiterConfig={"Delay": 1})
assert east.delete_db_snapshot(DBSnapshotIdentifier="wire-snap")["DBSnapshot"]["Status"] == "deleted"
print("ok")
