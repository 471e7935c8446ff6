//! EC2's volume API over ebsim's images and KMS (shared/reference/kms-ebs.md §2).
//!
//! - `model.rs`: request/response shapes with AWS's names, and the stored record.
//! - `store.rs`: `regions/<region>/ec2.db` (volume records, EBS account settings).
//! - `authz.rs`: every call authorized by IAM identity policies with EC2's action
//!   names, resource ARNs and condition keys (UnauthorizedOperation otherwise).
//! - `trail.rs`: every call's CloudTrail record (`ec2.amazonaws.com`).
//! - this file: CreateVolume, DescribeVolumes, DeleteVolume, ModifyVolume, the
//!   encryption-by-default settings, and attach / detach.
//!
//! Each public operation takes the caller and follows the KMS's pattern: one
//! `call` wrapper for the audit record; inside, validate → resolve the resources
//! → authorize → state checks → DryRun → work.
//!
//! KMS calls are made by the volume service on the caller's behalf, as the volume
//! owner ([`VolumeOwner::EC2`]) says: `kms:ViaService` is `ec2.<region>.amazonaws.com`;
//! GenerateDataKeyWithoutPlaintext (64 bytes, context `aws:ebs:id`) at creation;
//! CreateGrant for the attaching instance (constraint EncryptionContextSubset,
//! `kms:GrantIsForAWSResource`) and Decrypt by that instance's infrastructure
//! principal at attach; RetireGrant at detach.

pub mod authz;
pub mod direct;
pub mod instances;
pub mod model;
pub mod pending;
mod rekey;
mod snapshots;
pub mod store;
mod tags;
mod trail;
pub mod zones;

use crate::clock::Timestamp;
use crate::crypto::secret::SecretBytes;
use crate::error::{Error, ErrorKind, Result};
use crate::home::DataRoot;
use crate::kms::Kms;
use crate::kms::access::Caller;
use crate::kms::api::{
    Blob, CreateGrantRequest, DecryptRequest, DescribeKeyRequest, GenerateDataKeyRequest,
    GrantConstraints, RetireGrantRequest,
};
use crate::volume::header::{Cipher, DATA_UNIT, Header, ZERO_UNIT_IS_HOLE};
use crate::volume::image::{self, Image};
use crate::volume::owner::VolumeOwner;
use authz::Target;
use model::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

const BY_DEFAULT: &str = "ebs_encryption_by_default";
const DEFAULT_KEY: &str = "ebs_default_kms_key_id";
/// Set while unreferenced snapshot blocks wait to be collected.
const COLLECT_BLOCKS: &str = "snapshot_blocks_to_collect";
/// What GetEbsDefaultKmsKeyId answers while no key was chosen.
pub const DEFAULT_KEY_ALIAS: &str = VolumeOwner::EC2.default_alias;
/// Largest volume: 64 TiB (io2 Block Express; gp3 stops at 16 TiB).
const MAX_BYTES: u64 = 64 << 40;
const VOLUME_TYPES: &[&str] = &["gp2", "gp3", "io1", "io2", "st1", "sc1", "standard"];

/// The EC2 volume service of one region.
pub struct Ec2 {
    kms: Kms,
    /// Whose volumes these are: encryption contexts, default key, kms:ViaService.
    owner: &'static VolumeOwner,
    store: Mutex<store::Store>,
    dir: PathBuf,
    root: DataRoot,
    /// Snapshot blocks (the data root's local store today).
    blocks: std::sync::Arc<dyn crate::snapshot::BlockStore>,
    progress: Option<Progress>,
    /// Set (by a signal handler, or a control client that went away) to stop long
    /// operations; they clean up and fail with ErrorKind::Interrupted.
    cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// What opening the region settled (interrupted operations, temporary files).
    recovered: pending::Recovered,
    /// The region's audit log (the KMS's file): EC2's own calls.
    trail: crate::kms::audit::AuditLog,
    /// IAM, opened on the first call by a principal that has identity policies.
    iam: Mutex<Option<crate::iam::Iam>>,
    /// The host attachments live on: what holds a dead attachment, and clearing
    /// what it left. EC2 itself never touches a mount or a socket.
    host: std::sync::Arc<dyn AttachmentHost>,
}

/// What the EC2 engine needs from the host its attachments are served on. The
/// service layer gives each engine it opens the Linux host's (`src/host/linux.rs`);
/// an engine made with [`Ec2::new`] has [`NoHost`]; tests may inject another.
pub trait AttachmentHost: Send + Sync {
    /// What on this host still holds attachment `a` of `volume_id` (a mounted
    /// filesystem, a loop device, a process with the file open), one line each.
    fn holders(&self, volume_id: &str, a: &AttachmentRecord) -> Vec<String>;
    /// Clears what a dead attachment process left that holds nothing (its FUSE
    /// mount, its NBD and control sockets). Best effort.
    fn clear_dead(&self, volume_id: &str, a: &AttachmentRecord);
    /// Releases what holds attachment `a` (`ebsim unmount`, `detach-volume
    /// --force`): the filesystem on it, its loop devices and, when its process
    /// is gone, its FUSE mount. Returns what it did.
    fn release(
        &self,
        volume_id: &str,
        a: &AttachmentRecord,
        process_gone: bool,
    ) -> Result<Vec<String>>;
    /// Removes the control sockets of attachment processes that are gone
    /// (`live(volume_id)` says whether one is alive); returns the files removed.
    fn clear_stale_sockets(&self, live: &dyn Fn(&str) -> bool) -> Vec<PathBuf>;
    /// The host of `region`'s attachments, for the engine of another region this
    /// one opens (a cross-region copy's source). None: that engine gets [`NoHost`].
    fn for_region(&self, _region: &str) -> Result<Option<std::sync::Arc<dyn AttachmentHost>>> {
        Ok(None)
    }
}

/// A host that serves no attachments: nothing holds one, nothing is left to
/// clear. What an engine made with [`Ec2::new`] has (tests, in-process attaches).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHost;

impl AttachmentHost for NoHost {
    fn holders(&self, _volume_id: &str, _a: &AttachmentRecord) -> Vec<String> {
        Vec::new()
    }
    fn clear_dead(&self, _volume_id: &str, _a: &AttachmentRecord) {}
    fn release(
        &self,
        _volume_id: &str,
        _a: &AttachmentRecord,
        _process_gone: bool,
    ) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    fn clear_stale_sockets(&self, _live: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
        Vec::new()
    }
}

/// The message a volume in `error` shows, and the error attaching it again
/// gives: the attachment process of `a` is gone but `holders` still hold it.
pub fn stale_message(volume_id: &str, a: &AttachmentRecord, holders: &[String]) -> String {
    let fix = match &a.mounted_at {
        Some(m) => format!(
            "run ebsim unmount {m}, or ebsim ec2 detach-volume --volume-id {volume_id} --force"
        ),
        None => {
            format!("stop them, or run ebsim ec2 detach-volume --volume-id {volume_id} --force")
        }
    };
    format!(
        "the attachment process {} of {volume_id} is gone, but {}: {fix}",
        a.pid,
        holders.join("; ")
    )
}

/// Reports progress of long operations: (what, done, total). Called from several
/// threads.
pub type ProgressFn = dyn Fn(&str, u64, u64) + Send + Sync;
pub type Progress = std::sync::Arc<ProgressFn>;

fn err(kind: ErrorKind, msg: impl Into<String>) -> Error {
    Error::new(kind, msg)
}

fn not_found(id: &str) -> Error {
    err(
        ErrorKind::InvalidVolumeNotFound,
        format!("The volume '{id}' does not exist."),
    )
    .with(crate::error::Field::VolumeId, id)
}

/// `vol-` and 8 or 17 hex digits, as EC2 accepts.
pub fn check_volume_id(id: &str) -> Result<()> {
    check_resource_id(id, "vol", ErrorKind::InvalidVolumeIdMalformed)
}

/// `PREFIX-` and 8 or 17 hex digits (EC2's resource ids: `vol-`, `i-`, `ami-`),
/// else `malformed` with EC2's message.
fn check_resource_id(id: &str, prefix: &str, malformed: ErrorKind) -> Result<()> {
    let ok = id
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('-'))
        .is_some_and(|h| {
            (h.len() == 8 || h.len() == 17) && h.bytes().all(|b| b.is_ascii_hexdigit())
        });
    if ok {
        Ok(())
    } else {
        Err(err(
            malformed,
            format!("Invalid id: \"{id}\" (expecting \"{prefix}-...\")"),
        ))
    }
}

/// DescribeVolumes', DescribeTags' and DescribeInstances' `MaxResults`: 5 to 1000.
fn check_max_results(max: Option<u32>) -> Result<()> {
    match max {
        Some(m) if !(5..=1000).contains(&m) => Err(err(
            ErrorKind::InvalidParameterValue,
            format!(
                "Value ( {m} ) for parameter maxResults is invalid. Expecting a value between 5 and 1000."
            ),
        )),
        _ => Ok(()),
    }
}

