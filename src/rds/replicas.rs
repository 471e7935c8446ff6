//! Read replicas: CreateDBInstanceReadReplica (real PostgreSQL streaming
//! replication onto the replica's own encrypted storage) and
//! PromoteReadReplica. The encryption rules are RDS's (shared/reference/
//! kms-ebs.md §3): in the source's region a replica always has the source's
//! key, and naming one is refused; in another region an encrypted source
//! needs a key of that region; an unencrypted source has unencrypted
//! replicas. The source needs automated backups.

use super::model::*;
use super::{Provision, Rds, check_identifier, err};
use crate::error::{ErrorKind, Result};
use crate::kms::access::Caller;
use serde_json::{Value, json};

/// A source instance as CreateDBInstanceReadReplica names it: an identifier
/// (this region) or an ARN (`arn:aws:rds:REGION:ACCOUNT:db:ID`); its region
/// and identifier.
pub fn parse_source(source: &str, here: &str) -> Result<(String, String)> {
    super::parse_id_or_arn(
        source,
        here,
        "db",
        "SourceDBInstanceIdentifier",
        check_identifier,
    )
}

impl Rds {
    /// CreateDBInstanceReadReplica in this region of `source` (read from
    /// `source_region`'s RDS by the service layer): the rules above, then a
    /// new instance (`creating`) that `provision` makes by a base backup of
    /// the source. The caller records the replica on its source.
    pub fn create_db_instance_read_replica(
        &self,
        caller: &Caller,
        req: &CreateReadReplicaRequest,
        source_region: &str,
        source: &DbInstanceRecord,
        provision: impl FnOnce(&Provision<'_>) -> Result<()>,
    ) -> Result<Value> {
        let id = req.db_instance_identifier.to_ascii_lowercase();
        let arn = self.arn(&id);
        let request = json!({
            "DBInstanceIdentifier": req.db_instance_identifier,
            "SourceDBInstanceIdentifier": req.source_db_instance_identifier,
            "DBInstanceClass": req.db_instance_class,
            "Port": req.port,
            "AvailabilityZone": req.availability_zone,
            "KmsKeyId": req.kms_key_id,
            "SourceRegion": req.source_region,
            "Tags": if req.tags.is_empty() { Value::Null } else { json!(req.tags) },
        });
        self.call(
            caller,
            "CreateDBInstanceReadReplica",
            request,
            std::slice::from_ref(&arn),
            || {
                let identifier = check_identifier(&req.db_instance_identifier)?;
                self.authorize(caller, "rds:CreateDBInstanceReadReplica", &arn)?;
                let cross = source_region != self.region();
                if source.status != status::AVAILABLE {
                    return Err(super::invalid_state(source));
                }
                if source.read_replica_source.is_some() {
                    return Err(err(
                        ErrorKind::InvalidDbInstanceState,
                        format!(
                            "{} is itself a read replica: ebsim makes read replicas of primaries only",
                            source.identifier
                        ),
                    ));
                }
                if source.backup_retention_period == 0 {
                    return Err(err(
                        ErrorKind::InvalidDbInstanceState,
                        "Automated backups are not enabled for this database instance. To enable automated backups, use ModifyDBInstance to set the backup retention period to a non-zero value.",
                    ));
                }
                let key = match (&req.kms_key_id, &source.kms_key_id, cross) {
                    (Some(_), _, false) => {
                        return Err(err(
                            ErrorKind::InvalidParameterCombination,
                            "Your request does not require the KMS key parameter. A read replica in the same Region as its source is always encrypted with the source's KMS key.",
                        ));
                    }
                    (None, Some(k), false) => Some(k.clone()),
                    (None, None, _) => None,
                    (None, Some(_), true) => {
                        return Err(err(
                            ErrorKind::InvalidParameterCombination,
                            "Cannot create a cross region unencrypted read replica from encrypted source.",
                        ));
                    }
                    (Some(_), None, true) => {
                        return Err(err(
                            ErrorKind::InvalidParameterCombination,
                            "Cannot create an encrypted read replica from an unencrypted source DB instance.",
                        ));
                    }
                    (Some(k), Some(_), true) => Some(k.clone()),
                };
                let replica_of = if cross {
                    super::instance_arn(source_region, self.account_id(), &source.identifier)
                } else {
                    source.identifier.clone()
                };
                let create = CreateDbInstanceRequest {
                    db_instance_identifier: identifier,
                    db_instance_class: req
                        .db_instance_class
                        .clone()
                        .unwrap_or_else(|| source.class.clone()),
                    engine: super::ENGINE.into(),
                    engine_version: None,
                    allocated_storage: Some(i64::from(source.allocated_storage)),
                    master_username: Some(source.master_username.clone()),
                    // The replica's roles are the source's; the create's checks want one.
                    master_user_password: Some(zeroize::Zeroizing::new(
                        "replicated-from-its-source".into(),
                    )),
                    db_name: source.db_name.clone(),
                    port: req.port,
                    // Replicas take no automated backups of their own.
                    backup_retention_period: Some(0),
                    storage_encrypted: Some(key.is_some()),
                    kms_key_id: key,
                    storage_type: Some(source.storage_type.clone()),
                    availability_zone: req.availability_zone.clone(),
                    tags: req.tags.clone(),
                    deletion_protection: req.deletion_protection,
                    copy_tags_to_snapshot: None,
                    replica_of: Some(replica_of),
                };
                self.create_op(
                    caller,
                    "rds:CreateDBInstanceReadReplica",
                    &create,
                    &source.engine_version,
                    &arn,
                    provision,
                )
            },
            |v| v.clone(),
        )
    }

    /// Records `replica` (an identifier, or another region's ARN) among the
    /// read replicas of `source`, or (`add` false) takes it out.
    pub fn note_replica(&self, source: &str, replica: &str, add: bool) -> Result<()> {
        self.update(source, |r| {
            r.replicas.retain(|x| x != replica);
            if add {
                r.replicas.push(replica.to_string());
            }
        })
        .map(|_| ())
    }

    /// PromoteReadReplica: an `available` replica (`modifying` meanwhile)
    /// stops replicating (`promote`), and becomes a standalone instance with
    /// automated backups (`BackupRetentionPeriod`, 1 by default). Returns the
    /// instance as the request left it, and its former source (for the
    /// service layer to take it off that source's list).
    pub fn promote_read_replica(
        &self,
        caller: &Caller,
        req: &PromoteReadReplicaRequest,
        promote: impl FnOnce(&DbInstanceRecord) -> Result<()>,
    ) -> Result<(Value, String)> {
        let key = req.db_instance_identifier.to_ascii_lowercase();
        let arn = self.arn(&key);
        let request = json!({
            "DBInstanceIdentifier": req.db_instance_identifier,
            "BackupRetentionPeriod": req.backup_retention_period,
        });
        self.call(
            caller,
            "PromoteReadReplica",
            request,
            std::slice::from_ref(&arn),
            || {
                check_identifier(&req.db_instance_identifier)?;
                self.authorize(caller, "rds:PromoteReadReplica", &arn)?;
                let retention = req.backup_retention_period.unwrap_or(1);
                if !(0..=35).contains(&retention) {
                    return Err(super::invalid(format!(
                        "Invalid backup retention period: {retention}. The value must be from 0 to 35."
                    )));
                }
                let r = self.instance(&key)?;
                let Some(_lock) = self.try_lock(&key)? else {
                    return Err(super::invalid_state(&r));
                };
                let r = self.instance(&key)?;
                let Some(source) = r.read_replica_source.clone() else {
                    return Err(err(
                        ErrorKind::InvalidDbInstanceState,
                        format!("DB Instance {} is not a read replica.", r.identifier),
                    ));
                };
                if r.status != status::AVAILABLE {
                    return Err(super::invalid_state(&r));
                }
                let before = self.update(&key, |r| r.status = "modifying".into())?;
                let answer = db_instance(&before, self.region(), self.account_id());
                match promote(&before) {
                    Ok(()) => {
                        self.update(&key, |r| {
                            r.status = status::AVAILABLE.into();
                            r.read_replica_source = None;
                            r.backup_retention_period =
                                u32::try_from(retention).expect("checked range");
                        })?;
                        Ok((answer, source))
                    }
                    Err(e) => {
                        let message = e.message().to_string();
                        self.update(&key, |r| {
                            r.status = status::FAILED.into();
                            r.status_message = Some(message);
                        })?;
                        Err(e)
                    }
                }
            },
            |(v, _)| v.clone(),
        )
    }
}
