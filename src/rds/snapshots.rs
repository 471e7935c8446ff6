//! DB snapshots: CreateDBSnapshot, DescribeDBSnapshots, DeleteDBSnapshot,
//! CopyDBSnapshot (across keys and regions; an unencrypted source with a key
//! gives an encrypted copy) and RestoreDBInstanceFromDBSnapshot (the snapshot's
//! encryption and key). Each DB snapshot is an EBS snapshot of the instance's
//! storage in RDS's volume service, taken, copied and restored by the closures
//! the service layer gives (src/service/rds.rs); this file decides and records.

use super::model::*;
use super::{Provision, Rds, check_identifier, err, invalid};
use crate::ec2::model::Tag;
use crate::error::{Error, ErrorKind, Result};
use crate::kms::access::Caller;
use serde_json::{Value, json};

fn snapshot_not_found(id: &str) -> Error {
    err(
        ErrorKind::DbSnapshotNotFound,
        format!("DBSnapshot {id} not found."),
    )
}

fn snapshot_exists(id: &str) -> Error {
    err(
        ErrorKind::DbSnapshotAlreadyExists,
        format!(
            "Cannot create the snapshot because a snapshot with the identifier {id} already exists."
        ),
    )
}

/// A DB snapshot named by a caller to look it up: a name of its own, or an
/// automated snapshot's (`rds:<instance>-YYYY-MM-DD-HH-MM`, RDS's own).
pub fn check_snapshot_name(id: &str) -> Result<String> {
    if let Some(rest) = id.strip_prefix("rds:")
        && check_identifier(rest).is_ok()
    {
        return Ok(id.to_ascii_lowercase());
    }
    check_snapshot_identifier(id)
}

/// A DB snapshot identifier a caller gives a new snapshot: the DB instance
/// identifiers' rules (`rds:` names are RDS's own).
pub fn check_snapshot_identifier(id: &str) -> Result<String> {
    check_identifier(id).map_err(|_| {
        invalid(format!(
            "The parameter DBSnapshotIdentifier is not a valid identifier. Identifiers must begin with a letter; must contain only ASCII letters, digits, and hyphens; and must not end with a hyphen or contain two consecutive hyphens. ({id:?})"
        ))
    })
}

/// A source snapshot as CopyDBSnapshot names it: an identifier (this region)
/// or an ARN (`arn:aws:rds:REGION:ACCOUNT:snapshot:ID`); its region and id.
pub fn parse_source(source: &str, here: &str) -> Result<(String, String)> {
    super::parse_id_or_arn(
        source,
        here,
        "snapshot",
        "SourceDBSnapshotIdentifier",
        check_snapshot_name,
    )
}

/// A snapshot's tags: those the request gives, then those of `copied` (the
/// instance's or the source snapshot's) whose keys the request did not give.
fn with_tags(given: &[Tag], copied: Option<&Vec<Tag>>) -> Vec<Tag> {
    let mut tags = given.to_vec();
    for t in copied.into_iter().flatten() {
        if !tags.iter().any(|x| x.key == t.key) {
            tags.push(t.clone());
        }
    }
    tags
}

/// A new DB snapshot record (`creating`) of instance `r`.
pub(super) fn snapshot_of(
    r: &DbInstanceRecord,
    id: String,
    snapshot_type: &str,
    tags: Vec<Tag>,
    now: crate::clock::Timestamp,
) -> DbSnapshotRecord {
    DbSnapshotRecord {
        identifier: id,
        instance_identifier: r.identifier.clone(),
        resource_id: r.resource_id.clone(),
        snapshot_type: snapshot_type.into(),
        status: "creating".into(),
        create_time: now,
        instance_create_time: r.create_time,
        engine_version: r.engine_version.clone(),
        master_username: r.master_username.clone(),
        db_name: r.db_name.clone(),
        allocated_storage: r.allocated_storage,
        storage_type: r.storage_type.clone(),
        port: r.port,
        availability_zone: r.availability_zone.clone(),
        encrypted: r.storage_encrypted,
        kms_key_id: r.kms_key_id.clone(),
        storage_snapshot_id: None,
        source_region: None,
        source_snapshot_arn: None,
        tags,
        class: r.class.clone(),
        original_create_time: None,
    }
}

