//! RDS's DB instance API over real PostgreSQL servers on encrypted volumes
//! (docs/RDS.md; shared/reference/kms-ebs.md §3).
//!
//! - `model.rs`: RDS's shapes (botocore's member names) and the stored record.
//! - `store.rs`: `regions/<region>/rds/rds.db`.
//! - this file: the operations' decisions — validation in RDS's words,
//!   authorization (`rds:` actions in identity policies), the key check, the
//!   status machine, one CloudTrail record per call (`rds.amazonaws.com`).
//!
//! The engine never touches the host: what an operation does there (a volume
//! made in RDS's volume service, attached, mounted; a PostgreSQL server started
//! or stopped) is the closure the service layer gives it (src/service/rds.rs),
//! run while the instance's lock is held and its transitional status
//! (`creating`, `stopping`, …) is recorded. A process killed in the middle
//! leaves the status with no lock behind it: the next call that reads the
//! instance marks it `failed`, which reboot or delete can leave.

pub mod model;
pub mod replicas;
pub mod snapshots;
pub mod store;

use crate::clock::Timestamp;
use crate::error::{Error, ErrorKind, Result};
use crate::home::DataRoot;
use crate::kms::Kms;
use crate::kms::access::Caller;
use crate::kms::api::DescribeKeyRequest;
use crate::kms::audit::{self, Event};
use crate::volume::owner::VolumeOwner;
use model::*;
use serde_json::{Value, json};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Mutex;

/// The engine ebsim runs (Debian's PostgreSQL 15).
pub const ENGINE: &str = "postgres";
/// RDS's default quota of DB instances per account and region.
pub const MAX_INSTANCES: usize = 40;
/// RDS's default quota of storage across an account's DB instances, GiB.
pub const MAX_TOTAL_STORAGE_GIB: u64 = 100_000;
/// RDS for PostgreSQL's storage bounds (gp2, gp3, io1, io2), GiB.
pub const STORAGE_GIB: std::ops::RangeInclusive<i64> = 20..=65_536;
/// Storage types ebsim makes (io1 and io2 need Iops, which it does not take yet).
const STORAGE_TYPES: &[&str] = &["gp2", "gp3", "standard"];
/// How long an instance stays recoverable after its key became unusable.
pub const KEY_RECOVERY_DAYS: i64 = 7;
/// What a DB instance's storage is owned by in the volume service.
pub const OWNER: &VolumeOwner = &VolumeOwner::RDS;

/// The RDS service of one region.
pub struct Rds {
    kms: Kms,
    root: DataRoot,
    store: Mutex<store::Store>,
    /// `regions/<region>/rds`.
    dir: PathBuf,
    /// The region's audit log (the KMS's file): RDS's own calls.
    trail: audit::AuditLog,
    /// IAM, opened on the first call by a principal that has identity policies.
    iam: Mutex<Option<crate::iam::Iam>>,
}

/// The exclusive lock an operation holds on one instance while it works.
pub struct InstanceLock {
    _file: File,
}

fn err(kind: ErrorKind, msg: impl Into<String>) -> Error {
    Error::new(kind, msg)
}

fn invalid(msg: impl Into<String>) -> Error {
    err(ErrorKind::InvalidParameterValue, msg)
}

fn not_found(id: &str) -> Error {
    err(
        ErrorKind::DbInstanceNotFound,
        format!("DBInstance {id} not found."),
    )
}

/// A resource named by its identifier (this region's) or its ARN
/// (`arn:aws:rds:REGION:ACCOUNT:<kind>:ID`, another region's perhaps): its
/// region, and its identifier as `check` reads it. `member` names the request
/// member for the error.
pub fn parse_id_or_arn(
    source: &str,
    here: &str,
    kind: &str,
    member: &str,
    check: impl Fn(&str) -> Result<String>,
) -> Result<(String, String)> {
    let Some(rest) = source.strip_prefix("arn:aws:rds:") else {
        return Ok((here.to_string(), check(source)?));
    };
    let parts: Vec<&str> = rest.splitn(4, ':').collect();
    if parts.len() == 4 && parts[2] == kind {
        crate::home::validate_region(parts[0])?;
        return Ok((parts[0].to_string(), check(parts[3])?));
    }
    Err(invalid(format!(
        "The parameter {member} is not a valid identifier: {source} is not an ARN of an RDS {kind}"
    )))
}

/// RDS's DB instance identifier rules; the identifier lowercased.
pub fn check_identifier(id: &str) -> Result<String> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id.starts_with(|c: char| c.is_ascii_alphabetic())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !id.ends_with('-')
        && !id.contains("--");
    if ok {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(invalid(format!(
            "The parameter DBInstanceIdentifier is not a valid identifier. Identifiers must begin with a letter; must contain only ASCII letters, digits, and hyphens; and must not end with a hyphen or contain two consecutive hyphens. ({id:?})"
        )))
    }
}

/// `db-` and 26 upper-case letters and digits (RDS's DbiResourceId).
fn new_resource_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    let s: String = (0..26)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("db-{s}")
}

/// RDS's CloudTrail members: the API's names with their first letter lowered
/// (`dBInstanceIdentifier`), all the way down.
fn trail_names(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| {
                    let mut c = k.chars();
                    let k = match c.next() {
                        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
                        None => k,
                    };
                    (k, trail_names(v))
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(trail_names).collect()),
        other => other,
    }
}

/// What a create needs from the host: the instance as recorded (status
/// `creating`) and a way to record its storage volume as soon as it exists.
pub struct Provision<'a> {
    pub record: &'a DbInstanceRecord,
    record_volume: &'a dyn Fn(&str) -> Result<()>,
    keep: std::cell::Cell<bool>,
}

impl Provision<'_> {
    /// The host work failed and could not undo all it did: the record stays
    /// (`failed`), naming what is left, for DeleteDBInstance to remove.
    pub fn keep_record(&self) {
        self.keep.set(true);
    }

    /// Records the storage volume's id (before anything else is done with it,
    /// so that a killed create leaves no volume that no instance names).
    pub fn record_volume(&self, volume_id: &str) -> Result<()> {
        (self.record_volume)(volume_id)
    }
}

