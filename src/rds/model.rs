//! RDS's shapes with the member names of botocore's rds model (2014-10-31), and
//! the record ebsim keeps per DB instance.

use crate::clock::Timestamp;
use crate::ec2::model::Tag;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The statuses a DB instance passes through (RDS's `DBInstanceStatus`).
pub mod status {
    pub const CREATING: &str = "creating";
    pub const AVAILABLE: &str = "available";
    pub const STOPPING: &str = "stopping";
    pub const STOPPED: &str = "stopped";
    pub const STARTING: &str = "starting";
    pub const REBOOTING: &str = "rebooting";
    pub const DELETING: &str = "deleting";
    /// What ebsim shows when the operation that held an instance's lock died
    /// (its process was killed) or its server or storage went away.
    pub const FAILED: &str = "failed";
    /// The instance's KMS key is disabled or pending deletion: its server is
    /// stopped and its storage detached; re-enable the key, then start it.
    pub const KEY_RECOVERABLE: &str = "inaccessible-encryption-credentials-recoverable";
    /// The key stayed unusable for 7 days (or was deleted): only a restore
    /// from a snapshot under a usable key brings the data back.
    pub const KEY_LOST: &str = "inaccessible-encryption-credentials";

    /// Statuses an operation in progress holds (with the instance's lock).
    pub const BACKING_UP: &str = "backing-up";
    pub const MODIFYING: &str = "modifying";
    pub const TRANSITIONAL: &[&str] = &[
        CREATING, STOPPING, STARTING, REBOOTING, DELETING, BACKING_UP, MODIFYING,
    ];
}

/// One DB instance, as stored in `regions/<region>/rds/rds.db`. Nothing here is
/// secret: the master password is never kept (PostgreSQL holds its SCRAM
/// verifier on the encrypted volume).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbInstanceRecord {
    /// Lowercase, as RDS stores it.
    pub identifier: String,
    /// `db-` and 26 upper-case letters and digits: the instance's immutable id.
    pub resource_id: String,
    pub class: String,
    pub engine: String,
    pub engine_version: String,
    pub status: String,
    /// When `status` was last set (the clock's time).
    pub status_time: Timestamp,
    pub master_username: String,
    pub db_name: Option<String>,
    /// GiB.
    pub allocated_storage: u32,
    pub storage_type: String,
    pub port: u16,
    pub backup_retention_period: u32,
    pub storage_encrypted: bool,
    /// The KMS key's ARN (encrypted instances).
    pub kms_key_id: Option<String>,
    /// The storage volume in RDS's own volume service (`VolumeOwner::RDS`).
    pub volume_id: Option<String>,
    pub availability_zone: String,
    pub create_time: Timestamp,
    pub tags: Vec<Tag>,
    pub deletion_protection: bool,
    pub copy_tags_to_snapshot: bool,
    /// Why the instance is `failed` (ebsim's own member, `StatusMessage`).
    #[serde(default)]
    pub status_message: Option<String>,
    /// A read replica's source: its identifier (same region) or ARN.
    #[serde(default)]
    pub read_replica_source: Option<String>,
    /// This instance's read replicas: identifiers (same region) or ARNs.
    #[serde(default)]
    pub replicas: Vec<String>,
    /// Since when its KMS key has been unusable (the 7 days to the terminal
    /// state count from here, whatever the instance does meanwhile).
    #[serde(default)]
    pub key_unusable_since: Option<Timestamp>,
}

impl DbInstanceRecord {
    pub fn is_transitional(&self) -> bool {
        status::TRANSITIONAL.contains(&self.status.as_str())
    }
}

/// One DB snapshot, as stored in `rds.db`: what restoring it needs besides its
/// storage snapshot (an EBS snapshot in RDS's volume service).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbSnapshotRecord {
    /// Lowercase, as RDS stores it.
    pub identifier: String,
    pub instance_identifier: String,
    /// The DbiResourceId of the instance it was taken of.
    pub resource_id: String,
    /// `manual` (CreateDBSnapshot, CopyDBSnapshot) or `automated`.
    pub snapshot_type: String,
    /// `creating`, `available`, `copying`, `failed`.
    pub status: String,
    pub create_time: Timestamp,
    pub instance_create_time: Timestamp,
    pub engine_version: String,
    pub master_username: String,
    pub db_name: Option<String>,
    pub allocated_storage: u32,
    pub storage_type: String,
    pub port: u16,
    pub availability_zone: String,
    pub encrypted: bool,
    pub kms_key_id: Option<String>,
    /// The EBS snapshot of the instance's storage (`snap-…`).
    pub storage_snapshot_id: Option<String>,
    /// A copy's source: its region and ARN.
    pub source_region: Option<String>,
    pub source_snapshot_arn: Option<String>,
    pub tags: Vec<Tag>,
    /// The instance's class, which a restore defaults to (not a DBSnapshot member).
    pub class: String,
    /// When the first snapshot of a chain of copies was made.
    #[serde(default)]
    pub original_create_time: Option<Timestamp>,
}

