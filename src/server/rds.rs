//! RDS over the Query protocol (API version 2014-10-31): `Action=CreateDBInstance
//! &Version=2014-10-31&DBInstanceIdentifier=…&Tags.Tag.1.Key=…` in, XML in
//! `http://rds.amazonaws.com/doc/2014-10-31/` out, for the operations of the
//! service layer's RDS table (docs/RDS.md). No HTTP here.
//!
//! The schemas below are written from botocore's rds model: each request's
//! members ebsim takes (a parameter it does not take is `UnknownParameter`),
//! each response's members in the model's order with their list element names
//! (`<DBInstances><DBInstance>`, `<TagList><Tag>`,
//! `<VpcSecurityGroups><VpcSecurityGroupMembership>`). ebsim's own members
//! (`StatusMessage`) are left out of the XML.

use super::query::{
    self, BOOLEAN, Flavour, INTEGER, Member, STRING, Shape, TIMESTAMP, query_response,
};
use crate::error::{Error, ErrorKind};
use crate::service::rds::RdsRequest;
use crate::service::{RequestContext, Services};

pub const NAMESPACE: &str = "http://rds.amazonaws.com/doc/2014-10-31/";
pub const VERSION: &str = "2014-10-31";

const fn m(name: &'static str, shape: &'static Shape) -> Member {
    Member::new(name, name, shape)
}

const fn req(name: &'static str, shape: &'static Shape) -> Member {
    Member::required(name, name, shape)
}

const TAG: Shape = Shape::Structure(&[m("Key", &STRING), m("Value", &STRING)]);
const TAGS: Shape = Shape::List {
    of: &TAG,
    item: "Tag",
};

// ---- requests ---------------------------------------------------------------

const CREATE_DB_INSTANCE: Shape = Shape::Structure(&[
    req("DBInstanceIdentifier", &STRING),
    req("DBInstanceClass", &STRING),
    req("Engine", &STRING),
    m("EngineVersion", &STRING),
    m("AllocatedStorage", &INTEGER),
    m("MasterUsername", &STRING),
    m("MasterUserPassword", &STRING),
    m("DBName", &STRING),
    m("Port", &INTEGER),
    m("BackupRetentionPeriod", &INTEGER),
    m("StorageEncrypted", &BOOLEAN),
    m("KmsKeyId", &STRING),
    m("StorageType", &STRING),
    m("AvailabilityZone", &STRING),
    m("Tags", &TAGS),
    m("DeletionProtection", &BOOLEAN),
    m("CopyTagsToSnapshot", &BOOLEAN),
]);
const DESCRIBE_DB_INSTANCES: Shape = Shape::Structure(&[
    m("DBInstanceIdentifier", &STRING),
    m("MaxRecords", &INTEGER),
    m("Marker", &STRING),
]);
const ONE_INSTANCE: Shape = Shape::Structure(&[
    req("DBInstanceIdentifier", &STRING),
    m("ForceFailover", &BOOLEAN),
    m("DBSnapshotIdentifier", &STRING),
]);
const DELETE_DB_INSTANCE: Shape = Shape::Structure(&[
    req("DBInstanceIdentifier", &STRING),
    m("SkipFinalSnapshot", &BOOLEAN),
    m("FinalDBSnapshotIdentifier", &STRING),
    m("DeleteAutomatedBackups", &BOOLEAN),
]);
const MODIFY_DB_INSTANCE: Shape = Shape::Structure(&[
    req("DBInstanceIdentifier", &STRING),
    m("DBInstanceClass", &STRING),
    m("BackupRetentionPeriod", &INTEGER),
    m("DeletionProtection", &BOOLEAN),
    m("CopyTagsToSnapshot", &BOOLEAN),
    m("ApplyImmediately", &BOOLEAN),
    m("AllocatedStorage", &INTEGER),
    m("MasterUserPassword", &STRING),
]);
const CREATE_DB_SNAPSHOT: Shape = Shape::Structure(&[
    req("DBSnapshotIdentifier", &STRING),
    req("DBInstanceIdentifier", &STRING),
    m("Tags", &TAGS),
]);
const DESCRIBE_DB_SNAPSHOTS: Shape = Shape::Structure(&[
    m("DBSnapshotIdentifier", &STRING),
    m("DBInstanceIdentifier", &STRING),
    m("SnapshotType", &STRING),
    m("MaxRecords", &INTEGER),
    m("Marker", &STRING),
]);
const DELETE_DB_SNAPSHOT: Shape = Shape::Structure(&[req("DBSnapshotIdentifier", &STRING)]);
const COPY_DB_SNAPSHOT: Shape = Shape::Structure(&[
    req("SourceDBSnapshotIdentifier", &STRING),
    req("TargetDBSnapshotIdentifier", &STRING),
    m("KmsKeyId", &STRING),
    m("Tags", &TAGS),
    m("CopyTags", &BOOLEAN),
    // What SDKs send for a copy from another region (the source's region is
    // in the source's ARN; the presigned request is not needed on one data root).
    m("PreSignedUrl", &STRING),
    m("SourceRegion", &STRING),
    m("DestinationRegion", &STRING),
]);
const RESTORE_FROM_SNAPSHOT: Shape = Shape::Structure(&[
    req("DBInstanceIdentifier", &STRING),
    m("DBSnapshotIdentifier", &STRING),
    m("DBInstanceClass", &STRING),
    m("Port", &INTEGER),
    m("AvailabilityZone", &STRING),
    m("Tags", &TAGS),
    m("DeletionProtection", &BOOLEAN),
    m("BackupRetentionPeriod", &INTEGER),
]);