impl Rds {
    /// The RDS service of `kms`'s region on `root`.
    pub fn open(root: &DataRoot, kms: Kms) -> Result<Self> {
        let dir = root.region_dir(kms.region())?.join("rds");
        crate::fsutil::ensure_private_dir(&dir)?;
        let store = store::Store::open(root, kms.region())?;
        let trail = audit::AuditLog::open(kms.audit_log_path())?;
        Ok(Rds {
            kms,
            root: root.clone(),
            store: Mutex::new(store),
            dir,
            trail,
            iam: Mutex::new(None),
        })
    }

    pub fn region(&self) -> &str {
        self.kms.region()
    }

    pub fn account_id(&self) -> &str {
        self.kms.account_id()
    }

    pub fn now(&self) -> Timestamp {
        self.kms.clock().now()
    }

    fn arn(&self, identifier: &str) -> String {
        instance_arn(self.region(), self.account_id(), identifier)
    }

    fn store(&self) -> std::sync::MutexGuard<'_, store::Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs one RDS API call and appends its CloudTrail record.
    fn call<T>(
        &self,
        caller: &Caller,
        name: &'static str,
        request: Value,
        resources: &[String],
        op: impl FnOnce() -> Result<T>,
        response: impl FnOnce(&T) -> Value,
    ) -> Result<T> {
        let result = op();
        let request_id = caller.request_id.unwrap_or_else(uuid::Uuid::new_v4);
        let read_only = name.starts_with("Describe");
        let elements = match &result {
            Ok(r) if !read_only => trail_names(response(r)),
            _ => Value::Null,
        };
        let recorded = self.trail.record_service(
            audit::RDS,
            request_id,
            result.as_ref().err().map(|e| e.code()),
            &Event {
                time: self.now(),
                region: self.region(),
                caller,
                event_name: name,
                read_only,
                request: trail_names(request),
                response: elements,
                resources,
                error: result.as_ref().err(),
            },
        );
        if let Err(e) = recorded {
            tracing::warn!("{e}");
        }
        result
    }

    /// Decides whether `caller` may perform `action` (`rds:CreateDBInstance`)
    /// on `resource`: AccessDenied in RDS's words otherwise.
    fn authorize(&self, caller: &Caller, action: &str, resource: &str) -> Result<()> {
        let same_account = caller.account_id() == self.account_id();
        if caller.is_aws_service() || (caller.is_root() && same_account) {
            return Ok(());
        }
        let policies = if same_account {
            let mut iam = self.iam.lock().unwrap_or_else(|p| p.into_inner());
            if iam.is_none() {
                *iam = Some(crate::iam::Iam::open(&self.root)?);
            }
            iam.as_ref()
                .expect("opened above")
                .identity_policies(&caller.principal)?
        } else {
            Vec::new()
        };
        let now = self.now();
        let mut ctx = crate::policy::ConditionContext::new();
        for (k, v) in [
            (
                "aws:PrincipalArn",
                caller.principal.principal_arn().to_string(),
            ),
            ("aws:PrincipalAccount", caller.account_id().to_string()),
            ("aws:RequestedRegion", self.region().to_string()),
            ("aws:CurrentTime", crate::clock::cloudtrail_time(&now)),
            ("aws:EpochTime", now.timestamp().to_string()),
            ("aws:SourceIp", caller.source_ip.clone()),
        ] {
            ctx.set_many(k, [v]);
        }
        let req = crate::policy::Request {
            principal: caller.principal.as_request(),
            action,
            resource,
            context: &ctx,
        };
        let v = crate::policy::evaluate_all(&policies, &req);
        if v.allow && !v.deny {
            return Ok(());
        }
        let why = if v.deny {
            "with an explicit deny in an identity-based policy".to_string()
        } else {
            format!("because no identity-based policy allows the {action} action")
        };
        Err(err(
            ErrorKind::IamAccessDenied,
            format!(
                "User: {} is not authorized to perform: {action} on resource: {resource} {why}",
                caller.arn()
            ),
        )
        .with(crate::error::Field::Principal, caller.arn()))
    }

    fn lock_path(&self, identifier: &str) -> Result<PathBuf> {
        let d = self.dir.join("locks");
        crate::fsutil::ensure_private_dir(&d)?;
        Ok(d.join(format!("{identifier}.lock")))
    }