/// `arn:aws:rds:REGION:ACCOUNT:snapshot:IDENTIFIER`.
pub fn snapshot_arn(region: &str, account: &str, identifier: &str) -> String {
    format!("arn:aws:rds:{region}:{account}:snapshot:{identifier}")
}

/// The DBSnapshot shape (members in the model's order).
pub fn db_snapshot(s: &DbSnapshotRecord, region: &str, account: &str) -> Value {
    let mut m = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    put("DBSnapshotIdentifier", json!(s.identifier));
    put("DBInstanceIdentifier", json!(s.instance_identifier));
    put(
        "SnapshotCreateTime",
        json!(crate::clock::iso8601(&s.create_time)),
    );
    put("Engine", json!("postgres"));
    put("AllocatedStorage", json!(s.allocated_storage));
    put("Status", json!(s.status));
    put("Port", json!(s.port));
    put("AvailabilityZone", json!(s.availability_zone));
    put(
        "InstanceCreateTime",
        json!(crate::clock::iso8601(&s.instance_create_time)),
    );
    put("MasterUsername", json!(s.master_username));
    put("EngineVersion", json!(s.engine_version));
    put("LicenseModel", json!("postgresql-license"));
    put("SnapshotType", json!(s.snapshot_type));
    put(
        "PercentProgress",
        json!(if s.status == "available" { 100 } else { 0 }),
    );
    if let Some(r) = &s.source_region {
        put("SourceRegion", json!(r));
    }
    if let Some(a) = &s.source_snapshot_arn {
        put("SourceDBSnapshotIdentifier", json!(a));
    }
    put("StorageType", json!(s.storage_type));
    put("Encrypted", json!(s.encrypted));
    put(
        "StorageEncryptionType",
        json!(if s.encrypted { "sse-kms" } else { "none" }),
    );
    if let Some(k) = &s.kms_key_id {
        put("KmsKeyId", json!(k));
    }
    put(
        "DBSnapshotArn",
        json!(snapshot_arn(region, account, &s.identifier)),
    );
    put("IAMDatabaseAuthenticationEnabled", json!(false));
    put("DbiResourceId", json!(s.resource_id));
    put("TagList", json!(s.tags));
    put("SnapshotTarget", json!("region"));
    put(
        "OriginalSnapshotCreateTime",
        json!(crate::clock::iso8601(
            s.original_create_time.as_ref().unwrap_or(&s.create_time)
        )),
    );
    Value::Object(m)
}

/// CreateDBSnapshot's request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CreateDbSnapshotRequest {
    #[serde(rename = "DBSnapshotIdentifier")]
    pub db_snapshot_identifier: String,
    #[serde(rename = "DBInstanceIdentifier")]
    pub db_instance_identifier: String,
    #[serde(rename = "Tags")]
    pub tags: Vec<Tag>,
}

/// DescribeDBSnapshots's request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DescribeDbSnapshotsRequest {
    #[serde(rename = "DBSnapshotIdentifier")]
    pub db_snapshot_identifier: Option<String>,
    #[serde(rename = "DBInstanceIdentifier")]
    pub db_instance_identifier: Option<String>,
    #[serde(rename = "SnapshotType")]
    pub snapshot_type: Option<String>,
    #[serde(rename = "MaxRecords", deserialize_with = "int_from_any")]
    pub max_records: Option<i64>,
    #[serde(rename = "Marker")]
    pub marker: Option<String>,
}

/// DeleteDBSnapshot's request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DeleteDbSnapshotRequest {
    #[serde(rename = "DBSnapshotIdentifier")]
    pub db_snapshot_identifier: String,
}