/// A filter name a Describe understands: one of `known`, or `tag:KEY`.
fn check_filter_name(name: &str, known: &[&str]) -> Result<()> {
    if known.contains(&name) || name.strip_prefix("tag:").is_some_and(|k| !k.is_empty()) {
        Ok(())
    } else {
        Err(err(
            ErrorKind::InvalidParameterValue,
            format!("The filter '{name}' is invalid"),
        ))
    }
}

/// The values of the tag filters (`tag-key`, `tag:KEY`) for a resource with
/// `tags`; None for any other filter name.
fn tag_filter_values(tags: &[Tag], name: &str) -> Option<Vec<String>> {
    if name == "tag-key" {
        return Some(tags.iter().map(|t| t.key.clone()).collect());
    }
    let k = name.strip_prefix("tag:")?;
    Some(
        tags.iter()
            .filter(|t| t.key == k)
            .map(|t| t.value.clone())
            .collect(),
    )
}

fn new_id(prefix: &str) -> String {
    let b = crate::crypto::random_bytes(9);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{prefix}-{}", &hex[..17])
}

fn new_volume_id() -> String {
    new_id("vol")
}

fn new_data_key_id() -> String {
    new_id("dek")
}

fn dry_run(flag: bool) -> Result<()> {
    if flag {
        Err(err(
            ErrorKind::Ec2DryRun,
            "Request would have succeeded, but DryRun flag is set.",
        ))
    } else {
        Ok(())
    }
}

/// AWS's glob in filter values: `*` any run, `?` one character.
fn glob(pattern: &str, value: &str) -> bool {
    crate::policy::glob(pattern, value)
}

/// The principal the owner's infrastructure uses for instance `instance_id`
/// (`ACCOUNT:aws:ec2-infrastructure:i-…`, `…:aws:rds-infrastructure:db-…`):
/// the grantee of an attachment's grant.
fn infrastructure(owner: &VolumeOwner, account: &str, region: &str, instance_id: &str) -> Caller {
    Caller::infrastructure(account, owner.service, region, instance_id)
}

impl Ec2 {
    /// The volume service of `kms`'s region, on `root`, with no host to serve
    /// attachments on ([`NoHost`]): attachments are made in process.
    pub fn new(root: &DataRoot, kms: Kms) -> Result<Self> {
        Self::with_host(root, kms, std::sync::Arc::new(NoHost))
    }

    /// The volume service of `kms`'s region, on `root`, its attachments served on
    /// `host` (which opening the region already asks to clear what dead
    /// attachment processes left).
    pub fn with_host(
        root: &DataRoot,
        kms: Kms,
        host: std::sync::Arc<dyn AttachmentHost>,
    ) -> Result<Self> {
        Self::for_owner(root, kms, host, &VolumeOwner::EC2)
    }

    /// The volumes `owner` keeps in `kms`'s region, in the owner's directory
    /// (its own store, images, snapshot blocks and pending operations). An
    /// owner other than EC2 (RDS's storage) authorizes its own API before it
    /// calls here: this engine checks no `ec2:` action and writes no EC2
    /// CloudTrail record for it; its KMS calls go through the owner's service.
    pub fn for_owner(
        root: &DataRoot,
        kms: Kms,
        host: std::sync::Arc<dyn AttachmentHost>,
        owner: &'static VolumeOwner,
    ) -> Result<Self> {
        let base = owner.base_dir(&root.region_dir(kms.region())?);
        crate::fsutil::ensure_private_dir(&base)?;
        let dir = base.join("volumes");
        crate::fsutil::ensure_private_dir(&dir)?;
        let store = store::Store::open_for(root, kms.region(), owner)?;
        let blocks = std::sync::Arc::new(crate::snapshot::LocalStore::open(
            &base.join("snapshots").join("blocks"),
        )?);
        let trail = crate::kms::audit::AuditLog::open(kms.audit_log_path())?;
        let mut ec2 = Ec2 {
            kms,
            owner,
            store: Mutex::new(store),
            dir,
            root: root.clone(),
            blocks,
            progress: None,
            cancel: None,
            recovered: Default::default(),
            trail,
            iam: Mutex::new(None),
            host,
        };
        ec2.recovered = ec2.recover()?;
        if ec2.block_collection_requested()? {
            ec2.collect_blocks()?;
        }
        Ok(ec2)
    }

    /// What opening the region settled: operations a killed process left pending,
    /// and temporary files removed.
    pub fn recovered(&self) -> &pending::Recovered {
        &self.recovered
    }

    /// Long operations (snapshots, copies, restores) stop when `flag` is set.
    pub fn set_cancel(&mut self, flag: std::sync::Arc<std::sync::atomic::AtomicBool>) {
        self.cancel = Some(flag);
    }

    /// Fails with Interrupted once a cancel flag (the service's or `extra`) is set.
    pub(crate) fn check_cancel(&self, extra: Option<&std::sync::atomic::AtomicBool>) -> Result<()> {
        use std::sync::atomic::Ordering;
        let set = self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
            || extra.is_some_and(|c| c.load(Ordering::Relaxed));
        if set {
            Err(Error::new(
                ErrorKind::Interrupted,
                "the operation was interrupted; nothing of it was kept",
            ))
        } else {
            Ok(())
        }
    }

    pub fn kms(&self) -> &Kms {
        &self.kms
    }

    /// The flag that stops long operations ([`Ec2::set_cancel`]), if one was set.
    pub fn cancel_flag(&self) -> Option<std::sync::Arc<std::sync::atomic::AtomicBool>> {
        self.cancel.clone()
    }

    /// Serves attachments on `host` from now on.
    pub fn set_host(&mut self, host: std::sync::Arc<dyn AttachmentHost>) {
        self.host = host;
    }

    /// The host attachments live on.
    pub fn host(&self) -> &dyn AttachmentHost {
        &*self.host
    }

    /// Where long operations (snapshots, copies, restores) report progress.
    pub fn set_progress(&mut self, p: Progress) {
        self.progress = Some(p);
    }

    /// The reporter [`Ec2::set_progress`] installed, for operations that report
    /// progress through a callback of their own (RekeyVolume).
    pub fn progress_reporter(&self) -> Option<Progress> {
        self.progress.clone()
    }