const CREATE_READ_REPLICA: Shape = Shape::Structure(&[
    req("DBInstanceIdentifier", &STRING),
    req("SourceDBInstanceIdentifier", &STRING),
    m("DBInstanceClass", &STRING),
    m("Port", &INTEGER),
    m("AvailabilityZone", &STRING),
    m("KmsKeyId", &STRING),
    m("Tags", &TAGS),
    m("DeletionProtection", &BOOLEAN),
    m("PreSignedUrl", &STRING),
    m("SourceRegion", &STRING),
    m("DestinationRegion", &STRING),
]);
const PROMOTE_READ_REPLICA: Shape = Shape::Structure(&[
    req("DBInstanceIdentifier", &STRING),
    m("BackupRetentionPeriod", &INTEGER),
]);

// ---- responses --------------------------------------------------------------

const ENDPOINT: Shape = Shape::Structure(&[
    m("Address", &STRING),
    m("Port", &INTEGER),
    m("HostedZoneId", &STRING),
]);
const DB_SECURITY_GROUPS: Shape = Shape::List {
    of: &Shape::Structure(&[m("DBSecurityGroupName", &STRING), m("Status", &STRING)]),
    item: "DBSecurityGroup",
};
const VPC_SECURITY_GROUPS: Shape = Shape::List {
    of: &Shape::Structure(&[m("VpcSecurityGroupId", &STRING), m("Status", &STRING)]),
    item: "VpcSecurityGroupMembership",
};
const DB_PARAMETER_GROUPS: Shape = Shape::List {
    of: &Shape::Structure(&[
        m("DBParameterGroupName", &STRING),
        m("ParameterApplyStatus", &STRING),
    ]),
    item: "DBParameterGroup",
};
const REPLICA_IDS: Shape = Shape::List {
    of: &STRING,
    item: "ReadReplicaDBInstanceIdentifier",
};