impl Rds {
    /// Records a DB snapshot of `r` named `id` (of `snapshot_type`) whose
    /// storage snapshot `take` makes; DBSnapshotAlreadyExists if the name is
    /// taken. For the snapshots other operations take (a final one at delete,
    /// one before a stop, automated backups), under the instance's lock (its
    /// caller's).
    pub fn record_snapshot_of(
        &self,
        r: &DbInstanceRecord,
        id: &str,
        snapshot_type: &str,
        take: impl FnOnce() -> Result<String>,
    ) -> Result<Value> {
        let id = if snapshot_type == "automated" {
            check_snapshot_name(id)?
        } else {
            check_snapshot_identifier(id)?
        };
        let tags = with_tags(&[], r.copy_tags_to_snapshot.then_some(&r.tags));
        self.make_snapshot(snapshot_of(r, id, snapshot_type, tags, self.now()), |_| {
            take()
        })
    }

    /// Automated backups, as RDS keeps them for an instance with a backup
    /// retention period: one a day on ebsim's clock (the first right after
    /// creation), each kept for the period. `take` makes a snapshot's storage,
    /// `drop` deletes one. Under the instance's lock; skipped while an
    /// operation holds it, for replicas, and while no backup is due.
    pub fn automated_backups(
        &self,
        r: &DbInstanceRecord,
        take: impl FnOnce(&DbInstanceRecord) -> Result<String>,
        drop: impl Fn(&DbSnapshotRecord) -> Result<()>,
    ) -> Result<()> {
        if r.read_replica_source.is_some()
            || ![status::AVAILABLE, status::STOPPED].contains(&r.status.as_str())
        {
            return Ok(());
        }
        let plan = |r: &DbInstanceRecord| -> Result<(Vec<DbSnapshotRecord>, bool)> {
            let now = self.now();
            let mine = self.automated_snapshots_of(&r.resource_id)?;
            let keep = chrono::TimeDelta::days(i64::from(r.backup_retention_period));
            let due = r.backup_retention_period > 0
                && mine
                    .iter()
                    .map(|s| s.create_time)
                    .max()
                    .is_none_or(|last| now - last >= chrono::TimeDelta::days(1));
            let expired = mine
                .into_iter()
                .filter(|s| now - s.create_time > keep)
                .collect();
            Ok((expired, due))
        };
        let (expired, due) = plan(r)?;
        if expired.is_empty() && !due {
            return Ok(());
        }
        let Some(_lock) = self.try_lock(&r.identifier)? else {
            return Ok(());
        };
        // Again under the lock: another process may have done it meanwhile,
        // or changed the instance.
        let r = self.instance(&r.identifier)?;
        if ![status::AVAILABLE, status::STOPPED].contains(&r.status.as_str()) {
            return Ok(());
        }
        let (expired, due) = plan(&r)?;
        for s in &expired {
            drop(s)?;
            self.store().write(|tx| tx.delete_snapshot(&s.identifier))?;
        }
        if due {
            let id = format!(
                "rds:{}-{}",
                r.identifier,
                self.now().format("%Y-%m-%d-%H-%M")
            );
            if self.store().snapshot(&id)?.is_none() {
                let was = r.status.clone();
                self.update(&r.identifier, |x| x.status = status::BACKING_UP.into())?;
                let made = self.record_snapshot_of(&r, &id, "automated", || take(&r));
                self.update(&r.identifier, |x| x.status = was)?;
                made?;
            }
        }
        Ok(())
    }

    /// The automated snapshots of the instance whose DbiResourceId is
    /// `resource_id` (what DeleteDBInstance removes unless
    /// DeleteAutomatedBackups is false, and a retention period of 0 removes):
    /// by its immutable id, so a later instance of the same name never takes
    /// over backups kept from an earlier one.
    pub fn automated_snapshots_of(&self, resource_id: &str) -> Result<Vec<DbSnapshotRecord>> {
        Ok(self
            .store()
            .snapshots()?
            .into_iter()
            .filter(|s| s.snapshot_type == "automated" && s.resource_id == resource_id)
            .collect())
    }