    /// A counter for one long operation over `total` items; `cancel` stops it too.
    pub(crate) fn progress<'a>(
        &'a self,
        what: &str,
        total: u64,
        cancel: Option<&'a std::sync::atomic::AtomicBool>,
    ) -> Counter<'a> {
        Counter {
            ec2: self,
            report: self.progress.as_deref(),
            what: what.to_string(),
            total,
            done: std::sync::atomic::AtomicU64::new(0),
            cancel,
            snapshot: None,
        }
    }

    pub fn region(&self) -> &str {
        self.kms.region()
    }

    /// Whose volumes these are.
    pub fn owner(&self) -> &'static VolumeOwner {
        self.owner
    }

    /// The owner's directory in the region (the region's own for EC2).
    pub(crate) fn base_dir(&self) -> Result<PathBuf> {
        Ok(self.owner.base_dir(&self.root.region_dir(self.region())?))
    }

    /// The image file of `volume_id`.
    pub fn image_path(&self, volume_id: &str) -> PathBuf {
        self.dir.join(format!("{volume_id}.img"))
    }

    fn write<T>(&self, f: impl FnOnce(&mut store::Tx<'_>) -> Result<T>) -> Result<T> {
        self.store.lock().expect("ec2 store").write(f)
    }

    fn record(&self, id: &str) -> Result<VolumeRecord> {
        check_volume_id(id)?;
        self.store
            .lock()
            .expect("ec2 store")
            .volume(id)?
            .ok_or_else(|| not_found(id))
    }

    /// True if some process holds the image's attachment lock: the attachment
    /// process on record is alive (a dead one's lock went with it).
    pub fn attached_now(&self, volume_id: &str) -> bool {
        match std::fs::File::open(self.image_path(volume_id)) {
            Ok(f) => matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock)),
            Err(_) => false,
        }
    }

    /// A record whose attachment's process is gone is shown (and stored) as
    /// available, its grant retired — unless something on the host still holds
    /// what that process served (a mounted filesystem, a loop device, an open
    /// file): then the volume shows `error` with what holds it, and nothing is
    /// changed until `ebsim unmount` or `detach-volume --force` releases it.
    fn repair(&self, v: &mut VolumeRecord) -> Result<()> {
        if v.attachment.is_none() || self.attached_now(&v.volume_id) {
            return Ok(());
        }
        let a = v.attachment.as_ref().expect("checked");
        let holders = self.host.holders(&v.volume_id, a);
        if !holders.is_empty() {
            v.state = "error".into();
            v.state_message = Some(stale_message(&v.volume_id, a, &holders));
            return Ok(());
        }
        let stale = v.attachment.take().expect("checked");
        v.state = "available".into();
        self.retire_quietly(&stale);
        self.host.clear_dead(&v.volume_id, &stale);
        let id = v.volume_id.clone();
        self.write(|tx| {
            if let Some(mut cur) = tx.volume(&id)?
                && cur.attachment.as_ref() == Some(&stale)
            {
                cur.attachment = None;
                cur.state = "available".into();
                tx.put_volume(&cur)?;
            }
            Ok(())
        })
    }

    fn retire_quietly(&self, a: &AttachmentRecord) {
        if let (Some(grant_id), Some(key)) = (&a.grant_id, &a.key_arn) {
            let _ = self.kms.retire_grant(
                &infrastructure(
                    self.owner,
                    self.kms.account_id(),
                    self.region(),
                    &a.instance_id,
                ),
                RetireGrantRequest {
                    key_id: Some(key.clone()),
                    grant_id: Some(grant_id.clone()),
                    ..Default::default()
                },
            );
        }
    }

    // ---- account settings -------------------------------------------------

    fn by_default(&self) -> Result<bool> {
        Ok(self
            .store
            .lock()
            .expect("ec2 store")
            .setting(BY_DEFAULT)?
            .as_deref()
            == Some("true"))
    }

    pub fn get_ebs_encryption_by_default(&self, caller: &Caller) -> Result<EbsEncryptionByDefault> {
        self.get_ebs_encryption_by_default_with(caller, false)
    }

    /// GetEbsEncryptionByDefault; `dry`: EC2's DryRun (authorized, then
    /// DryRunOperation).
    pub fn get_ebs_encryption_by_default_with(
        &self,
        caller: &Caller,
        dry: bool,
    ) -> Result<EbsEncryptionByDefault> {
        let name = "GetEbsEncryptionByDefault";
        let request = trail::wrapped_request(name, json!({}));
        self.call(
            caller,
            name,
            request,
            |_| {
                self.authorize(caller, "ec2:GetEbsEncryptionByDefault", &[Target::any()])?;
                dry_run(dry)?;
                Ok(EbsEncryptionByDefault {
                    ebs_encryption_by_default: self.by_default()?,
                    sse_type: Some("sse-ebs".into()),
                })
            },
            |_| Value::Null,
        )
    }

    /// EnableEbsEncryptionByDefault (`on`) or DisableEbsEncryptionByDefault.
    pub fn set_ebs_encryption_by_default(
        &self,
        caller: &Caller,
        on: bool,
    ) -> Result<EbsEncryptionByDefault> {
        self.set_ebs_encryption_by_default_with(caller, on, false)
    }

    /// [`Ec2::set_ebs_encryption_by_default`] with EC2's DryRun.
    pub fn set_ebs_encryption_by_default_with(
        &self,
        caller: &Caller,
        on: bool,
        dry: bool,
    ) -> Result<EbsEncryptionByDefault> {
        let name = if on {
            "EnableEbsEncryptionByDefault"
        } else {
            "DisableEbsEncryptionByDefault"
        };
        self.call(
            caller,
            name,
            trail::wrapped_request(name, json!({})),
            |_| {
                self.authorize(caller, &format!("ec2:{name}"), &[Target::any()])?;
                dry_run(dry)?;
                self.write(|tx| tx.put_setting(BY_DEFAULT, Some(if on { "true" } else { "false" })))?;
                Ok(EbsEncryptionByDefault {
                    ebs_encryption_by_default: on,
                    sse_type: None,
                })
            },
            |r| json!({ format!("{name}Response"): { "ebsEncryptionByDefault": r.ebs_encryption_by_default } }),
        )
    }

    /// The region's default key as stored (the owner's default alias,
    /// `alias/aws/ebs`, until one is chosen).
    fn default_key_id(&self) -> Result<String> {
        let k = self.store.lock().expect("ec2 store").setting(DEFAULT_KEY)?;
        Ok(k.unwrap_or_else(|| self.owner.default_alias.into()))
    }

    /// The caller, calling KMS through the volumes' owner (`kms:ViaService`).
    fn via(&self, caller: &Caller) -> Caller {
        caller.via(self.owner.service, self.region())
    }

    /// The encryption context a data key of volume or snapshot `id` is bound to.
    fn context(&self, id: &str) -> BTreeMap<String, String> {
        self.owner.context(id)
    }

    pub fn get_ebs_default_kms_key_id(&self, caller: &Caller) -> Result<EbsDefaultKmsKeyId> {
        self.get_ebs_default_kms_key_id_with(caller, false)
    }

    /// [`Ec2::get_ebs_default_kms_key_id`] with EC2's DryRun.
    pub fn get_ebs_default_kms_key_id_with(
        &self,
        caller: &Caller,
        dry: bool,
    ) -> Result<EbsDefaultKmsKeyId> {
        let name = "GetEbsDefaultKmsKeyId";
        self.call(
            caller,
            name,
            trail::wrapped_request(name, json!({})),
            |_| {
                self.authorize(caller, "ec2:GetEbsDefaultKmsKeyId", &[Target::any()])?;
                dry_run(dry)?;
                Ok(EbsDefaultKmsKeyId {
                    kms_key_id: self.default_key_id()?,
                })
            },
            |_| Value::Null,
        )
    }

    /// Sets the region's default key for EBS encryption; the key must exist in this
    /// region and be usable by the caller through EC2. Stores and returns its ARN.
    pub fn modify_ebs_default_kms_key_id(
        &self,
        caller: &Caller,
        key_id: &str,
    ) -> Result<EbsDefaultKmsKeyId> {
        self.modify_ebs_default_kms_key_id_with(caller, key_id, false)
    }

    /// [`Ec2::modify_ebs_default_kms_key_id`] with EC2's DryRun (the key is
    /// resolved first: a key the caller cannot use fails as it would).
    pub fn modify_ebs_default_kms_key_id_with(
        &self,
        caller: &Caller,
        key_id: &str,
        dry: bool,
    ) -> Result<EbsDefaultKmsKeyId> {
        let name = "ModifyEbsDefaultKmsKeyId";
        self.call(
            caller,
            name,
            trail::wrapped_request(name, json!({ "KmsKeyId": key_id })),
            |_| {
                self.authorize(caller, "ec2:ModifyEbsDefaultKmsKeyId", &[Target::any()])?;
                let arn = self.resolve_key(caller, key_id)?;
                dry_run(dry)?;
                self.write(|tx| tx.put_setting(DEFAULT_KEY, Some(&arn)))?;
                Ok(EbsDefaultKmsKeyId { kms_key_id: arn })
            },
            |r| json!({ "ModifyEbsDefaultKmsKeyIdResponse": { "kmsKeyId": r.kms_key_id } }),
        )
    }

    /// Back to the AWS managed key `alias/aws/ebs` (created on first use).
    pub fn reset_ebs_default_kms_key_id(&self, caller: &Caller) -> Result<EbsDefaultKmsKeyId> {
        self.reset_ebs_default_kms_key_id_with(caller, false)
    }

    /// [`Ec2::reset_ebs_default_kms_key_id`] with EC2's DryRun.
    pub fn reset_ebs_default_kms_key_id_with(
        &self,
        caller: &Caller,
        dry: bool,
    ) -> Result<EbsDefaultKmsKeyId> {
        let name = "ResetEbsDefaultKmsKeyId";
        self.call(
            caller,
            name,
            trail::wrapped_request(name, json!({})),
            |_| {
                self.authorize(caller, "ec2:ResetEbsDefaultKmsKeyId", &[Target::any()])?;
                dry_run(dry)?;
                let arn = self.kms.aws_managed_key(self.owner.managed_key())?.arn;
                self.write(|tx| tx.put_setting(DEFAULT_KEY, None))?;
                Ok(EbsDefaultKmsKeyId { kms_key_id: arn })
            },
            |r| json!({ "ResetEbsDefaultKmsKeyIdResponse": { "kmsKeyId": r.kms_key_id } }),
        )
    }

    /// A key id, alias or ARN → the key's ARN, as the caller sees it through EC2.
    /// `alias/aws/ebs` is created on first use. Another region's ARN is refused:
    /// KMS keys are regional.
    fn resolve_key(&self, caller: &Caller, key_id: &str) -> Result<String> {
        if let Some(rest) = key_id.strip_prefix("arn:aws:kms:") {
            let region = rest.split(':').next().unwrap_or_default();
            if region != self.region() {
                return Err(err(
                    ErrorKind::InvalidParameterValue,
                    format!(
                        "The KMS key {key_id} is in {region}; volumes in {} can only use KMS keys of {}.",
                        self.region(),
                        self.region()
                    ),
                ));
            }
        }
        if self.owner.is_default_alias(key_id) {
            return Ok(self.kms.aws_managed_key(self.owner.managed_key())?.arn);
        }
        let meta = self
            .kms
            .describe_key(
                &self.via(caller),
                DescribeKeyRequest {
                    key_id: key_id.into(),
                    grant_tokens: vec![],
                },
            )?
            .key_metadata;
        if meta.key_spec != "SYMMETRIC_DEFAULT" {
            return Err(err(
                ErrorKind::InvalidParameterValue,
                format!(
                    "{} is not a symmetric encryption KMS key; EBS supports only symmetric keys.",
                    meta.arn
                ),
            ));
        }
        Ok(meta.arn)
    }

    /// `zone` must be one of the zones DescribeAvailabilityZones lists
    /// (`<region>a` to `<region>c`).
    fn check_zone(&self, zone: &str) -> Result<()> {
        let zone_ok = zones::zones_of(self.region())
            .iter()
            .any(|z| z.zone_name == zone);
        if zone_ok {
            Ok(())
        } else {
            Err(err(
                ErrorKind::InvalidZoneNotFound,
                format!("The zone '{zone}' does not exist."),
            ))
        }
    }

    // ---- CreateVolume -----------------------------------------------------

    pub fn create_volume(&self, caller: &Caller, req: CreateVolumeRequest) -> Result<Volume> {
        let zone = req
            .availability_zone
            .clone()
            .unwrap_or_else(|| format!("{}a", self.region()));
        self.call(
            caller,
            "CreateVolume",
            trail::create_volume_request(&req, &zone),
            |t| self.create_volume_op(caller, req, zone, t),
            trail::volume_response,
        )
    }

    fn create_volume_op(
        &self,
        caller: &Caller,
        req: CreateVolumeRequest,
        zone: String,
        trail: &mut trail::Trail,
    ) -> Result<Volume> {
        let region = self.region().to_string();
        self.check_zone(&zone)?;
        let snap = match &req.snapshot_id {
            Some(id) => Some(self.snapshot_record(id)?),
            None => None,
        };
        if let Some(sn) = &snap {
            trail
                .resources
                .push(authz::snapshot_arn(&region, &sn.snapshot_id));
        }
        let size_bytes = match (req.size, req.size_bytes) {
            (Some(_), Some(_)) => {
                return Err(err(
                    ErrorKind::InvalidParameterCombination,
                    "Size and SizeBytes cannot both be given (SizeBytes is ebsim's exact size in bytes).",
                ));
            }
            (None, None) => match &snap {
                Some(sn) => sn.size_bytes,
                None => {
                    return Err(err(
                        ErrorKind::MissingParameter,
                        "The request must contain the parameter size or snapshotId",
                    ));
                }
            },
            (Some(g), None) => {
                if g == 0 || g > MAX_BYTES / GIB {
                    return Err(err(
                        ErrorKind::InvalidParameterValue,
                        format!(
                            "Volume of {g}GiB is outside the supported range 1-{} GiB.",
                            MAX_BYTES / GIB
                        ),
                    ));
                }
                g * GIB
            }
            (None, Some(b)) => {
                if b == 0 || !b.is_multiple_of(DATA_UNIT) || b > MAX_BYTES {
                    return Err(err(
                        ErrorKind::InvalidParameterValue,
                        format!(
                            "SizeBytes {b} must be a positive multiple of 4096 up to {MAX_BYTES}."
                        ),
                    ));
                }
                b
            }
        };
        if let Some(sn) = &snap
            && size_bytes < sn.size_bytes
        {
            return Err(err(
                ErrorKind::InvalidParameterValue,
                format!(
                    "Volume of {size_bytes} bytes is smaller than snapshot '{}', expect size >= {} bytes ({}GiB)",
                    sn.snapshot_id,
                    sn.size_bytes,
                    sn.size_bytes.div_ceil(GIB)
                ),
            ));
        }
        let volume_type = req.volume_type.clone().unwrap_or_else(|| "gp3".into());
        if !VOLUME_TYPES.contains(&volume_type.as_str()) {
            return Err(err(
                ErrorKind::InvalidParameterValue,
                format!(
                    "Value ({volume_type}) for parameter volumeType is invalid. Valid values are {}.",
                    VOLUME_TYPES.join(", ")
                ),
            ));
        }
        let (iops, throughput) = performance(&volume_type, size_bytes, req.iops, req.throughput)?;
        let mut tags = Vec::new();
        for spec in &req.tag_specifications {
            if spec.resource_type != "volume" {
                return Err(err(
                    ErrorKind::InvalidParameterValue,
                    format!(
                        "'{}' is not a valid taggable resource type for this operation.",
                        spec.resource_type
                    ),
                ));
            }
            tags.extend(spec.tags.iter().cloned());
        }
        let by_default = self.by_default()?;
        let snap_encrypted = snap.as_ref().is_some_and(|s| s.encrypted);
        if req.kms_key_id.is_some() && req.encrypted != Some(true) && !by_default {
            return Err(err(
                ErrorKind::InvalidParameterCombination,
                "The parameter KmsKeyId requires the parameter Encrypted to be set.",
            ));
        }
        // Encryption is never removed: a volume of an encrypted snapshot is encrypted,
        // under the snapshot's key unless another is given.
        let encrypted = req.encrypted == Some(true) || by_default || snap_encrypted;
        // Authorized before any KMS call: the snapshot it starts from, the volume it
        // makes (with what it will be: ec2:Encrypted is the outcome, so encryption
        // by default counts), then its tags.
        let new_volume = self.new_volume_target(&authz::NewVolume {
            size_bytes,
            volume_type: &volume_type,
            iops,
            throughput,
            encrypted,
            kms_key_id: req.kms_key_id.as_deref(),
            zone: &zone,
            snapshot: snap.as_ref(),
            tags: &tags,
        });
        let mut targets: Vec<Target> = snap
            .iter()
            .map(|sn| self.snapshot_target(&region, sn))
            .collect();
        targets.push(new_volume.clone());
        self.authorize(caller, "ec2:CreateVolume", &targets)?;
        self.authorize_tags(caller, "CreateVolume", &new_volume, &tags)?;
        let key_arn = if encrypted {
            let key = match (&req.kms_key_id, &snap) {
                (Some(k), _) => k.clone(),
                (None, Some(sn)) if sn.encrypted => sn
                    .kms_key_arn
                    .clone()
                    .expect("encrypted snapshots have a key"),
                _ => self.default_key_id()?,
            };
            Some(self.resolve_key(caller, &key)?)
        } else {
            None
        };
        dry_run(req.dry_run)?;
        let volume_id = new_volume_id();
        trail.resources.push(self.volume_arn(&volume_id));
        let now = self.kms.clock().now();
        let source = match &snap {
            Some(sn) => Some(self.restore_source(caller, sn, key_arn.as_deref(), &volume_id)?),
            None => None,
        };
        let (mut header, data_key) = match (&key_arn, &source) {
            (None, _) => (self.header(&volume_id, size_bytes, now, None), None),
            (Some(_), Some(src)) if src.shared_key.is_some() => {
                let (wrapped, arn, key) = src
                    .shared_key
                    .as_ref()
                    .map(|(w, a, k)| (w.clone(), a.clone(), k.duplicate()))
                    .expect("checked");
                let mut h = self.header(&volume_id, size_bytes, now, Some(&arn));
                h.wrapped_key = wrapped;
                (h, Some(key))
            }
            (Some(arn), _) => {
                let (wrapped, arn, key) = self.new_data_key(caller, arn, &volume_id)?;
                let mut h = self.header(&volume_id, size_bytes, now, Some(&arn));
                h.wrapped_key = wrapped;
                (h, Some(key))
            }
        };
        if let Some(sn) = &snap {
            header.source_snapshot_id = sn.snapshot_id.clone();
        }
        let record = VolumeRecord {
            volume_id: volume_id.clone(),
            size_bytes,
            availability_zone: zone,
            create_time: now,
            encrypted,
            kms_key_arn: (!header.kms_key_arn.is_empty()).then(|| header.kms_key_arn.clone()),
            snapshot_id: snap.as_ref().map(|s| s.snapshot_id.clone()),
            state: "available".into(),
            volume_type,
            iops,
            throughput,
            tags,
            attachment: None,
            data_key_id: match &source {
                Some(src) if src.shared_key.is_some() => {
                    snap.as_ref().and_then(|s| s.data_key_id.clone())
                }
                _ => encrypted.then(new_data_key_id),
            },
            state_message: None,
        };
        // Recorded before the first file exists: if this process dies, the next
        // command removes the temporary files (pending.rs).
        let op = self.begin(
            pending::PendingOp::CreateVolume {
                volume_id: volume_id.clone(),
            },
            |_| Ok(()),
        )?;
        let [tmp, tmp_cbt] = self.creation_files(&volume_id);
        let path = self.image_path(&volume_id);
        let cbt = crate::volume::cbt::Cbt::path_for(&path);
        let made = image::create_file(&tmp, &header, data_key.as_ref()).and_then(|()| {
            match (&snap, &source) {
                (Some(sn), Some(src)) => self.restore(sn, src, &tmp, &volume_id, data_key.as_ref()),
                _ => Ok(()),
            }
        });
        drop(data_key);
        let undo = |e: Error, op: pending::Pending| -> Error {
            let _ = std::fs::remove_file(&tmp);
            let _ = std::fs::remove_file(&tmp_cbt);
            match self.finish(op, |_| Ok(())) {
                Ok(()) => e,
                Err(e2) => e.context(format!(
                    "{volume_id}: its temporary files were removed, but its pending record stays until the next command ({})",
                    e2.message()
                )),
            }
        };
        if let Err(e) = made {
            return Err(undo(e, op));
        }
        crate::fault::point("create-volume:before-commit");
        // The image and its tracking file take their names in the transaction that
        // records the volume and ends the pending operation.
        let committed = self.finish_or_keep(op, |tx| {
            tx.put_volume(&record)?;
            std::fs::rename(&tmp, &path)
                .map_err(|e| Error::io(format!("cannot rename into {}", path.display()), e))?;
            if tmp_cbt.exists() {
                std::fs::rename(&tmp_cbt, &cbt)
                    .map_err(|e| Error::io("cannot rename the tracking file", e))?;
            }
            crate::fsutil::fsync_dir(&self.dir)
        });
        if let Err((op, e)) = committed {
            // Not recorded: the files under the final names are this call's own.
            let _ = std::fs::rename(&path, &tmp);
            let _ = std::fs::rename(&cbt, &tmp_cbt);
            return Err(undo(e, op));
        }
        Ok(Volume::from_record(&record, false))
    }

    fn header(&self, volume_id: &str, size: u64, now: Timestamp, arn: Option<&str>) -> Header {
        Header {
            sequence: 1,
            incompat_features: ZERO_UNIT_IS_HOLE,
            compat_features: 0,
            size,
            cipher: if arn.is_some() {
                Cipher::AesXtsPlain64
            } else {
                Cipher::None
            },
            created_ms: now.timestamp_millis(),
            volume_id: volume_id.into(),
            region: self.region().into(),
            kms_key_arn: arn.unwrap_or_default().into(),
            encryption_context: if arn.is_some() {
                self.owner.header_context(volume_id)
            } else {
                String::new()
            },
            source_snapshot_id: String::new(),
            wrapped_key: Vec::new(),
            rekey: None,
        }
    }

    /// GenerateDataKeyWithoutPlaintext for a new volume, then one Decrypt so the
    /// first header can be authenticated (docs/FORMAT.md §2). Returns the wrapped
    /// key, the key ARN KMS reports, and the plaintext key in locked memory.
    fn new_data_key(
        &self,
        caller: &Caller,
        key_arn: &str,
        volume_id: &str,
    ) -> Result<(Vec<u8>, String, SecretBytes)> {
        let via = self.via(caller);
        let made = self.kms.generate_data_key_without_plaintext(
            &via,
            GenerateDataKeyRequest {
                key_id: key_arn.into(),
                number_of_bytes: Some(64),
                encryption_context: self.context(volume_id),
                ..Default::default()
            },
        )?;
        let key = self.kms.decrypt_locked(
            &via,
            DecryptRequest {
                ciphertext_blob: made.ciphertext_blob.clone(),
                encryption_context: self.context(volume_id),
                key_id: Some(made.key_id.clone()),
                ..Default::default()
            },
        )?;
        Ok((made.ciphertext_blob.as_slice().to_vec(), made.key_id, key))
    }

    // ---- DescribeVolumes --------------------------------------------------

    pub fn describe_volumes(
        &self,
        caller: &Caller,
        req: DescribeVolumesRequest,
    ) -> Result<DescribeVolumesResponse> {
        let request = json!({
            "volumeSet": trail::id_set("volumeId", &req.volume_ids),
            "filterSet": trail::filter_set(&req.filters),
            "maxResults": req.max_results,
            "nextToken": req.next_token,
        });
        self.call(
            caller,
            "DescribeVolumes",
            request,
            |_| {
                self.authorize(caller, "ec2:DescribeVolumes", &[Target::any()])?;
                dry_run(req.dry_run)?;
                self.describe_volumes_op(req)
            },
            |_| Value::Null,
        )
    }

    fn describe_volumes_op(&self, req: DescribeVolumesRequest) -> Result<DescribeVolumesResponse> {
        for id in &req.volume_ids {
            check_volume_id(id)?;
        }
        check_max_results(req.max_results)?;
        let all = self.store.lock().expect("ec2 store").volumes()?;
        let missing: Vec<&str> = req
            .volume_ids
            .iter()
            .filter(|id| !all.iter().any(|v| &v.volume_id == *id))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(err(
                ErrorKind::InvalidVolumeNotFound,
                format!("The volume '{}' does not exist.", missing.join(",")),
            ));
        }
        for f in &req.filters {
            check_filter_name(&f.name, FILTERS)?;
        }
        let start = match &req.next_token {
            Some(t) => Some(decode_token("volumes", t)?),
            None => None,
        };
        let mut out = Vec::new();
        let mut next_token = None;
        for mut v in all {
            if !req.volume_ids.is_empty() && !req.volume_ids.contains(&v.volume_id) {
                continue;
            }
            if start.as_deref().is_some_and(|s| v.volume_id.as_str() <= s) {
                continue;
            }
            self.repair(&mut v)?;
            if !req.filters.iter().all(|f| matches_filter(&v, f)) {
                continue;
            }
            if let Some(m) = req.max_results
                && out.len() == m as usize
            {
                next_token = out
                    .last()
                    .map(|last: &Volume| encode_token("volumes", &last.volume_id));
                break;
            }
            out.push(Volume::from_record(&v, true));
        }
        Ok(DescribeVolumesResponse {
            volumes: out,
            next_token,
        })
    }

    // ---- DeleteVolume -----------------------------------------------------

    pub fn delete_volume(&self, caller: &Caller, volume_id: &str, dry: bool) -> Result<()> {
        let request = json!({ "volumeId": volume_id, "dryRun": dry.then_some(true) });
        self.call(
            caller,
            "DeleteVolume",
            request,
            |t| self.delete_volume_op(caller, volume_id, dry, t),
            |_| json!({ "_return": true }),
        )
    }

    fn delete_volume_op(
        &self,
        caller: &Caller,
        volume_id: &str,
        dry: bool,
        trail: &mut trail::Trail,
    ) -> Result<()> {
        let mut v = self.record(volume_id)?;
        trail.resources.push(self.volume_arn(volume_id));
        self.repair(&mut v)?;
        self.authorize(caller, "ec2:DeleteVolume", &[self.volume_target(&v)])?;
        if let Some(a) = &v.attachment {
            return Err(err(
                ErrorKind::VolumeInUse,
                format!(
                    "Volume {volume_id} is currently attached to {}",
                    a.instance_id
                ),
            ));
        }
        dry_run(dry)?;
        let path = self.image_path(volume_id);
        // Hold the image lock so no attach can start while the volume goes away.
        let file = std::fs::File::open(&path).ok();
        if let Some(f) = &file
            && f.try_lock().is_err()
        {
            return Err(err(
                ErrorKind::VolumeInUse,
                format!("Volume {volume_id} is being attached"),
            ));
        }
        // The image leaves its name before the record goes (and comes back if the
        // record cannot go): no moment exists where a recorded volume has no
        // image, or an image under a volume's name has no record.
        let op = self.begin(
            pending::PendingOp::DeleteVolume {
                volume_id: volume_id.to_string(),
            },
            |_| Ok(()),
        )?;
        let tomb = self.tombstone_path(volume_id);
        let moved = match std::fs::rename(&path, &tomb) {
            Ok(()) => crate::fsutil::fsync_dir(&self.dir).map(|()| true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(format!("cannot rename {}", path.display()), e)),
        };
        crate::fault::point("delete-volume:after-rename");
        let moved = match moved {
            Ok(m) => m,
            Err(e) => {
                let _ = self.finish(op, |_| Ok(()));
                return Err(e);
            }
        };
        let deleted = self.finish_or_keep(op, |tx| match tx.volume(volume_id)? {
            Some(cur) if cur.attachment.is_none() => tx.delete_volume(volume_id),
            Some(_) => Err(err(
                ErrorKind::VolumeInUse,
                format!("Volume {volume_id} is currently attached"),
            )),
            None => Err(not_found(volume_id)),
        });
        if let Err((op, e)) = deleted {
            if moved {
                std::fs::rename(&tomb, &path).map_err(|e2| {
                    Error::io(
                        format!(
                            "{volume_id} was not deleted ({}), and its image could not be put back from {}",
                            e.message(),
                            tomb.display()
                        ),
                        e2,
                    )
                })?;
            }
            let _ = self.finish(op, |_| Ok(()));
            return Err(e);
        }
        drop(file);
        crate::fault::point("delete-volume:after-commit");
        // After the commit: a crash here leaves the tombstone, which the next
        // command removes (no record names it any more).
        for p in [
            tomb,
            crate::volume::cbt::Cbt::path_for(&path),
            path.with_extension("rekey"),
        ] {
            if let Err(e) = std::fs::remove_file(&p)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(Error::io(format!("cannot remove {}", p.display()), e));
            }
        }
        crate::fsutil::fsync_dir(&self.dir)
    }

    // ---- ModifyVolume -----------------------------------------------------

    /// Changes size (grow only), type, IOPS or throughput. ebsim grows a detached
    /// volume; an attached one is refused with IncorrectState.
    pub fn modify_volume(
        &self,
        caller: &Caller,
        req: ModifyVolumeRequest,
    ) -> Result<ModifyVolumeResponse> {
        let request = trail::wrapped_request(
            "ModifyVolume",
            json!({
                "VolumeId": req.volume_id,
                "Size": req.size,
                "SizeBytes": req.size_bytes,
                "VolumeType": req.volume_type,
                "Iops": req.iops,
                "Throughput": req.throughput,
                "DryRun": req.dry_run.then_some(true),
            }),
        );
        self.call(
            caller,
            "ModifyVolume",
            request,
            |t| self.modify_volume_op(caller, req, t),
            |r| trail::modification_response(&r.volume_modification),
        )
    }

    fn modify_volume_op(
        &self,
        caller: &Caller,
        req: ModifyVolumeRequest,
        trail: &mut trail::Trail,
    ) -> Result<ModifyVolumeResponse> {
        let mut v = self.record(&req.volume_id)?;
        trail.resources.push(self.volume_arn(&v.volume_id));
        self.repair(&mut v)?;
        self.authorize(caller, "ec2:ModifyVolume", &[self.volume_target(&v)])?;
        let new_size = match (req.size, req.size_bytes) {
            (Some(_), Some(_)) => {
                return Err(err(
                    ErrorKind::InvalidParameterCombination,
                    "Size and SizeBytes cannot both be given.",
                ));
            }
            (Some(g), None) => g.checked_mul(GIB).filter(|b| *b <= MAX_BYTES),
            (None, Some(b)) => Some(b).filter(|b| b.is_multiple_of(DATA_UNIT) && *b <= MAX_BYTES),
            (None, None) => Some(v.size_bytes),
        }
        .ok_or_else(|| {
            err(
                ErrorKind::InvalidParameterValue,
                "The new size must be a multiple of 4096 bytes and at most 64 TiB.",
            )
        })?;
        if new_size < v.size_bytes {
            return Err(err(
                ErrorKind::InvalidParameterValue,
                format!(
                    "New size cannot be smaller than existing size ({} GiB, {} bytes).",
                    v.size_gib(),
                    v.size_bytes
                ),
            ));
        }
        let volume_type = req
            .volume_type
            .clone()
            .unwrap_or_else(|| v.volume_type.clone());
        if !VOLUME_TYPES.contains(&volume_type.as_str()) {
            return Err(err(
                ErrorKind::InvalidParameterValue,
                format!("Value ({volume_type}) for parameter volumeType is invalid."),
            ));
        }
        // gp2's IOPS follow its size; other types keep what was set for them.
        let keep_iops = req
            .iops
            .or(if volume_type == v.volume_type && volume_type != "gp2" {
                v.iops
            } else {
                None
            });
        let keep_tp = req.throughput.or(if volume_type == v.volume_type {
            v.throughput
        } else {
            None
        });
        let (iops, throughput) = performance(&volume_type, new_size, keep_iops, keep_tp)?;
        if new_size == v.size_bytes
            && volume_type == v.volume_type
            && iops == v.iops
            && throughput == v.throughput
        {
            return Err(err(
                ErrorKind::InvalidParameterCombination,
                "New size, type, IOPS and throughput are the same as the existing ones.",
            ));
        }
        if new_size != v.size_bytes && v.attachment.is_some() {
            return Err(err(
                ErrorKind::IncorrectState,
                format!(
                    "{}: ebsim resizes detached volumes only; detach it first",
                    v.volume_id
                ),
            ));
        }
        dry_run(req.dry_run)?;
        let start = self.kms.clock().now();
        let update = |tx: &mut store::Tx<'_>| {
            let mut cur = tx
                .volume(&v.volume_id)?
                .ok_or_else(|| not_found(&v.volume_id))?;
            cur.size_bytes = new_size;
            cur.volume_type = volume_type.clone();
            cur.iops = iops;
            cur.throughput = throughput;
            tx.put_volume(&cur)
        };
        if new_size != v.size_bytes {
            let image = self.open_image(caller, &v, None)?.0;
            refuse_rekeying(&image, &v.volume_id)?;
            // The header changes before the record: a kill in between leaves the
            // record behind the header, which recovery brings up to it.
            let op = self.begin(
                pending::PendingOp::ModifyVolume {
                    volume_id: v.volume_id.clone(),
                    original_size: v.size_bytes,
                    target_size: new_size,
                    volume_type: volume_type.clone(),
                    iops,
                    throughput,
                },
                |_| Ok(()),
            )?;
            if let Err(e) = image.grow(new_size) {
                // The header still has the old size (grow writes it last), or the
                // new one if only a copy's fsync failed: the record follows it.
                let now = image.size();
                let settled = self.finish(op, |tx| {
                    if now == new_size {
                        update(tx)?;
                    }
                    Ok(())
                });
                return Err(match settled {
                    Ok(()) => e,
                    Err(e2) => e.context(format!(
                        "{}: the record is reconciled with the image by the next command ({})",
                        v.volume_id,
                        e2.message()
                    )),
                });
            }
            crate::fault::point("modify-volume:after-header");
            self.finish(op, update)?;
        } else {
            self.write(update)?;
        }
        let original = v.clone();
        Ok(ModifyVolumeResponse {
            volume_modification: VolumeModification {
                volume_id: v.volume_id.clone(),
                modification_state: "completed".into(),
                target_size: new_size.div_ceil(GIB),
                target_iops: iops,
                target_volume_type: volume_type,
                target_throughput: throughput,
                original_size: original.size_gib(),
                original_iops: original.iops,
                original_volume_type: original.volume_type,
                original_throughput: original.throughput,
                progress: 100,
                start_time: crate::kms::api::Time(start),
                end_time: crate::kms::api::Time(self.kms.clock().now()),
            },
        })
    }

    // ---- attach / detach --------------------------------------------------

    /// Opens `v`'s image. With `instance` (attach), the data key is decrypted by that
    /// instance's infrastructure principal under a grant created for it; without
    /// (resizing a detached volume), by the volume service for the caller. Returns
    /// the image and the grant (key ARN, grant id) if one was made.
    fn open_image(
        &self,
        caller: &Caller,
        v: &VolumeRecord,
        instance: Option<&str>,
    ) -> Result<(Image, Option<(String, String)>)> {
        let via = self.via(caller);
        let account = self.kms.account_id().to_string();
        let region = self.region().to_string();
        let mut grant: Option<(String, String)> = None;
        let mut unlock = |h: &Header| -> Result<SecretBytes> {
            let ctx = self.context(&v.volume_id);
            let (decrypter, tokens) = match instance {
                Some(instance_id) => {
                    let grantee = infrastructure(self.owner, &account, "", instance_id)
                        .arn()
                        .to_string();
                    if grant.is_none() {
                        let g = self.kms.create_grant(
                            &via,
                            CreateGrantRequest {
                                key_id: h.kms_key_arn.clone(),
                                grantee_principal: grantee.clone(),
                                retiring_principal: Some(grantee.clone()),
                                operations: vec!["Decrypt".into()],
                                constraints: Some(GrantConstraints {
                                    encryption_context_subset: Some(ctx.clone()),
                                    encryption_context_equals: None,
                                }),
                                ..Default::default()
                            },
                        )?;
                        grant = Some((h.kms_key_arn.clone(), g.grant_id));
                        (
                            infrastructure(self.owner, &account, &region, instance_id),
                            vec![g.grant_token],
                        )
                    } else {
                        (
                            infrastructure(self.owner, &account, &region, instance_id),
                            vec![],
                        )
                    }
                }
                None => (via.clone(), vec![]),
            };
            self.kms.decrypt_locked(
                &decrypter,
                DecryptRequest {
                    ciphertext_blob: Blob::new(h.wrapped_key.clone()),
                    encryption_context: ctx,
                    grant_tokens: tokens,
                    key_id: Some(h.kms_key_arn.clone()),
                    ..Default::default()
                },
            )
        };
        let opened = Image::open(&self.image_path(&v.volume_id), &v.volume_id, &mut unlock);
        match opened {
            Ok(image) => Ok((image, grant)),
            Err(e) => {
                if let (Some((key, id)), Some(instance_id)) = (&grant, instance) {
                    self.retire_quietly(&AttachmentRecord {
                        instance_id: instance_id.into(),
                        device: String::new(),
                        attach_time: self.kms.clock().now(),
                        pid: 0,
                        grant_id: Some(id.clone()),
                        key_arn: Some(key.clone()),
                        fuse_dir: None,
                        nbd_uri: None,
                        nbd_socket: None,
                        loop_device: None,
                        mounted_at: None,
                    });
                }
                Err(e)
            }
        }
    }

    /// Attaches `volume_id` to `instance_id` in this process: CreateGrant + Decrypt
    /// (encrypted volumes), the image's exclusive lock, the record set to `in-use`.
    /// The returned [`Attachment`] is the block device; [`Attachment::detach`] undoes
    /// it all.
    pub fn attach(
        &self,
        caller: &Caller,
        volume_id: &str,
        instance_id: &str,
        device: &str,
    ) -> Result<Attachment> {
        let request = json!({ "volumeId": volume_id, "instanceId": instance_id, "device": device });
        self.call(
            caller,
            "AttachVolume",
            request,
            |t| self.attach_op(caller, volume_id, instance_id, device, t),
            |a| trail::attachment_response(volume_id, a.record(), "attached"),
        )
    }

    /// AttachVolume with DryRun: authorized as [`Ec2::attach`] authorizes it and
    /// recorded, then DryRunOperation; nothing is attached.
    pub fn attach_dry_run(
        &self,
        caller: &Caller,
        volume_id: &str,
        instance_id: &str,
        device: &str,
    ) -> Result<()> {
        let request = json!({ "volumeId": volume_id, "instanceId": instance_id, "device": device, "dryRun": true });
        self.call(
            caller,
            "AttachVolume",
            request,
            |t| {
                let v = self.record(volume_id)?;
                t.resources.push(self.volume_arn(volume_id));
                let instance = self.instance_target(instance_id);
                t.resources.push(instance.arn.clone());
                self.authorize(
                    caller,
                    "ec2:AttachVolume",
                    &[instance, self.volume_target(&v)],
                )?;
                dry_run(true)
            },
            |_| Value::Null,
        )
    }

    fn attach_op(
        &self,
        caller: &Caller,
        volume_id: &str,
        instance_id: &str,
        device: &str,
        trail: &mut trail::Trail,
    ) -> Result<Attachment> {
        let v = self.record(volume_id)?;
        trail.resources.push(self.volume_arn(volume_id));
        let instance = self.instance_target(instance_id);
        trail.resources.push(instance.arn.clone());
        self.authorize(
            caller,
            "ec2:AttachVolume",
            &[instance, self.volume_target(&v)],
        )?;
        if let Some(a) = &v.attachment {
            if self.attached_now(volume_id) {
                return Err(err(
                    ErrorKind::VolumeInUse,
                    format!(
                        "{volume_id} is already attached to an instance ({})",
                        a.instance_id
                    ),
                ));
            }
            let holders = self.host.holders(volume_id, a);
            if !holders.is_empty() {
                return Err(err(
                    ErrorKind::VolumeInUse,
                    stale_message(volume_id, a, &holders),
                ));
            }
        }
        let (image, grant) = self.open_image(caller, &v, Some(instance_id))?;
        if let Err(e) = refuse_rekeying(&image, volume_id) {
            drop(image);
            if let Some((key, id)) = &grant {
                self.retire_quietly(&AttachmentRecord {
                    instance_id: instance_id.into(),
                    device: String::new(),
                    attach_time: self.kms.clock().now(),
                    pid: 0,
                    grant_id: Some(id.clone()),
                    key_arn: Some(key.clone()),
                    fuse_dir: None,
                    nbd_uri: None,
                    nbd_socket: None,
                    loop_device: None,
                    mounted_at: None,
                });
            }
            return Err(e);
        }
        // We hold the lock: any attachment still on record is stale.
        if let Some(stale) = &v.attachment {
            self.retire_quietly(stale);
        }
        let attachment = AttachmentRecord {
            instance_id: instance_id.into(),
            device: device.into(),
            attach_time: self.kms.clock().now(),
            pid: std::process::id(),
            grant_id: grant.as_ref().map(|g| g.1.clone()),
            key_arn: grant.as_ref().map(|g| g.0.clone()),
            fuse_dir: None,
            nbd_uri: None,
            nbd_socket: None,
            loop_device: None,
            mounted_at: None,
        };
        let recorded = self.write(|tx| {
            let mut cur = tx.volume(volume_id)?.ok_or_else(|| not_found(volume_id))?;
            cur.state = "in-use".into();
            cur.attachment = Some(attachment.clone());
            tx.put_volume(&cur)
        });
        if let Err(e) = recorded {
            self.retire_quietly(&attachment);
            return Err(e);
        }
        Ok(Attachment {
            image: Some(std::sync::Arc::new(image)),
            record: attachment,
            volume_id: volume_id.into(),
        })
    }
}