/// CopyDBSnapshot's request. `SourceRegion` is not in the model: SDKs and the
/// AWS CLI take it and send a presigned URL instead; ebsim reads the region
/// from the source's ARN, and takes `SourceRegion` as the CLI gives it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CopyDbSnapshotRequest {
    #[serde(rename = "SourceDBSnapshotIdentifier")]
    pub source_db_snapshot_identifier: String,
    #[serde(rename = "TargetDBSnapshotIdentifier")]
    pub target_db_snapshot_identifier: String,
    #[serde(rename = "KmsKeyId")]
    pub kms_key_id: Option<String>,
    #[serde(rename = "Tags")]
    pub tags: Vec<Tag>,
    #[serde(rename = "CopyTags", deserialize_with = "bool_from_any")]
    pub copy_tags: Option<bool>,
    #[serde(rename = "SourceRegion")]
    pub source_region: Option<String>,
    #[serde(rename = "PreSignedUrl")]
    pub pre_signed_url: Option<String>,
}

/// RestoreDBInstanceFromDBSnapshot's request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RestoreDbInstanceFromDbSnapshotRequest {
    #[serde(rename = "DBInstanceIdentifier")]
    pub db_instance_identifier: String,
    #[serde(rename = "DBSnapshotIdentifier")]
    pub db_snapshot_identifier: String,
    #[serde(rename = "DBInstanceClass")]
    pub db_instance_class: Option<String>,
    #[serde(rename = "Port", deserialize_with = "int_from_any")]
    pub port: Option<i64>,
    #[serde(rename = "AvailabilityZone")]
    pub availability_zone: Option<String>,
    #[serde(rename = "Tags")]
    pub tags: Vec<Tag>,
    #[serde(rename = "DeletionProtection", deserialize_with = "bool_from_any")]
    pub deletion_protection: Option<bool>,
    #[serde(rename = "BackupRetentionPeriod", deserialize_with = "int_from_any")]
    pub backup_retention_period: Option<i64>,
}

/// CreateDBInstanceReadReplica's request (the members ebsim takes).
/// `SourceRegion` is the SDKs' (they presign instead); the source's region is
/// in its ARN.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CreateReadReplicaRequest {
    #[serde(rename = "DBInstanceIdentifier")]
    pub db_instance_identifier: String,
    #[serde(rename = "SourceDBInstanceIdentifier")]
    pub source_db_instance_identifier: String,
    #[serde(rename = "DBInstanceClass")]
    pub db_instance_class: Option<String>,
    #[serde(rename = "Port", deserialize_with = "int_from_any")]
    pub port: Option<i64>,
    #[serde(rename = "AvailabilityZone")]
    pub availability_zone: Option<String>,
    #[serde(rename = "KmsKeyId")]
    pub kms_key_id: Option<String>,
    #[serde(rename = "Tags")]
    pub tags: Vec<Tag>,
    #[serde(rename = "DeletionProtection", deserialize_with = "bool_from_any")]
    pub deletion_protection: Option<bool>,
    #[serde(rename = "SourceRegion")]
    pub source_region: Option<String>,
    #[serde(rename = "PreSignedUrl")]
    pub pre_signed_url: Option<String>,
}

/// PromoteReadReplica's request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PromoteReadReplicaRequest {
    #[serde(rename = "DBInstanceIdentifier")]
    pub db_instance_identifier: String,
    #[serde(rename = "BackupRetentionPeriod", deserialize_with = "int_from_any")]
    pub backup_retention_period: Option<i64>,
}

/// `arn:aws:rds:REGION:ACCOUNT:db:IDENTIFIER`.
pub fn instance_arn(region: &str, account: &str, identifier: &str) -> String {
    format!("arn:aws:rds:{region}:{account}:db:{identifier}")
}