    /// DB snapshots left `creating` by a process that was killed while it made
    /// them (the instance's lock is free, or the instance is gone) become
    /// `failed`: DeleteDBSnapshot removes them.
    pub fn settle_snapshots(&self) -> Result<()> {
        // The list first: the store's lock is not held across the loop, which
        // reads instances (and takes the lock again).
        let all = self.store().snapshots()?;
        for s in all {
            if s.status != "creating" {
                continue;
            }
            let held = match self.instance(&s.instance_identifier) {
                Ok(_) => self.try_lock(&s.instance_identifier)?.is_none(),
                Err(_) => false,
            };
            // A copy holds no instance's lock: it settles once old enough.
            let copy_in_progress = s.source_snapshot_arn.is_some()
                && self.now() - s.create_time < chrono::TimeDelta::hours(1);
            if !held && !copy_in_progress {
                self.update_snapshot(&s.identifier, |x| x.status = "failed".into())?;
            }
        }
        Ok(())
    }

    /// Forgets a DB snapshot whose storage snapshot the caller deleted.
    pub fn forget_snapshot(&self, id: &str) -> Result<()> {
        self.store().write(|tx| tx.delete_snapshot(id))
    }

    /// `id` as a new DB snapshot's identifier: valid, and not taken
    /// (DBSnapshotAlreadyExists).
    pub(super) fn free_snapshot_name(&self, id: &str) -> Result<String> {
        let id = check_snapshot_identifier(id)?;
        if self.store().snapshot(&id)?.is_some() {
            return Err(snapshot_exists(&id));
        }
        Ok(id)
    }

    fn snapshot_arn(&self, id: &str) -> String {
        snapshot_arn(self.region(), self.account_id(), id)
    }

    /// The DB snapshot named `id` (any case); DBSnapshotNotFound.
    pub fn snapshot(&self, id: &str) -> Result<DbSnapshotRecord> {
        let key = id.to_ascii_lowercase();
        self.store()
            .snapshot(&key)?
            .ok_or_else(|| snapshot_not_found(id))
    }

    fn update_snapshot(
        &self,
        id: &str,
        f: impl FnOnce(&mut DbSnapshotRecord),
    ) -> Result<DbSnapshotRecord> {
        self.store().write(|tx| {
            let mut s = tx.snapshot(id)?.ok_or_else(|| snapshot_not_found(id))?;
            f(&mut s);
            tx.put_snapshot(&s)?;
            Ok(s)
        })
    }

    /// Records `s` (`creating`) unless its identifier is taken; then `work`
    /// makes its storage snapshot, and it becomes `available`. A failure
    /// removes the record (the work undid itself).
    fn make_snapshot(
        &self,
        s: DbSnapshotRecord,
        work: impl FnOnce(&DbSnapshotRecord) -> Result<String>,
    ) -> Result<Value> {
        self.store().write(|tx| {
            if tx.snapshot(&s.identifier)?.is_some() {
                return Err(snapshot_exists(&s.identifier));
            }
            tx.put_snapshot(&s)
        })?;
        let accepted = db_snapshot(&s, self.region(), self.account_id());
        match work(&s) {
            Ok(storage) => {
                self.update_snapshot(&s.identifier, |r| {
                    r.storage_snapshot_id = Some(storage);
                    r.status = "available".into();
                })?;
                Ok(accepted)
            }
            Err(e) => {
                self.store().write(|tx| tx.delete_snapshot(&s.identifier))?;
                Err(e)
            }
        }
    }

    // ---- CreateDBSnapshot -----------------------------------------------------