impl Ec2 {
    /// DetachVolume: authorizes `ec2:DetachVolume` on the attachment's instance and
    /// the volume, then `detach` ends the attachment (the attachment process is
    /// told to stop, and detaches: src/service/attach.rs), and the call is recorded.
    /// Returns the attachment that ended. IncorrectState when the volume is not
    /// attached.
    pub fn detach_volume(
        &self,
        caller: &Caller,
        volume_id: &str,
        force: bool,
        detach: impl FnOnce(&AttachmentRecord) -> Result<()>,
    ) -> Result<AttachmentRecord> {
        self.detach_volume_with(caller, volume_id, force, false, detach)
    }

    /// [`Ec2::detach_volume`] with EC2's DryRun: authorized, then
    /// DryRunOperation before `detach` is called.
    pub fn detach_volume_with(
        &self,
        caller: &Caller,
        volume_id: &str,
        force: bool,
        dry: bool,
        detach: impl FnOnce(&AttachmentRecord) -> Result<()>,
    ) -> Result<AttachmentRecord> {
        let request = json!({ "volumeId": volume_id, "force": force.then_some(true) });
        self.call(
            caller,
            "DetachVolume",
            request,
            |t| {
                let mut v = self.record(volume_id)?;
                t.resources.push(self.volume_arn(volume_id));
                self.repair(&mut v)?;
                let a = v
                    .attachment
                    .clone()
                    .ok_or_else(|| not_attached(volume_id))?;
                let instance = self.instance_target(&a.instance_id);
                t.resources.push(instance.arn.clone());
                self.authorize(
                    caller,
                    "ec2:DetachVolume",
                    &[instance, self.volume_target(&v)],
                )?;
                dry_run(dry)?;
                detach(&a)?;
                Ok(a)
            },
            |a| trail::attachment_response(volume_id, a, "detached"),
        )
    }