pub const DB_INSTANCE: Shape = Shape::Structure(&[
    m("DBInstanceIdentifier", &STRING),
    m("DBInstanceClass", &STRING),
    m("Engine", &STRING),
    m("DBInstanceStatus", &STRING),
    m("MasterUsername", &STRING),
    m("DBName", &STRING),
    m("Endpoint", &ENDPOINT),
    m("AllocatedStorage", &INTEGER),
    m("InstanceCreateTime", &TIMESTAMP),
    m("PreferredBackupWindow", &STRING),
    m("BackupRetentionPeriod", &INTEGER),
    m("DBSecurityGroups", &DB_SECURITY_GROUPS),
    m("VpcSecurityGroups", &VPC_SECURITY_GROUPS),
    m("DBParameterGroups", &DB_PARAMETER_GROUPS),
    m("AvailabilityZone", &STRING),
    m("PreferredMaintenanceWindow", &STRING),
    m("PendingModifiedValues", &Shape::Structure(&[])),
    m("MultiAZ", &BOOLEAN),
    m("EngineVersion", &STRING),
    m("AutoMinorVersionUpgrade", &BOOLEAN),
    m("ReadReplicaSourceDBInstanceIdentifier", &STRING),
    m("ReadReplicaDBInstanceIdentifiers", &REPLICA_IDS),
    m("LicenseModel", &STRING),
    m("PubliclyAccessible", &BOOLEAN),
    m("StorageType", &STRING),
    m("StorageEncryptionType", &STRING),
    m("DbInstancePort", &INTEGER),
    m("StorageEncrypted", &BOOLEAN),
    m("KmsKeyId", &STRING),
    m("DbiResourceId", &STRING),
    m("CopyTagsToSnapshot", &BOOLEAN),
    m("DBInstanceArn", &STRING),
    m("IAMDatabaseAuthenticationEnabled", &BOOLEAN),
    m("DeletionProtection", &BOOLEAN),
    m("TagList", &TAGS),
]);

pub const DB_SNAPSHOT: Shape = Shape::Structure(&[
    m("DBSnapshotIdentifier", &STRING),
    m("DBInstanceIdentifier", &STRING),
    m("SnapshotCreateTime", &TIMESTAMP),
    m("Engine", &STRING),
    m("AllocatedStorage", &INTEGER),
    m("Status", &STRING),
    m("Port", &INTEGER),
    m("AvailabilityZone", &STRING),
    m("InstanceCreateTime", &TIMESTAMP),
    m("MasterUsername", &STRING),
    m("EngineVersion", &STRING),
    m("LicenseModel", &STRING),
    m("SnapshotType", &STRING),
    m("PercentProgress", &INTEGER),
    m("SourceRegion", &STRING),
    m("SourceDBSnapshotIdentifier", &STRING),
    m("StorageType", &STRING),
    m("Encrypted", &BOOLEAN),
    m("StorageEncryptionType", &STRING),
    m("KmsKeyId", &STRING),
    m("DBSnapshotArn", &STRING),
    m("IAMDatabaseAuthenticationEnabled", &BOOLEAN),
    m("DbiResourceId", &STRING),
    m("TagList", &TAGS),
    m("SnapshotTarget", &STRING),
    m("OriginalSnapshotCreateTime", &TIMESTAMP),
]);

const INSTANCE_RESULT: Shape = Shape::Structure(&[m("DBInstance", &DB_INSTANCE)]);
const INSTANCES_RESULT: Shape = Shape::Structure(&[
    m("Marker", &STRING),
    m(
        "DBInstances",
        &Shape::List {
            of: &DB_INSTANCE,
            item: "DBInstance",
        },
    ),
]);
const SNAPSHOT_RESULT: Shape = Shape::Structure(&[m("DBSnapshot", &DB_SNAPSHOT)]);
const SNAPSHOTS_RESULT: Shape = Shape::Structure(&[
    m("Marker", &STRING),
    m(
        "DBSnapshots",
        &Shape::List {
            of: &DB_SNAPSHOT,
            item: "DBSnapshot",
        },
    ),
]);

/// Each operation's request and result shapes.
fn schema(action: &str) -> Option<(&'static Shape, &'static Shape)> {
    Some(match action {
        "CreateDBInstance" => (&CREATE_DB_INSTANCE, &INSTANCE_RESULT),
        "DescribeDBInstances" => (&DESCRIBE_DB_INSTANCES, &INSTANCES_RESULT),
        "StopDBInstance" | "StartDBInstance" | "RebootDBInstance" => {
            (&ONE_INSTANCE, &INSTANCE_RESULT)
        }
        "DeleteDBInstance" => (&DELETE_DB_INSTANCE, &INSTANCE_RESULT),
        "ModifyDBInstance" => (&MODIFY_DB_INSTANCE, &INSTANCE_RESULT),
        "CreateDBSnapshot" => (&CREATE_DB_SNAPSHOT, &SNAPSHOT_RESULT),
        "DescribeDBSnapshots" => (&DESCRIBE_DB_SNAPSHOTS, &SNAPSHOTS_RESULT),
        "DeleteDBSnapshot" => (&DELETE_DB_SNAPSHOT, &SNAPSHOT_RESULT),
        "CopyDBSnapshot" => (&COPY_DB_SNAPSHOT, &SNAPSHOT_RESULT),
        "RestoreDBInstanceFromDBSnapshot" => (&RESTORE_FROM_SNAPSHOT, &INSTANCE_RESULT),
        "CreateDBInstanceReadReplica" => (&CREATE_READ_REPLICA, &INSTANCE_RESULT),
        "PromoteReadReplica" => (&PROMOTE_READ_REPLICA, &INSTANCE_RESULT),
        _ => return None,
    })
}