    /// CreateDBSnapshot of an `available` or `stopped` instance: the instance
    /// `backing-up` while `take` makes the snapshot of its storage (a write cut
    /// of the whole volume, which holds the data directory and the WAL: what a
    /// crash would leave, which PostgreSQL recovers from), then as it was.
    pub fn create_db_snapshot(
        &self,
        caller: &Caller,
        req: &CreateDbSnapshotRequest,
        take: impl FnOnce(&DbInstanceRecord) -> Result<String>,
    ) -> Result<Value> {
        let arn = self.snapshot_arn(&req.db_snapshot_identifier.to_ascii_lowercase());
        let request = json!({
            "DBSnapshotIdentifier": req.db_snapshot_identifier,
            "DBInstanceIdentifier": req.db_instance_identifier,
            "Tags": if req.tags.is_empty() { Value::Null } else { json!(req.tags) },
        });
        self.call(
            caller,
            "CreateDBSnapshot",
            request,
            std::slice::from_ref(&arn),
            || {
                let id = check_snapshot_identifier(&req.db_snapshot_identifier)?;
                let instance = check_identifier(&req.db_instance_identifier)?;
                self.authorize(caller, "rds:CreateDBSnapshot", &arn)?;
                let r = self.instance(&instance)?;
                let Some(_lock) = self.try_lock(&instance)? else {
                    return Err(super::invalid_state(&r));
                };
                let r = self.instance(&instance)?;
                if ![status::AVAILABLE, status::STOPPED].contains(&r.status.as_str()) {
                    return Err(super::invalid_state(&r));
                }
                let id = self.free_snapshot_name(&id)?;
                let tags = with_tags(&req.tags, r.copy_tags_to_snapshot.then_some(&r.tags));
                let s = snapshot_of(&r, id, "manual", tags, self.now());
                let was = r.status.clone();
                self.update(&r.identifier, |r| r.status = "backing-up".into())?;
                let made = self.make_snapshot(s, |_| take(&r));
                self.update(&r.identifier, |r| r.status = was)?;
                made
            },
            |v| v.clone(),
        )
    }

    // ---- DescribeDBSnapshots --------------------------------------------------

    pub fn describe_db_snapshots(
        &self,
        caller: &Caller,
        req: &DescribeDbSnapshotsRequest,
    ) -> Result<Value> {
        let request = json!({
            "DBSnapshotIdentifier": req.db_snapshot_identifier,
            "DBInstanceIdentifier": req.db_instance_identifier,
            "SnapshotType": req.snapshot_type,
            "MaxRecords": req.max_records,
            "Marker": req.marker,
        });
        self.call(
            caller,
            "DescribeDBSnapshots",
            request,
            &[],
            || {
                let resource = format!(
                    "arn:aws:rds:{}:{}:snapshot:*",
                    self.region(),
                    self.account_id()
                );
                self.authorize(caller, "rds:DescribeDBSnapshots", &resource)?;
                let max = req.max_records.unwrap_or(100);
                if !(20..=100).contains(&max) {
                    return Err(invalid(format!(
                        "Invalid value {max} for MaxRecords. Must be between 20 and 100"
                    )));
                }
                let all = match &req.db_snapshot_identifier {
                    Some(id) => vec![self.snapshot(&check_snapshot_name(id)?)?],
                    None => self.store().snapshots()?,
                };
                let instance = req
                    .db_instance_identifier
                    .as_deref()
                    .map(str::to_ascii_lowercase);
                let start = req.marker.as_deref().unwrap_or("");
                let mut page = Vec::new();
                let mut marker = None;
                for s in all.into_iter().filter(|s| {
                    instance
                        .as_deref()
                        .is_none_or(|i| s.instance_identifier == i)
                        && req
                            .snapshot_type
                            .as_deref()
                            .is_none_or(|t| s.snapshot_type == t)
                        && s.identifier.as_str() >= start
                }) {
                    if page.len() == usize::try_from(max).expect("checked range") {
                        marker = Some(s.identifier.clone());
                        break;
                    }
                    page.push(db_snapshot(&s, self.region(), self.account_id()));
                }
                let mut out = json!({ "DBSnapshots": page });
                if let Some(m) = marker {
                    out["Marker"] = json!(m);
                }
                Ok(out)
            },
            |_| Value::Null,
        )
    }

    // ---- DeleteDBSnapshot -----------------------------------------------------