    /// Changes the recorded attachment of `volume_id` (front ends record where they
    /// serve it). Fails with IncorrectState when the volume is not attached.
    pub fn update_attachment(
        &self,
        volume_id: &str,
        f: impl FnOnce(&mut AttachmentRecord),
    ) -> Result<AttachmentRecord> {
        self.write(|tx| {
            let mut cur = tx.volume(volume_id)?.ok_or_else(|| not_found(volume_id))?;
            let a = cur
                .attachment
                .as_mut()
                .ok_or_else(|| not_attached(volume_id))?;
            f(a);
            let out = a.clone();
            tx.put_volume(&cur)?;
            Ok(out)
        })
    }

    /// The volume's live attachment (stale ones repaired first).
    pub fn attachment(&self, volume_id: &str) -> Result<Option<AttachmentRecord>> {
        let mut v = self.record(volume_id)?;
        self.repair(&mut v)?;
        Ok(v.attachment)
    }

    /// Every volume attached now (dead attachments settled first), with its
    /// attachment.
    pub fn attachments(&self) -> Result<Vec<(String, AttachmentRecord)>> {
        let all = self.store.lock().expect("ec2 store").volumes()?;
        let mut out = Vec::new();
        for mut v in all {
            self.repair(&mut v)?;
            if let Some(a) = v.attachment {
                out.push((v.volume_id, a));
            }
        }
        Ok(out)
    }