/// The DBInstance shape (members in the model's order, those RDS omits while
/// they mean nothing left out: Endpoint until the instance is first available).
pub fn db_instance(r: &DbInstanceRecord, region: &str, account: &str) -> Value {
    let mut m = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    put("DBInstanceIdentifier", json!(r.identifier));
    put("DBInstanceClass", json!(r.class));
    put("Engine", json!(r.engine));
    put("DBInstanceStatus", json!(r.status));
    put("MasterUsername", json!(r.master_username));
    if let Some(n) = &r.db_name {
        put("DBName", json!(n));
    }
    if r.status != status::CREATING {
        put(
            "Endpoint",
            json!({ "Address": "127.0.0.1", "Port": r.port }),
        );
    }
    put("AllocatedStorage", json!(r.allocated_storage));
    put(
        "InstanceCreateTime",
        json!(crate::clock::iso8601(&r.create_time)),
    );
    put("PreferredBackupWindow", json!("03:00-03:30"));
    put("BackupRetentionPeriod", json!(r.backup_retention_period));
    put("DBSecurityGroups", json!([]));
    put("VpcSecurityGroups", json!([]));
    put(
        "DBParameterGroups",
        json!([{ "DBParameterGroupName": "default.postgres15", "ParameterApplyStatus": "in-sync" }]),
    );
    put("AvailabilityZone", json!(r.availability_zone));
    put("PreferredMaintenanceWindow", json!("sun:05:00-sun:05:30"));
    put("PendingModifiedValues", json!({}));
    put("MultiAZ", json!(false));
    put("EngineVersion", json!(r.engine_version));
    put("AutoMinorVersionUpgrade", json!(true));
    if let Some(src) = &r.read_replica_source {
        put("ReadReplicaSourceDBInstanceIdentifier", json!(src));
    }
    put("ReadReplicaDBInstanceIdentifiers", json!(r.replicas));
    put("LicenseModel", json!("postgresql-license"));
    put("PubliclyAccessible", json!(false));
    put("StorageType", json!(r.storage_type));
    put(
        "StorageEncryptionType",
        json!(if r.storage_encrypted {
            "sse-kms"
        } else {
            "none"
        }),
    );
    put("DbInstancePort", json!(0));
    put("StorageEncrypted", json!(r.storage_encrypted));
    if let Some(k) = &r.kms_key_id {
        put("KmsKeyId", json!(k));
    }
    put("DbiResourceId", json!(r.resource_id));
    put("CopyTagsToSnapshot", json!(r.copy_tags_to_snapshot));
    put(
        "DBInstanceArn",
        json!(instance_arn(region, account, &r.identifier)),
    );
    put("IAMDatabaseAuthenticationEnabled", json!(false));
    put("DeletionProtection", json!(r.deletion_protection));
    put("TagList", json!(r.tags));
    if let Some(msg) = &r.status_message {
        // ebsim's own member: why the instance is failed.
        put("StatusMessage", json!(msg));
    }
    Value::Object(m)
}

fn bool_from_any<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    // The Query protocol and the CLI send booleans as strings ("true").
    let v = Option::<Value>::deserialize(d)?;
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected a boolean, not {other}"
        ))),
    }
}

fn int_from_any<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("expected an integer, not {n}"))),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("expected an integer, not {s:?}"))),
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected an integer, not {other}"
        ))),
    }
}

fn secret_string<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<zeroize::Zeroizing<String>>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(zeroize::Zeroizing::new))
}

/// CreateDBInstance's request (the members ebsim uses; the model's others are
/// accepted by the front ends and ignored).
#[derive(Clone, Default, Deserialize)]
#[serde(default)]
pub struct CreateDbInstanceRequest {
    #[serde(rename = "DBInstanceIdentifier")]
    pub db_instance_identifier: String,
    #[serde(rename = "DBInstanceClass")]
    pub db_instance_class: String,
    #[serde(rename = "Engine")]
    pub engine: String,
    #[serde(rename = "EngineVersion")]
    pub engine_version: Option<String>,
    #[serde(rename = "AllocatedStorage", deserialize_with = "int_from_any")]
    pub allocated_storage: Option<i64>,
    #[serde(rename = "MasterUsername")]
    pub master_username: Option<String>,
    /// Zeroized when the request is dropped; never recorded.
    #[serde(rename = "MasterUserPassword", deserialize_with = "secret_string")]
    pub master_user_password: Option<zeroize::Zeroizing<String>>,
    #[serde(rename = "DBName")]
    pub db_name: Option<String>,
    #[serde(rename = "Port", deserialize_with = "int_from_any")]
    pub port: Option<i64>,
    #[serde(rename = "BackupRetentionPeriod", deserialize_with = "int_from_any")]
    pub backup_retention_period: Option<i64>,
    #[serde(rename = "StorageEncrypted", deserialize_with = "bool_from_any")]
    pub storage_encrypted: Option<bool>,
    #[serde(rename = "KmsKeyId")]
    pub kms_key_id: Option<String>,
    #[serde(rename = "StorageType")]
    pub storage_type: Option<String>,
    #[serde(rename = "AvailabilityZone")]
    pub availability_zone: Option<String>,
    #[serde(rename = "Tags")]
    pub tags: Vec<Tag>,
    #[serde(rename = "DeletionProtection", deserialize_with = "bool_from_any")]
    pub deletion_protection: Option<bool>,
    #[serde(rename = "CopyTagsToSnapshot", deserialize_with = "bool_from_any")]
    pub copy_tags_to_snapshot: Option<bool>,
    /// ebsim's: the source of a read replica being made (never from the wire).
    #[serde(skip)]
    pub replica_of: Option<String>,
}