    fn open_lock(&self, identifier: &str) -> Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.lock_path(identifier)?;
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io_file(&path, e))
    }

    /// The instance's lock, if no operation holds it now.
    fn try_lock(&self, identifier: &str) -> Result<Option<InstanceLock>> {
        let f = self.open_lock(identifier)?;
        match f.try_lock() {
            Ok(()) => Ok(Some(InstanceLock { _file: f })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(
                format!("cannot lock {}", self.lock_path(identifier)?.display()),
                e,
            )),
        }
    }

    /// The instance's lock, for a caller outside the engine that changes its
    /// record (the service layer's observation of a dead server); None while
    /// an operation holds it.
    pub fn lock_if_free(&self, identifier: &str) -> Result<Option<InstanceLock>> {
        self.try_lock(identifier)
    }

    /// A transitional status whose operation is gone (its process was killed)
    /// becomes `failed`: nothing finishes it now.
    fn settle(&self, r: DbInstanceRecord) -> Result<DbInstanceRecord> {
        if !r.is_transitional() {
            return Ok(r);
        }
        let Some(_lock) = self.try_lock(&r.identifier)? else {
            return Ok(r);
        };
        let was = r.status.clone();
        self.update(&r.identifier, |r| {
            if r.is_transitional() {
                r.status_message = Some(format!(
                    "the operation that had it {was} was interrupted (its process is gone)"
                ));
                r.status = status::FAILED.into();
            }
        })
    }

    /// The instance named `id` (any case), settled; DBInstanceNotFound.
    pub fn instance(&self, id: &str) -> Result<DbInstanceRecord> {
        let key = id.to_ascii_lowercase();
        let r = self.store().instance(&key)?.ok_or_else(|| not_found(id))?;
        self.settle(r)
    }

    /// Every instance, settled, in identifier order.
    pub fn instances(&self) -> Result<Vec<DbInstanceRecord>> {
        let all = self.store().instances()?;
        all.into_iter().map(|r| self.settle(r)).collect()
    }

    /// Changes the record of `identifier` in one transaction; the new record.
    pub fn update(
        &self,
        identifier: &str,
        f: impl FnOnce(&mut DbInstanceRecord),
    ) -> Result<DbInstanceRecord> {
        let now = self.now();
        self.store().write(|tx| {
            let mut r = tx
                .instance(identifier)?
                .ok_or_else(|| not_found(identifier))?;
            let before = r.status.clone();
            f(&mut r);
            if r.status != before {
                r.status_time = now;
                if r.status != status::FAILED {
                    r.status_message = None;
                }
            }
            tx.put_instance(&r)?;
            Ok(r)
        })
    }

    /// A key id, alias or ARN → the key's ARN, checked usable through RDS:
    /// KMSKeyNotAccessibleFault for a key that does not exist, is not enabled,
    /// or that the caller may not use. `alias/aws/rds` is made on first use.
    pub fn check_key(&self, caller: &Caller, key_id: &str) -> Result<String> {
        let via = caller.via(OWNER.service, self.region());
        let meta = if OWNER.is_default_alias(key_id) {
            self.kms.aws_managed_key(OWNER.managed_key())
        } else {
            self.kms
                .describe_key(
                    &via,
                    DescribeKeyRequest {
                        key_id: key_id.into(),
                        grant_tokens: vec![],
                    },
                )
                .map(|m| m.key_metadata)
        };
        let inaccessible = |why: &str| {
            err(
                ErrorKind::KmsKeyNotAccessible,
                format!(
                    "The specified KMS key [{key_id}] does not exist, is not enabled or you do not have permissions to access it. ({why})"
                ),
            )
            .with(crate::error::Field::KeyArn, key_id)
        };
        let meta = match meta {
            Ok(m) => m,
            Err(e) if e.kind().is_service_error() => return Err(inaccessible(e.message())),
            Err(e) => return Err(e),
        };
        if meta.key_state != "Enabled" {
            return Err(inaccessible(&format!("{} is {}", meta.arn, meta.key_state)));
        }
        if meta.key_spec != "SYMMETRIC_DEFAULT" || meta.key_usage != "ENCRYPT_DECRYPT" {
            return Err(invalid(format!(
                "The specified KMS key [{}] is not a symmetric encryption key: RDS encrypts storage only with symmetric keys.",
                meta.arn
            )));
        }
        Ok(meta.arn)
    }

    /// The state of the instance's key now (`Enabled`, `Disabled`,
    /// `PendingDeletion`, …; `Deleted` once it is gone), as RDS sees it through
    /// its grant. None for unencrypted instances.
    pub fn key_state(&self, r: &DbInstanceRecord) -> Result<Option<String>> {
        let Some(arn) = &r.kms_key_id else {
            return Ok(None);
        };
        Ok(Some(
            self.kms
                .key_state_seen_by_service(arn)?
                .unwrap_or_else(|| "Deleted".into()),
        ))
    }

    // ---- CreateDBInstance ---------------------------------------------------

    /// CreateDBInstance: validates and records the instance (`creating`), then
    /// `provision` makes it on the host while the instance's lock is held. The
    /// response is RDS's: the instance as accepted (`creating`). When
    /// `provision` fails the record is removed (provision undoes its own work).
    pub fn create_db_instance(
        &self,
        caller: &Caller,
        req: &CreateDbInstanceRequest,
        engine_version: &str,
        provision: impl FnOnce(&Provision<'_>) -> Result<()>,
    ) -> Result<Value> {
        let request = create_request_params(req);
        let arn = self.arn(&req.db_instance_identifier.to_ascii_lowercase());
        self.call(
            caller,
            "CreateDBInstance",
            request,
            std::slice::from_ref(&arn),
            || {
                self.create_op(
                    caller,
                    "rds:CreateDBInstance",
                    req,
                    engine_version,
                    &arn,
                    provision,
                )
            },
            |v| v.clone(),
        )
    }

    fn create_op(
        &self,
        caller: &Caller,
        action: &str,
        req: &CreateDbInstanceRequest,
        engine_version: &str,
        arn: &str,
        provision: impl FnOnce(&Provision<'_>) -> Result<()>,
    ) -> Result<Value> {
        let r = self.validate_create(req, engine_version)?;
        self.authorize(caller, action, arn)?;
        let mut r = r;
        let encrypted = req.storage_encrypted.unwrap_or(req.kms_key_id.is_some());
        if encrypted {
            let key = req.kms_key_id.as_deref().unwrap_or(OWNER.default_alias);
            r.kms_key_id = Some(self.check_key(caller, key)?);
        }
        r.storage_encrypted = encrypted;
        let lock = self
            .try_lock(&r.identifier)?
            .ok_or_else(|| already_exists(&r.identifier))?;
        self.store().write(|tx| {
            if tx.instance(&r.identifier)?.is_some() {
                return Err(already_exists(&r.identifier));
            }
            let all = tx.instances()?;
            if let Some(other) = all.iter().find(|i| i.port == r.port) {
                return Err(err(
                    ErrorKind::InvalidParameterCombination,
                    format!(
                        "Port {} is taken by DB instance {} (every instance listens on 127.0.0.1): give --port another value",
                        r.port, other.identifier
                    ),
                ));
            }
            if all.len() >= MAX_INSTANCES {
                return Err(err(
                    ErrorKind::InstanceQuotaExceeded,
                    format!(
                        "DB Instance quota exceeded: {} of {MAX_INSTANCES} DB instances exist in {}.",
                        all.len(),
                        self.region()
                    ),
                ));
            }
            let used: u64 = all.iter().map(|i| u64::from(i.allocated_storage)).sum();
            if used + u64::from(r.allocated_storage) > MAX_TOTAL_STORAGE_GIB {
                return Err(err(
                    ErrorKind::StorageQuotaExceeded,
                    format!(
                        "The request would exceed the storage quota: {used} GiB of {MAX_TOTAL_STORAGE_GIB} GiB are allocated in {}, and {} GiB more were asked for.",
                        self.region(),
                        r.allocated_storage
                    ),
                ));
            }
            tx.put_instance(&r)
        })?;
        let accepted = db_instance(&r, self.region(), self.account_id());
        let id = r.identifier.clone();
        let record_volume = |volume_id: &str| -> Result<()> {
            self.update(&id, |r| r.volume_id = Some(volume_id.to_string()))
                .map(|_| ())
        };
        let p = Provision {
            record: &r,
            record_volume: &record_volume,
            keep: std::cell::Cell::new(false),
        };
        let made = provision(&p);
        match made {
            Ok(()) => {
                self.update(&id, |r| r.status = status::AVAILABLE.into())?;
                drop(lock);
                Ok(accepted)
            }
            Err(e) if p.keep.get() => {
                let message = e.message().to_string();
                self.update(&id, |r| {
                    r.status = status::FAILED.into();
                    r.status_message = Some(message);
                })?;
                drop(lock);
                Err(e)
            }
            Err(e) => {
                // The host work undid itself; the record goes too.
                self.store().write(|tx| tx.delete_instance(&id))?;
                drop(lock);
                Err(e)
            }
        }
    }

    fn validate_create(
        &self,
        req: &CreateDbInstanceRequest,
        engine_version: &str,
    ) -> Result<DbInstanceRecord> {
        let identifier = check_identifier(&req.db_instance_identifier)?;
        if req.engine.is_empty() {
            return Err(invalid(
                "The parameter Engine must be provided and must not be blank.",
            ));
        }
        if req.engine != ENGINE {
            return Err(invalid(format!(
                "Invalid DB engine: {} (ebsim runs PostgreSQL: --engine postgres)",
                req.engine
            )));
        }
        if !req.db_instance_class.starts_with("db.") || req.db_instance_class.len() < 5 {
            return Err(invalid(format!(
                "Invalid DB Instance class: {}",
                req.db_instance_class
            )));
        }
        let storage_type = req.storage_type.clone().unwrap_or_else(|| "gp2".into());
        if !STORAGE_TYPES.contains(&storage_type.as_str()) {
            return Err(invalid(format!(
                "Invalid storage type: {storage_type} (ebsim makes gp2, gp3 and standard)"
            )));
        }
        let Some(storage) = req.allocated_storage else {
            return Err(invalid(
                "The parameter AllocatedStorage must be provided and must not be blank.",
            ));
        };
        if !STORAGE_GIB.contains(&storage) {
            return Err(invalid(format!(
                "Invalid storage size for engine name postgres and storage type {storage_type}: {storage}"
            )));
        }
        let user = req.master_username.as_deref().unwrap_or_default();
        if user.is_empty() {
            return Err(invalid(
                "The parameter MasterUsername must be provided and must not be blank.",
            ));
        }
        let user_ok = user.len() <= 63
            && user.starts_with(|c: char| c.is_ascii_alphabetic())
            && user.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !user_ok {
            return Err(invalid(format!(
                "The parameter MasterUsername is not a valid identifier: {user:?} (1 to 63 letters, digits or underscores, a letter first)"
            )));
        }
        if ["rdsadmin", "rdsrepladmin", "rds_superuser"]
            .contains(&user.to_ascii_lowercase().as_str())
        {
            return Err(invalid(format!(
                "MasterUsername {user} cannot be used as it is a reserved word used by the engine"
            )));
        }
        let Some(password) = req.master_user_password.as_deref() else {
            return Err(invalid(
                "The parameter MasterUserPassword must be provided and must not be blank.",
            ));
        };
        check_password(password)?;
        if let Some(n) = &req.db_name {
            let ok = !n.is_empty()
                && n.len() <= 63
                && n.starts_with(|c: char| c.is_ascii_alphabetic())
                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(invalid(format!(
                    "The parameter DBName is not a valid identifier: {n:?} (1 to 63 letters, digits or underscores, a letter first)"
                )));
            }
        }
        let retention = req.backup_retention_period.unwrap_or(1);
        if !(0..=35).contains(&retention) {
            return Err(invalid(format!(
                "Invalid backup retention period: {retention}. The value must be from 0 to 35."
            )));
        }
        let port = req.port.unwrap_or(5432);
        if !(1150..=65535).contains(&port) {
            return Err(invalid(format!(
                "Invalid port: {port}. Valid values: 1150-65535."
            )));
        }
        if req.storage_encrypted == Some(false) && req.kms_key_id.is_some() {
            return Err(err(
                ErrorKind::InvalidParameterCombination,
                "KmsKeyId can only be specified for an encrypted DB instance: set StorageEncrypted, or leave out KmsKeyId.",
            ));
        }
        if let Some(v) = &req.engine_version
            && v != engine_version
            && v.split('.').next() != engine_version.split('.').next()
        {
            return Err(err(
                ErrorKind::InvalidParameterCombination,
                format!(
                    "Cannot find version {v} for postgres (ebsim runs PostgreSQL {engine_version})"
                ),
            ));
        }
        let zones = crate::ec2::zones::zones_of(self.region());
        let zone = match &req.availability_zone {
            None => zones
                .first()
                .map(|z| z.zone_name.clone())
                .unwrap_or_default(),
            Some(z) if zones.iter().any(|k| &k.zone_name == z) => z.clone(),
            Some(z) => {
                return Err(invalid(format!(
                    "Availability Zone '{z}' is unavailable in this region, please choose another zone set."
                )));
            }
        };
        let now = self.now();
        Ok(DbInstanceRecord {
            identifier,
            resource_id: new_resource_id(),
            class: req.db_instance_class.clone(),
            engine: ENGINE.into(),
            engine_version: engine_version.into(),
            status: status::CREATING.into(),
            status_time: now,
            master_username: user.into(),
            db_name: req.db_name.clone(),
            allocated_storage: u32::try_from(storage).expect("checked range"),
            storage_type,
            port: u16::try_from(port).expect("checked range"),
            backup_retention_period: u32::try_from(retention).expect("checked range"),
            storage_encrypted: false,
            kms_key_id: None,
            volume_id: None,
            availability_zone: zone,
            create_time: now,
            tags: req.tags.clone(),
            deletion_protection: req.deletion_protection.unwrap_or(false),
            copy_tags_to_snapshot: req.copy_tags_to_snapshot.unwrap_or(false),
            status_message: None,
            read_replica_source: req.replica_of.clone(),
            replicas: Vec::new(),
            key_unusable_since: None,
        })
    }

    // ---- DescribeDBInstances -----------------------------------------------

    /// DescribeDBInstances: one instance (DBInstanceNotFound) or every one,
    /// `MaxRecords` (20–100) a page, `Marker` the next page's first identifier.
    /// `observe` may correct what a record says by what the host shows (a
    /// server or storage process that died) before it is answered.
    pub fn describe_db_instances(
        &self,
        caller: &Caller,
        req: &DescribeDbInstancesRequest,
        observe: impl Fn(DbInstanceRecord) -> Result<DbInstanceRecord>,
    ) -> Result<Value> {
        let request = json!({
            "DBInstanceIdentifier": req.db_instance_identifier,
            "MaxRecords": req.max_records,
            "Marker": req.marker,
        });
        self.call(
            caller,
            "DescribeDBInstances",
            request,
            &[],
            || {
                let resource = match &req.db_instance_identifier {
                    Some(id) => self.arn(&id.to_ascii_lowercase()),
                    None => format!("arn:aws:rds:{}:{}:db:*", self.region(), self.account_id()),
                };
                self.authorize(caller, "rds:DescribeDBInstances", &resource)?;
                let max = req.max_records.unwrap_or(100);
                if !(20..=100).contains(&max) {
                    return Err(invalid(format!(
                        "Invalid value {max} for MaxRecords. Must be between 20 and 100"
                    )));
                }
                let all = match &req.db_instance_identifier {
                    Some(id) => {
                        check_identifier(id)?;
                        vec![self.instance(id)?]
                    }
                    None => self.instances()?,
                };
                let start = req.marker.as_deref().unwrap_or("");
                let mut page: Vec<Value> = Vec::new();
                let mut marker = None;
                for r in all.into_iter().filter(|r| r.identifier.as_str() >= start) {
                    if page.len() == usize::try_from(max).expect("checked range") {
                        marker = Some(r.identifier.clone());
                        break;
                    }
                    let r = observe(r)?;
                    page.push(db_instance(&r, self.region(), self.account_id()));
                }
                let mut out = json!({ "DBInstances": page });
                if let Some(m) = marker {
                    out["Marker"] = json!(m);
                }
                Ok(out)
            },
            |_| Value::Null,
        )
    }

    // ---- Stop, Start, Reboot, Delete ------------------------------------------

    /// An operation on one existing instance: authorized, its lock taken, its
    /// status checked against `from` and set to `during`; `work` runs; the
    /// status becomes what `work` returns (or, when it fails, what it was
    /// for a refused key, else `failed`). The response is the instance
    /// `during`, as RDS answers.
    #[allow(clippy::too_many_arguments)]
    fn transition(
        &self,
        caller: &Caller,
        name: &'static str,
        id: &str,
        request: Value,
        from: &[&str],
        during: &str,
        work: impl FnOnce(&DbInstanceRecord) -> Result<&'static str>,
    ) -> Result<Value> {
        let key = id.to_ascii_lowercase();
        let arn = self.arn(&key);
        self.call(
            caller,
            name,
            request,
            std::slice::from_ref(&arn),
            || {
                check_identifier(id)?;
                self.authorize(caller, &format!("rds:{name}"), &arn)?;
                let r = self.instance(&key)?;
                let Some(_lock) = self.try_lock(&key)? else {
                    return Err(invalid_state(&r));
                };
                let r = self.instance(&key)?;
                if !from.contains(&r.status.as_str()) {
                    return Err(invalid_state(&r));
                }
                let was = r.status.clone();
                let before = self.update(&key, |r| r.status = during.into())?;
                // RDS answers with the instance as the request left it
                // (`stopping`, `starting`, `rebooting`).
                let answer = db_instance(&before, self.region(), self.account_id());
                match work(&before) {
                    Ok(next) => {
                        self.update(&key, |r| {
                            r.status = next.into();
                            if next == status::AVAILABLE {
                                r.key_unusable_since = None;
                            }
                        })?;
                        Ok(answer)
                    }
                    Err(e) => {
                        // A key RDS cannot use refuses the operation before
                        // its host work: the instance stays as it was. Any
                        // other failure came part way through: failed.
                        let back = if e.kind() == ErrorKind::KmsKeyNotAccessible {
                            was.clone()
                        } else {
                            status::FAILED.to_string()
                        };
                        let message = e.message().to_string();
                        self.update(&key, |r| {
                            r.status = back;
                            if r.status == status::FAILED {
                                r.status_message = Some(message);
                            }
                        })?;
                        Err(e)
                    }
                }
            },
            |v| v.clone(),
        )
    }

    /// StopDBInstance: `available` → `stopping` → `stopped`; with
    /// `DBSnapshotIdentifier`, `work` takes that snapshot first.
    pub fn stop_db_instance(
        &self,
        caller: &Caller,
        req: &DbInstanceRequest,
        work: impl FnOnce(&DbInstanceRecord) -> Result<()>,
    ) -> Result<Value> {
        if let Some(id) = &req.db_snapshot_identifier {
            self.free_snapshot_name(id)?;
        }
        if let Ok(r) = self.instance(&req.db_instance_identifier) {
            if r.read_replica_source.is_some() {
                return Err(err(
                    ErrorKind::InvalidDbInstanceState,
                    format!(
                        "Instance {} is a read replica and cannot be stopped.",
                        r.identifier
                    ),
                ));
            }
            if !r.replicas.is_empty() {
                return Err(err(
                    ErrorKind::InvalidDbInstanceState,
                    format!(
                        "Instance {} has read replicas ({}) and cannot be stopped.",
                        r.identifier,
                        r.replicas.join(", ")
                    ),
                ));
            }
        }
        self.transition(
            caller,
            "StopDBInstance",
            &req.db_instance_identifier,
            json!({ "DBInstanceIdentifier": req.db_instance_identifier }),
            &[status::AVAILABLE],
            status::STOPPING,
            |r| work(r).map(|()| status::STOPPED),
        )
    }

    /// StartDBInstance: `stopped` → `starting` → `available`. A key RDS cannot
    /// use leaves it stopped, with KMSKeyNotAccessibleFault.
    pub fn start_db_instance(
        &self,
        caller: &Caller,
        req: &DbInstanceRequest,
        work: impl FnOnce(&DbInstanceRecord) -> Result<()>,
    ) -> Result<Value> {
        if let Ok(r) = self.instance(&req.db_instance_identifier)
            && r.status == status::KEY_LOST
        {
            return Err(err(
                ErrorKind::InvalidDbInstanceState,
                format!(
                    "Instance {} cannot be started: its KMS key {} was unusable for more than {KEY_RECOVERY_DAYS} days (or was deleted), and the instance is in the terminal state {}. Restore a DB snapshot under a usable key.",
                    r.identifier,
                    r.kms_key_id.as_deref().unwrap_or_default(),
                    status::KEY_LOST
                ),
            ));
        }
        self.transition(
            caller,
            "StartDBInstance",
            &req.db_instance_identifier,
            json!({ "DBInstanceIdentifier": req.db_instance_identifier }),
            &[status::STOPPED, status::KEY_RECOVERABLE],
            status::STARTING,
            |r| {
                if let Some(arn) = &r.kms_key_id {
                    self.check_key(caller, arn)?;
                }
                work(r).map(|()| status::AVAILABLE)
            },
        )
    }

    /// RebootDBInstance: `available` (or, in ebsim, `failed`: how an instance
    /// whose server or storage died comes back) → `rebooting` → `available`.
    pub fn reboot_db_instance(
        &self,
        caller: &Caller,
        req: &DbInstanceRequest,
        work: impl FnOnce(&DbInstanceRecord) -> Result<()>,
    ) -> Result<Value> {
        if req.force_failover == Some(true) {
            return Err(err(
                ErrorKind::InvalidParameterCombination,
                "Reboot with failover can only be performed on a Multi-AZ DB instance.",
            ));
        }
        self.transition(
            caller,
            "RebootDBInstance",
            &req.db_instance_identifier,
            json!({ "DBInstanceIdentifier": req.db_instance_identifier }),
            &[status::AVAILABLE, status::FAILED],
            status::REBOOTING,
            |r| {
                if let Some(arn) = &r.kms_key_id {
                    self.check_key(caller, arn)?;
                }
                work(r).map(|()| status::AVAILABLE)
            },
        )
    }

    /// DeleteDBInstance: `SkipFinalSnapshot`, or `FinalDBSnapshotIdentifier`
    /// (a DB snapshot `final_snapshot` takes first; if it fails nothing is
    /// deleted); once every check has passed, `before` (its read replicas
    /// promoted); deletion protection off; the instance `deleting` while `work`
    /// takes down its server and storage, then its record is gone. The
    /// response is the instance `deleting`.
    pub fn delete_db_instance(
        &self,
        caller: &Caller,
        req: &DeleteDbInstanceRequest,
        before: impl FnOnce(&DbInstanceRecord) -> Result<()>,
        final_snapshot: impl FnOnce(&DbInstanceRecord) -> Result<String>,
        work: impl FnOnce(&DbInstanceRecord) -> Result<()>,
    ) -> Result<Value> {
        let id = req.db_instance_identifier.as_str();
        let key = id.to_ascii_lowercase();
        let arn = self.arn(&key);
        let request = json!({
            "DBInstanceIdentifier": id,
            "SkipFinalSnapshot": req.skip_final_snapshot,
            "FinalDBSnapshotIdentifier": req.final_db_snapshot_identifier,
        });
        self.call(
            caller,
            "DeleteDBInstance",
            request,
            std::slice::from_ref(&arn),
            || {
                check_identifier(id)?;
                self.authorize(caller, "rds:DeleteDBInstance", &arn)?;
                let skip = req.skip_final_snapshot.unwrap_or(false);
                match (&req.final_db_snapshot_identifier, skip) {
                    (None, false) => {
                        return Err(err(
                            ErrorKind::InvalidParameterCombination,
                            "FinalDBSnapshotIdentifier is required unless SkipFinalSnapshot is specified.",
                        ));
                    }
                    (Some(_), true) => {
                        return Err(err(
                            ErrorKind::InvalidParameterCombination,
                            "Cannot specify both FinalDBSnapshotIdentifier and SkipFinalSnapshot.",
                        ));
                    }
                    (Some(id), false) => {
                        self.free_snapshot_name(id)?;
                    }
                    (None, true) => {}
                }
                let r = self.instance(&key)?;
                let Some(lock) = self.try_lock(&key)? else {
                    return Err(invalid_state(&r));
                };
                let r = self.instance(&key)?;
                if r.is_transitional() {
                    return Err(invalid_state(&r));
                }
                if r.deletion_protection {
                    return Err(err(
                        ErrorKind::InvalidParameterCombination,
                        "Cannot delete protected DB Instance, please disable deletion protection and try again.",
                    ));
                }
                // Every check passed, the lock is held: what must go first
                // (its read replicas promoted) goes now.
                before(&r)?;
                let before = self.update(&key, |r| r.status = status::DELETING.into())?;
                let answer = db_instance(&before, self.region(), self.account_id());
                if let Some(id) = &req.final_db_snapshot_identifier
                    && let Err(e) = self.record_snapshot_of(&before, id, "manual", || {
                        final_snapshot(&before)
                    })
                {
                    // Nothing deleted; its server was taken down for the
                    // snapshot: reboot (or delete) goes on from failed.
                    let message = format!(
                        "its final snapshot failed, nothing was deleted: {}",
                        e.message()
                    );
                    self.update(&key, |x| {
                        x.status = status::FAILED.into();
                        x.status_message = Some(message);
                    })?;
                    return Err(e);
                }
                if let Err(e) = work(&before) {
                    let message = e.message().to_string();
                    self.update(&key, |r| {
                        r.status = status::FAILED.into();
                        r.status_message = Some(message);
                    })?;
                    return Err(e);
                }
                self.store().write(|tx| tx.delete_instance(&key))?;
                // The lock file stays: removing it would let a process that
                // opened it before and one that makes a new one both hold "the"
                // lock of a new instance of the same name.
                drop(lock);
                Ok(answer)
            },
            |v| v.clone(),
        )
    }
}