    /// The volumes attached to `instance_id` now (dead attachments settled
    /// first), with their attachments.
    pub fn volumes_attached_to(
        &self,
        instance_id: &str,
    ) -> Result<Vec<(String, AttachmentRecord)>> {
        let all = self.store.lock().expect("ec2 store").volumes()?;
        let mut out = Vec::new();
        for mut v in all {
            self.repair(&mut v)?;
            if let Some(a) = v.attachment.filter(|a| a.instance_id == instance_id) {
                out.push((v.volume_id, a));
            }
        }
        Ok(out)
    }

    /// The availability zone of volume `volume_id` (InvalidVolume.NotFound).
    pub fn volume_zone(&self, volume_id: &str) -> Result<String> {
        check_volume_id(volume_id)?;
        Ok(self.record(volume_id)?.availability_zone)
    }

    /// All volumes whose live attachment satisfies `f`.
    pub fn find_attachment(
        &self,
        f: impl Fn(&AttachmentRecord) -> bool,
    ) -> Result<Option<(String, AttachmentRecord)>> {
        let all = self.store.lock().expect("ec2 store").volumes()?;
        for mut v in all {
            self.repair(&mut v)?;
            if let Some(a) = &v.attachment
                && f(a)
            {
                return Ok(Some((v.volume_id.clone(), a.clone())));
            }
        }
        Ok(None)
    }
}