/// Runs one RDS request (its parameters: the query string's and the form
/// body's); the operation's name and its XML response.
pub fn call(
    services: &Services,
    ctx: &RequestContext,
    params: &[(String, String)],
    request_id: &str,
) -> Result<(String, String), Error> {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let action = get("Action").ok_or_else(|| {
        Error::new(
            ErrorKind::MissingAction,
            "The request must contain the parameter Action",
        )
    })?;
    if let Some(v) = get("Version")
        && v != VERSION
    {
        return Err(Error::new(
            ErrorKind::InvalidParameterValue,
            format!("Unsupported Version '{v}' (RDS's is {VERSION})"),
        ));
    }
    let Some((input, output)) = schema(action) else {
        return Err(Error::new(
            ErrorKind::InvalidAction,
            format!("The action {action} is not valid for this web service."),
        ));
    };
    let members: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "Action" && k != "Version" && !k.starts_with("X-Amz-"))
        .cloned()
        .collect();
    let body = query::decode(&members, input, Flavour::Query)?;
    let req = RdsRequest::from_json(action, body)?;
    let out = services.rds(ctx, req)?;
    let encoded = query_response(action, NAMESPACE, request_id, Some(output), &out);
    Ok((action.to_string(), encoded.xml))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn requests_decode_with_rds_s_list_names_and_types() {
        let p = params(&[
            ("DBInstanceIdentifier", "db1"),
            ("DBInstanceClass", "db.t3.micro"),
            ("Engine", "postgres"),
            ("AllocatedStorage", "20"),
            ("StorageEncrypted", "true"),
            ("Tags.Tag.1.Key", "team"),
            ("Tags.Tag.1.Value", "data"),
        ]);
        let v = query::decode(&p, &CREATE_DB_INSTANCE, Flavour::Query).unwrap();
        assert_eq!(v["AllocatedStorage"], 20);
        assert_eq!(v["StorageEncrypted"], true);
        assert_eq!(v["Tags"][0]["Key"], "team");
        let unknown = params(&[("DBInstanceIdentifier", "db1"), ("Nope", "x")]);
        let e = query::decode(&unknown, &DESCRIBE_DB_INSTANCES, Flavour::Query).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnknownParameter);
    }

    #[test]
    fn responses_use_the_model_s_element_names() {
        let v = serde_json::json!({"DBInstances": [{
            "DBInstanceIdentifier": "db1",
            "Endpoint": {"Address": "127.0.0.1", "Port": 5432},
            "VpcSecurityGroups": [],
            "TagList": [{"Key": "a", "Value": "b"}],
            "StorageEncrypted": true,
            "StatusMessage": "ebsim's own",
        }]});
        let e = query_response(
            "DescribeDBInstances",
            NAMESPACE,
            "rid",
            Some(&INSTANCES_RESULT),
            &v,
        );
        assert!(e.xml.contains("<DescribeDBInstancesResponse xmlns=\"http://rds.amazonaws.com/doc/2014-10-31/\"><DescribeDBInstancesResult><DBInstances><DBInstance><DBInstanceIdentifier>db1</DBInstanceIdentifier><Endpoint><Address>127.0.0.1</Address><Port>5432</Port></Endpoint>"), "{}", e.xml);
        assert!(
            e.xml
                .contains("<TagList><Tag><Key>a</Key><Value>b</Value></Tag></TagList>"),
            "{}",
            e.xml
        );
        assert!(e.xml.contains("<StorageEncrypted>true</StorageEncrypted>"));
        assert!(!e.xml.contains("StatusMessage"));
        assert_eq!(e.left_out, ["DBInstances[0].StatusMessage"]);
    }
}