impl std::fmt::Debug for CreateDbInstanceRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateDbInstanceRequest")
            .field("db_instance_identifier", &self.db_instance_identifier)
            .field("engine", &self.engine)
            .field(
                "master_user_password",
                &self.master_user_password.as_ref().map(|_| "****"),
            )
            .finish_non_exhaustive()
    }
}

/// DescribeDBInstances's request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DescribeDbInstancesRequest {
    #[serde(rename = "DBInstanceIdentifier")]
    pub db_instance_identifier: Option<String>,
    #[serde(rename = "MaxRecords", deserialize_with = "int_from_any")]
    pub max_records: Option<i64>,
    #[serde(rename = "Marker")]
    pub marker: Option<String>,
}

/// The request of the operations that name one instance (Stop, Start, Reboot).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DbInstanceRequest {
    #[serde(rename = "DBInstanceIdentifier")]
    pub db_instance_identifier: String,
    /// RebootDBInstance's: accepted, ebsim's instances are never Multi-AZ.
    #[serde(rename = "ForceFailover", deserialize_with = "bool_from_any")]
    pub force_failover: Option<bool>,
    /// StopDBInstance's: a snapshot taken before stopping (not yet: refused).
    #[serde(rename = "DBSnapshotIdentifier")]
    pub db_snapshot_identifier: Option<String>,
}

/// DeleteDBInstance's request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DeleteDbInstanceRequest {
    #[serde(rename = "DBInstanceIdentifier")]
    pub db_instance_identifier: String,
    #[serde(rename = "SkipFinalSnapshot", deserialize_with = "bool_from_any")]
    pub skip_final_snapshot: Option<bool>,
    #[serde(rename = "FinalDBSnapshotIdentifier")]
    pub final_db_snapshot_identifier: Option<String>,
    #[serde(rename = "DeleteAutomatedBackups", deserialize_with = "bool_from_any")]
    pub delete_automated_backups: Option<bool>,
}

/// ModifyDBInstance's request (the members ebsim changes; encryption is not
/// among the model's members: it is chosen at creation only).
#[derive(Clone, Default, Deserialize)]
#[serde(default)]
pub struct ModifyDbInstanceRequest {
    #[serde(rename = "DBInstanceIdentifier")]
    pub db_instance_identifier: String,
    #[serde(rename = "DBInstanceClass")]
    pub db_instance_class: Option<String>,
    #[serde(rename = "BackupRetentionPeriod", deserialize_with = "int_from_any")]
    pub backup_retention_period: Option<i64>,
    #[serde(rename = "DeletionProtection", deserialize_with = "bool_from_any")]
    pub deletion_protection: Option<bool>,
    #[serde(rename = "CopyTagsToSnapshot", deserialize_with = "bool_from_any")]
    pub copy_tags_to_snapshot: Option<bool>,
    #[serde(rename = "ApplyImmediately", deserialize_with = "bool_from_any")]
    pub apply_immediately: Option<bool>,
    #[serde(rename = "AllocatedStorage", deserialize_with = "int_from_any")]
    pub allocated_storage: Option<i64>,
    #[serde(rename = "MasterUserPassword", deserialize_with = "secret_string")]
    pub master_user_password: Option<zeroize::Zeroizing<String>>,
}

impl std::fmt::Debug for ModifyDbInstanceRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModifyDbInstanceRequest")
            .field("db_instance_identifier", &self.db_instance_identifier)
            .field("deletion_protection", &self.deletion_protection)
            .field("backup_retention_period", &self.backup_retention_period)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_the_model_s_names_and_strings_for_numbers_and_booleans() {
        let r: CreateDbInstanceRequest = serde_json::from_value(json!({
            "DBInstanceIdentifier": "db1",
            "DBInstanceClass": "db.t3.micro",
            "Engine": "postgres",
            "AllocatedStorage": "20",
            "StorageEncrypted": "true",
            "MasterUserPassword": "secret-pw",
            "Tags": [{"Key": "a", "Value": "b"}]
        }))
        .unwrap();
        assert_eq!(r.allocated_storage, Some(20));
        assert_eq!(r.storage_encrypted, Some(true));
        assert_eq!(r.tags.len(), 1);
        let dbg = format!("{r:?}");
        assert!(!dbg.contains("secret-pw"), "{dbg}");
        let bad = serde_json::from_value::<CreateDbInstanceRequest>(json!({
            "StorageEncrypted": "yes"
        }));
        assert!(bad.is_err());
    }
}