/// Counts the items of one long operation, reports them, and stops the operation
/// when it is cancelled.
pub(crate) struct Counter<'a> {
    ec2: &'a Ec2,
    report: Option<&'a ProgressFn>,
    what: String,
    total: u64,
    done: std::sync::atomic::AtomicU64,
    cancel: Option<&'a std::sync::atomic::AtomicBool>,
    /// A pending snapshot whose recorded progress follows this counter.
    snapshot: Option<String>,
}

impl Counter<'_> {
    /// Records progress in the pending snapshot `id` (every 10%).
    pub(crate) fn for_snapshot(mut self, id: &str) -> Self {
        self.snapshot = Some(id.to_string());
        self
    }

    /// One item is about to be done: fails with Interrupted if the operation was
    /// cancelled.
    pub(crate) fn step(&self) -> Result<()> {
        self.ec2.check_cancel(self.cancel)?;
        let n = self.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if let Some(r) = self.report {
            r(&self.what, n, self.total);
        }
        if let Some(id) = &self.snapshot
            && self.total > 0
        {
            // k ≤ total, so the percentage is at most 100.
            let pct = |k: u64| u32::try_from(k * 100 / self.total).unwrap_or(100);
            if pct(n) / 10 != pct(n - 1) / 10 && pct(n) < 100 {
                self.ec2.record_progress(id, pct(n))?;
            }
        }
        Ok(())
    }
}