    /// DeleteDBSnapshot of an `available` (or `failed`) snapshot: `work`
    /// deletes its storage snapshot, then the record goes. The answer shows
    /// it `deleted`, as RDS's does.
    pub fn delete_db_snapshot(
        &self,
        caller: &Caller,
        req: &DeleteDbSnapshotRequest,
        work: impl FnOnce(&DbSnapshotRecord) -> Result<()>,
    ) -> Result<Value> {
        let arn = self.snapshot_arn(&req.db_snapshot_identifier.to_ascii_lowercase());
        self.call(
            caller,
            "DeleteDBSnapshot",
            json!({ "DBSnapshotIdentifier": req.db_snapshot_identifier }),
            std::slice::from_ref(&arn),
            || {
                let id = check_snapshot_name(&req.db_snapshot_identifier)?;
                self.authorize(caller, "rds:DeleteDBSnapshot", &arn)?;
                let s = self.snapshot(&id)?;
                let instance_gone = self
                    .instances()?
                    .iter()
                    .all(|r| r.resource_id != s.resource_id);
                if s.snapshot_type == "automated" && !instance_gone {
                    return Err(err(
                        ErrorKind::InvalidDbSnapshotState,
                        format!(
                            "{id} is an automated snapshot: RDS deletes it when it falls out of the backup retention period (copy it to keep it)"
                        ),
                    ));
                }
                if !["available", "failed"].contains(&s.status.as_str()) {
                    return Err(err(
                        ErrorKind::InvalidDbSnapshotState,
                        format!(
                            "Cannot delete the snapshot {id} while its status is {}.",
                            s.status
                        ),
                    ));
                }
                work(&s)?;
                self.store().write(|tx| tx.delete_snapshot(&id))?;
                let mut gone = s;
                gone.status = "deleted".into();
                Ok(db_snapshot(&gone, self.region(), self.account_id()))
            },
            |v| v.clone(),
        )
    }

    // ---- CopyDBSnapshot -------------------------------------------------------

    /// CopyDBSnapshot into this region of `source` (read from `source_region`'s
    /// RDS by the service layer): without KmsKeyId the copy keeps the source's
    /// key (and an unencrypted source stays unencrypted); with it, the copy is
    /// encrypted under that key (an unencrypted source becomes encrypted: the
    /// documented way to encrypt a database). From another region an encrypted
    /// source needs a key of this region. `work` copies the storage snapshot
    /// under the key given (None: unencrypted).
    pub fn copy_db_snapshot(
        &self,
        caller: &Caller,
        req: &CopyDbSnapshotRequest,
        source_region: &str,
        source: &DbSnapshotRecord,
        work: impl FnOnce(&DbSnapshotRecord, Option<&str>) -> Result<String>,
    ) -> Result<Value> {
        let arn = self.snapshot_arn(&req.target_db_snapshot_identifier.to_ascii_lowercase());
        let request = json!({
            "SourceDBSnapshotIdentifier": req.source_db_snapshot_identifier,
            "TargetDBSnapshotIdentifier": req.target_db_snapshot_identifier,
            "KmsKeyId": req.kms_key_id,
            "CopyTags": req.copy_tags,
            "SourceRegion": req.source_region,
            "Tags": if req.tags.is_empty() { Value::Null } else { json!(req.tags) },
        });
        self.call(
            caller,
            "CopyDBSnapshot",
            request,
            std::slice::from_ref(&arn),
            || {
                let target = check_snapshot_identifier(&req.target_db_snapshot_identifier)?;
                self.authorize(caller, "rds:CopyDBSnapshot", &arn)?;
                if source.status != "available" {
                    return Err(err(
                        ErrorKind::InvalidDbSnapshotState,
                        format!(
                            "Snapshot {} is not in available state: its status is {}.",
                            source.identifier, source.status
                        ),
                    ));
                }
                let cross = source_region != self.region();
                let key = match (&req.kms_key_id, &source.kms_key_id) {
                    (Some(k), _) => Some(self.check_key(caller, k)?),
                    (None, Some(_)) if cross => {
                        return Err(err(
                            ErrorKind::InvalidParameterCombination,
                            format!(
                                "KmsKeyId is required to copy the encrypted DB snapshot {} from {source_region} to {}: KMS keys are regional, give a key of {}.",
                                source.identifier,
                                self.region(),
                                self.region()
                            ),
                        ));
                    }
                    (None, Some(k)) => Some(self.check_key(caller, k)?),
                    (None, None) => None,
                };
                let tags = with_tags(&req.tags, (req.copy_tags == Some(true)).then_some(&source.tags));
                let copy = DbSnapshotRecord {
                    identifier: target,
                    status: "creating".into(),
                    snapshot_type: "manual".into(),
                    create_time: self.now(),
                    encrypted: key.is_some(),
                    kms_key_id: key.clone(),
                    storage_snapshot_id: None,
                    source_region: cross.then(|| source_region.to_string()),
                    source_snapshot_arn: Some(snapshot_arn(
                        source_region,
                        self.account_id(),
                        &source.identifier,
                    )),
                    tags,
                    original_create_time: Some(
                        source.original_create_time.unwrap_or(source.create_time),
                    ),
                    availability_zone: if cross {
                        crate::ec2::zones::zones_of(self.region())
                            .first()
                            .map(|z| z.zone_name.clone())
                            .unwrap_or_default()
                    } else {
                        source.availability_zone.clone()
                    },
                    ..source.clone()
                };
                self.make_snapshot(copy, |c| work(c, key.as_deref()))
            },
            |v| v.clone(),
        )
    }