impl Rds {
    /// What the instance's key state now means for it, as RDS watches its keys:
    /// an `available` (or stopped) instance whose key is not usable becomes
    /// recoverable (`take_down` stops its server and detaches its storage
    /// first, while the data key is still in the attachment process's memory);
    /// a recoverable one whose key is usable again stays so until
    /// StartDBInstance; after [`KEY_RECOVERY_DAYS`] on ebsim's clock, or once
    /// the key is deleted, it becomes terminal. Skipped while an operation
    /// holds the instance.
    pub fn watch_key(
        &self,
        r: &DbInstanceRecord,
        take_down: impl FnOnce(&DbInstanceRecord) -> Result<()>,
    ) -> Result<()> {
        if r.kms_key_id.is_none()
            || ![status::AVAILABLE, status::STOPPED, status::KEY_RECOVERABLE]
                .contains(&r.status.as_str())
        {
            return Ok(());
        }
        let Some(state) = self.key_state(r)? else {
            return Ok(());
        };
        let Some(_lock) = self.try_lock(&r.identifier)? else {
            return Ok(());
        };
        let r = self.instance(&r.identifier)?;
        let usable = state == "Enabled";
        let deleted = state == "Deleted";
        match r.status.as_str() {
            status::AVAILABLE | status::STOPPED if !usable => {
                if r.status == status::AVAILABLE {
                    take_down(&r)?;
                }
                let key = r.kms_key_id.clone().unwrap_or_default();
                let now = self.now();
                self.update(&r.identifier, |r| {
                    r.key_unusable_since = Some(now);
                    r.status = if deleted {
                        status::KEY_LOST.into()
                    } else {
                        status::KEY_RECOVERABLE.into()
                    };
                    r.status_message = Some(format!("the KMS key {key} is {state}"));
                })?;
            }
            status::KEY_RECOVERABLE => {
                let since = r.key_unusable_since.unwrap_or(r.status_time);
                let expired = self.now() - since > chrono::TimeDelta::days(KEY_RECOVERY_DAYS);
                if deleted || (!usable && expired) {
                    self.update(&r.identifier, |r| r.status = status::KEY_LOST.into())?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// ModifyDBInstance: the instance class, backup retention, deletion
    /// protection, tag copying, (on a running instance, `set_password` does
    /// it) the master password, and a larger AllocatedStorage (`grow` does it,
    /// the instance `modifying` meanwhile), applied at once. The model has no
    /// member that changes the encryption or the key.
    pub fn modify_db_instance(
        &self,
        caller: &Caller,
        req: &ModifyDbInstanceRequest,
        set_password: impl FnOnce(&DbInstanceRecord, &str) -> Result<()>,
        grow: impl FnOnce(&DbInstanceRecord, u32) -> Result<()>,
    ) -> Result<Value> {
        let id = req.db_instance_identifier.as_str();
        let key = id.to_ascii_lowercase();
        let arn = self.arn(&key);
        let request = json!({
            "DBInstanceIdentifier": id,
            "DBInstanceClass": req.db_instance_class,
            "BackupRetentionPeriod": req.backup_retention_period,
            "DeletionProtection": req.deletion_protection,
            "CopyTagsToSnapshot": req.copy_tags_to_snapshot,
            "ApplyImmediately": req.apply_immediately,
            "AllocatedStorage": req.allocated_storage,
        });
        self.call(
            caller,
            "ModifyDBInstance",
            request,
            std::slice::from_ref(&arn),
            || {
                check_identifier(id)?;
                self.authorize(caller, "rds:ModifyDBInstance", &arn)?;
                if let Some(p) = &req.master_user_password {
                    check_password(p)?;
                }
                let r = self.instance(&key)?;
                let grow_to = match req.allocated_storage {
                    Some(gib) if gib != i64::from(r.allocated_storage) => {
                        self.check_growth(&r, gib)?;
                        Some(u32::try_from(gib).expect("checked range"))
                    }
                    _ => None,
                };
                if let Some(c) = &req.db_instance_class
                    && (!c.starts_with("db.") || c.len() < 5)
                {
                    return Err(invalid(format!("Invalid DB Instance class: {c}")));
                }
                if req.backup_retention_period == Some(0) && !r.replicas.is_empty() {
                    return Err(err(
                        ErrorKind::InvalidParameterCombination,
                        format!(
                            "The backup retention period of {} cannot be 0 while it is the source of read replicas ({}).",
                            r.identifier,
                            r.replicas.join(", ")
                        ),
                    ));
                }
                if let Some(n) = req.backup_retention_period
                    && !(0..=35).contains(&n)
                {
                    return Err(invalid(format!(
                        "Invalid backup retention period: {n}. The value must be from 0 to 35."
                    )));
                }
                let Some(_lock) = self.try_lock(&key)? else {
                    return Err(invalid_state(&r));
                };
                let r = self.instance(&key)?;
                if ![status::AVAILABLE, status::STOPPED].contains(&r.status.as_str()) {
                    return Err(invalid_state(&r));
                }
                if let Some(p) = &req.master_user_password {
                    // The server holds the password: it must be running.
                    if r.status != status::AVAILABLE {
                        return Err(invalid_state(&r));
                    }
                    set_password(&r, p)?;
                }
                if let Some(gib) = grow_to {
                    let was = r.status.clone();
                    self.update(&key, |x| x.status = status::MODIFYING.into())?;
                    if let Err(e) = grow(&r, gib) {
                        let message = format!("growing its storage failed: {}", e.message());
                        self.update(&key, |x| {
                            x.status = status::FAILED.into();
                            x.status_message = Some(message);
                        })?;
                        return Err(e);
                    }
                    self.update(&key, |x| {
                        x.status = was;
                        x.allocated_storage = gib;
                    })?;
                }
                let after = self.update(&key, |r| {
                    if let Some(c) = &req.db_instance_class {
                        r.class = c.clone();
                    }
                    if let Some(n) = req.backup_retention_period {
                        r.backup_retention_period = u32::try_from(n).expect("checked range");
                    }
                    if let Some(p) = req.deletion_protection {
                        r.deletion_protection = p;
                    }
                    if let Some(c) = req.copy_tags_to_snapshot {
                        r.copy_tags_to_snapshot = c;
                    }
                })?;
                Ok(db_instance(&after, self.region(), self.account_id()))
            },
            |v| v.clone(),
        )
    }
}

impl Rds {
    /// RDS's rules for a larger AllocatedStorage: never smaller, at most
    /// 65536 GiB, at least 10 % more, within the account's storage quota.
    fn check_growth(&self, r: &DbInstanceRecord, gib: i64) -> Result<()> {
        let now = i64::from(r.allocated_storage);
        if gib < now {
            return Err(invalid(format!(
                "Invalid storage size for engine name postgres and storage type {}: {gib}. The allocated storage of {} cannot be decreased from {now} GiB.",
                r.storage_type, r.identifier
            )));
        }
        if !STORAGE_GIB.contains(&gib) {
            return Err(invalid(format!(
                "Invalid storage size for engine name postgres and storage type {}: {gib}",
                r.storage_type
            )));
        }
        if gib * 10 < now * 11 {
            return Err(err(
                ErrorKind::InvalidParameterCombination,
                format!(
                    "The new allocated storage ({gib} GiB) must be at least 10% greater than the current allocated storage ({now} GiB)."
                ),
            ));
        }
        let used: u64 = self
            .instances()?
            .iter()
            .map(|i| u64::from(i.allocated_storage))
            .sum();
        let more = u64::try_from(gib - now).expect("checked above");
        if used + more > MAX_TOTAL_STORAGE_GIB {
            return Err(err(
                ErrorKind::StorageQuotaExceeded,
                format!(
                    "The request would exceed the storage quota: {used} GiB of {MAX_TOTAL_STORAGE_GIB} GiB are allocated in {}, and {more} GiB more were asked for.",
                    self.region()
                ),
            ));
        }
        Ok(())
    }
}

fn already_exists(id: &str) -> Error {
    err(
        ErrorKind::DbInstanceAlreadyExists,
        format!("DB instance already exists: {id}"),
    )
}

fn invalid_state(r: &DbInstanceRecord) -> Error {
    err(
        ErrorKind::InvalidDbInstanceState,
        format!(
            "Instance {} is not in a valid state for this operation: its status is {}.",
            r.identifier, r.status
        ),
    )
}

/// RDS for PostgreSQL's master password rules: 8 to 128 printable ASCII
/// characters, none of `/`, `"`, `@` or a space.
pub fn check_password(p: &str) -> Result<()> {
    if p.len() < 8 {
        return Err(invalid(
            "The parameter MasterUserPassword is not a valid password because it is shorter than 8 characters.",
        ));
    }
    if p.len() > 128 {
        return Err(invalid(
            "The parameter MasterUserPassword is not a valid password because it is longer than 128 characters.",
        ));
    }
    if !p
        .chars()
        .all(|c| c.is_ascii_graphic() && !matches!(c, '/' | '"' | '@'))
    {
        return Err(invalid(
            "The parameter MasterUserPassword is not a valid password. Only printable ASCII characters besides '/', '@', '\"', ' ' may be used.",
        ));
    }
    Ok(())
}

/// CreateDBInstance's requestParameters: what the request gave, never the
/// password.
fn create_request_params(req: &CreateDbInstanceRequest) -> Value {
    json!({
        "DBInstanceIdentifier": req.db_instance_identifier,
        "DBInstanceClass": req.db_instance_class,
        "Engine": req.engine,
        "EngineVersion": req.engine_version,
        "AllocatedStorage": req.allocated_storage,
        "MasterUsername": req.master_username,
        "DBName": req.db_name,
        "Port": req.port,
        "BackupRetentionPeriod": req.backup_retention_period,
        "StorageEncrypted": req.storage_encrypted,
        "KmsKeyId": req.kms_key_id,
        "StorageType": req.storage_type,
        "AvailabilityZone": req.availability_zone,
        "Tags": if req.tags.is_empty() { Value::Null } else { json!(req.tags) },
        "DeletionProtection": req.deletion_protection,
        "CopyTagsToSnapshot": req.copy_tags_to_snapshot,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_follow_rds_s_rules_and_are_lowercased() {
        assert_eq!(check_identifier("My-DB1").unwrap(), "my-db1");
        for bad in ["", "1db", "db-", "d--b", "db_1", &"a".repeat(64)] {
            let e = check_identifier(bad).unwrap_err();
            assert_eq!(e.code(), "InvalidParameterValue", "{bad}");
        }
    }

    #[test]
    fn passwords_follow_rds_for_postgresql_s_rules() {
        check_password("abcdefgh").unwrap();
        check_password("pa$$w0rd!#%").unwrap();
        for bad in [
            "short",
            "has space1",
            "has/slash",
            "has@at12",
            "has\"quote",
            &"x".repeat(129),
        ] {
            assert!(check_password(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resource_ids_are_db_and_26_upper_case_letters_and_digits() {
        let id = new_resource_id();
        assert_eq!(id.len(), 29);
        assert!(id.starts_with("db-"));
        assert!(
            id[3..]
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        );
    }

    #[test]
    fn trail_members_lower_their_first_letter_and_drop_nulls() {
        let v = trail_names(json!({
            "DBInstanceIdentifier": "db1",
            "KmsKeyId": null,
            "TagList": [{"Key": "a", "Value": "b"}],
        }));
        assert_eq!(
            v,
            json!({ "dBInstanceIdentifier": "db1", "tagList": [{"key": "a", "value": "b"}] })
        );
    }

    #[test]
    fn a_create_request_s_record_holds_no_password() {
        let req: CreateDbInstanceRequest = serde_json::from_value(json!({
            "DBInstanceIdentifier": "db1",
            "MasterUserPassword": "hunter2-hunter2",
        }))
        .unwrap();
        let v = create_request_params(&req).to_string();
        assert!(!v.contains("hunter2"), "{v}");
    }
}