/// A volume in the middle of a re-key is usable again once the re-key finishes.
fn refuse_rekeying(image: &Image, volume_id: &str) -> Result<()> {
    match image.header().rekey {
        Some(r) => Err(err(
            ErrorKind::IncorrectState,
            format!(
                "{volume_id} is being re-keyed to {} ({}% done); run ebsim ec2 rekey-volume --volume-id {volume_id} --kms-key-id {} to finish",
                r.kms_key_arn,
                r.boundary * 100 / (image.size() / DATA_UNIT).max(1),
                r.kms_key_arn
            ),
        )),
        None => Ok(()),
    }
}

fn not_attached(volume_id: &str) -> Error {
    err(
        ErrorKind::IncorrectState,
        format!("Volume '{volume_id}' is in the 'available' state."),
    )
}

/// An attached volume: the block device every front end uses. Dropping it without
/// [`Attachment::detach`] still zeroizes the key and releases the image lock; the
/// record is then repaired by the next call that looks at the volume.
#[derive(Debug)]
pub struct Attachment {
    image: Option<std::sync::Arc<Image>>,
    record: AttachmentRecord,
    volume_id: String,
}

impl Attachment {
    pub fn volume_id(&self) -> &str {
        &self.volume_id
    }

    pub fn instance_id(&self) -> &str {
        &self.record.instance_id
    }

    /// The attachment as recorded when it was made.
    pub fn record(&self) -> &AttachmentRecord {
        &self.record
    }

    /// The block device.
    pub fn image(&self) -> &Image {
        self.image.as_ref().expect("attached")
    }

    /// The block device, shared with a front end (FUSE, NBD) that serves it. The
    /// front end must drop its handles before [`Attachment::detach`], which is what
    /// releases the key and the lock.
    pub fn shared_image(&self) -> std::sync::Arc<Image> {
        self.image.clone().expect("attached")
    }

    /// Flushes, retires the grant, marks the volume available, then zeroizes the key
    /// and releases the image lock.
    pub fn detach(mut self, ec2: &Ec2) -> Result<()> {
        self.image().flush()?;
        let retired = match (&self.record.grant_id, &self.record.key_arn) {
            (Some(grant_id), Some(key)) => ec2
                .kms
                .retire_grant(
                    &infrastructure(
                        ec2.owner,
                        ec2.kms.account_id(),
                        ec2.region(),
                        &self.record.instance_id,
                    ),
                    RetireGrantRequest {
                        key_id: Some(key.clone()),
                        grant_id: Some(grant_id.clone()),
                        ..Default::default()
                    },
                )
                .map(|_| ()),
            _ => Ok(()),
        };
        let record = self.record.clone();
        let id = self.volume_id.clone();
        ec2.write(|tx| {
            // The same attachment (front ends add fields to the record after attach).
            if let Some(mut cur) = tx.volume(&id)?
                && cur
                    .attachment
                    .as_ref()
                    .is_some_and(|a| a.pid == record.pid && a.attach_time == record.attach_time)
            {
                cur.attachment = None;
                cur.state = "available".into();
                tx.put_volume(&cur)?;
            }
            Ok(())
        })?;
        drop(self.image.take());
        retired
    }
}

fn performance(
    volume_type: &str,
    size: u64,
    iops: Option<u32>,
    throughput: Option<u32>,
) -> Result<(Option<u32>, Option<u32>)> {
    let gib = size.div_ceil(GIB);
    let bad = |m: String| Err(err(ErrorKind::InvalidParameterValue, m));
    match volume_type {
        "gp3" => {
            let i = iops.unwrap_or(3000);
            let t = throughput.unwrap_or(125);
            if !(3000..=80000).contains(&i) {
                return bad(format!(
                    "Volume iops of {i} is outside the range 3000-80000 for gp3."
                ));
            }
            if !(125..=2000).contains(&t) {
                return bad(format!(
                    "Throughput of {t} MiB/s is outside the range 125-2000 for gp3."
                ));
            }
            Ok((Some(i), Some(t)))
        }
        "io1" | "io2" => match iops {
            Some(i) if (100..=256000).contains(&i) && throughput.is_none() => Ok((Some(i), None)),
            Some(i) if throughput.is_none() => bad(format!(
                "Volume iops of {i} is outside the range 100-256000."
            )),
            None => Err(err(
                ErrorKind::MissingParameter,
                format!("The parameter iops must be specified for {volume_type} volumes."),
            )),
            Some(_) => bad(format!(
                "Throughput can only be set for gp3 volumes, not {volume_type}."
            )),
        },
        _ if iops.is_some() || throughput.is_some() => bad(format!(
            "IOPS and throughput can not be specified for {volume_type} volumes."
        )),
        "gp2" => Ok((
            Some(u32::try_from(3 * gib).unwrap_or(u32::MAX).clamp(100, 16000)),
            None,
        )),
        _ => Ok((None, None)),
    }
}

const FILTERS: &[&str] = &[
    "attachment.device",
    "attachment.instance-id",
    "attachment.status",
    "availability-zone",
    "encrypted",
    "kms-key-id",
    "multi-attach-enabled",
    "size",
    "snapshot-id",
    "status",
    "tag-key",
    "volume-id",
    "volume-type",
];

fn matches_filter(v: &VolumeRecord, f: &Filter) -> bool {
    let a = v.attachment.as_ref();
    let values: Vec<String> = match f.name.as_str() {
        "attachment.device" => a.map(|a| a.device.clone()).into_iter().collect(),
        "attachment.instance-id" => a.map(|a| a.instance_id.clone()).into_iter().collect(),
        "attachment.status" => a.map(|_| "attached".to_string()).into_iter().collect(),
        "availability-zone" => vec![v.availability_zone.clone()],
        "encrypted" => vec![v.encrypted.to_string()],
        "kms-key-id" => v.kms_key_arn.clone().into_iter().collect(),
        "multi-attach-enabled" => vec!["false".into()],
        "size" => vec![v.size_gib().to_string()],
        "snapshot-id" => vec![v.snapshot_id.clone().unwrap_or_default()],
        "status" => vec![v.state.clone()],
        "volume-id" => vec![v.volume_id.clone()],
        "volume-type" => vec![v.volume_type.clone()],
        name => tag_filter_values(&v.tags, name).unwrap_or_default(),
    };
    f.values
        .iter()
        .any(|want| values.iter().any(|have| glob(want, have)))
}

/// A NextToken of a listing of `what` (`volumes`, `tags`): where the next page
/// starts after.
fn encode_token(what: &str, last: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("ebsim-{what}:{last}"))
}

fn decode_token(what: &str, t: &str) -> Result<String> {
    use base64::Engine;
    let prefix = format!("ebsim-{what}:");
    base64::engine::general_purpose::STANDARD
        .decode(t)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix(&prefix).map(str::to_string))
        .ok_or_else(|| {
            err(
                ErrorKind::InvalidParameterValue,
                format!("Invalid value '{t}' for nextToken"),
            )
        })
}

/// Bytes of a volume's image file that hold its data area (for tests).
#[cfg(any(test, feature = "test-support"))]
pub fn data_area(path: &std::path::Path) -> Result<Vec<u8>> {
    let all =
        std::fs::read(path).map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    Ok(all
        .get(crate::num::usize_of(crate::volume::DATA_OFFSET)..)
        .unwrap_or_default()
        .to_vec())
}