    // ---- RestoreDBInstanceFromDBSnapshot ----------------------------------------

    /// RestoreDBInstanceFromDBSnapshot: a new instance with the snapshot's
    /// engine, master user, storage, encryption and key (checked usable:
    /// KMSKeyNotAccessibleFault), made by `provision` from the snapshot's
    /// storage, as CreateDBInstance makes one.
    pub fn restore_db_instance_from_db_snapshot(
        &self,
        caller: &Caller,
        req: &RestoreDbInstanceFromDbSnapshotRequest,
        provision: impl FnOnce(&Provision<'_>, &DbSnapshotRecord) -> Result<()>,
    ) -> Result<Value> {
        let id = req.db_instance_identifier.to_ascii_lowercase();
        let arn = self.arn(&id);
        let request = json!({
            "DBInstanceIdentifier": req.db_instance_identifier,
            "DBSnapshotIdentifier": req.db_snapshot_identifier,
            "DBInstanceClass": req.db_instance_class,
            "Port": req.port,
            "AvailabilityZone": req.availability_zone,
            "DeletionProtection": req.deletion_protection,
            "Tags": if req.tags.is_empty() { Value::Null } else { json!(req.tags) },
        });
        self.call(
            caller,
            "RestoreDBInstanceFromDBSnapshot",
            request,
            std::slice::from_ref(&arn),
            || {
                let identifier = check_identifier(&req.db_instance_identifier)?;
                let snap = self.snapshot(&check_snapshot_name(&req.db_snapshot_identifier)?)?;
                self.authorize(caller, "rds:RestoreDBInstanceFromDBSnapshot", &arn)?;
                if snap.status != "available" {
                    return Err(err(
                        ErrorKind::InvalidDbSnapshotState,
                        format!(
                            "Snapshot {} is not in available state: its status is {}.",
                            snap.identifier, snap.status
                        ),
                    ));
                }
                let create = CreateDbInstanceRequest {
                    db_instance_identifier: identifier,
                    db_instance_class: req.db_instance_class.clone().unwrap_or(snap.class.clone()),
                    engine: super::ENGINE.into(),
                    engine_version: None,
                    allocated_storage: Some(i64::from(snap.allocated_storage)),
                    master_username: Some(snap.master_username.clone()),
                    // The cluster keeps its own; the create's checks want one.
                    master_user_password: Some(zeroize::Zeroizing::new(
                        "restored-from-a-snapshot".into(),
                    )),
                    db_name: snap.db_name.clone(),
                    port: req.port.or(Some(i64::from(snap.port))),
                    backup_retention_period: req.backup_retention_period,
                    storage_encrypted: Some(snap.encrypted),
                    kms_key_id: snap.kms_key_id.clone(),
                    storage_type: Some(snap.storage_type.clone()),
                    availability_zone: req.availability_zone.clone(),
                    tags: req.tags.clone(),
                    deletion_protection: req.deletion_protection,
                    copy_tags_to_snapshot: None,
                    replica_of: None,
                };
                let action = "rds:RestoreDBInstanceFromDBSnapshot";
                self.create_op(caller, action, &create, &snap.engine_version, &arn, |p| {
                    provision(p, &snap)
                })
            },
            |v| v.clone(),
        )
    }
}
