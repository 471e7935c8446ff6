//! The service layer: every front end (the CLI now, the HTTP server next) reaches
//! the engines through here.
//!
//! - [`Services`] owns a data root's services — KMS and EC2 per region, IAM —
//!   behind shared handles, opened on first use.
//! - Every operation has one shape: a [`RequestContext`] (who calls, in which
//!   region, from where, with which request id) and the request in AWS's member
//!   names, returning AWS's response shape (as JSON, ready for any front end) or a
//!   typed error.
//! - Each service has one table of its operations (`kms::KmsRequest`,
//!   `iam::IamRequest`, `ec2::Ec2Request`, `sts::StsRequest`, `ebs::EbsRequest`
//!   for the EBS direct APIs): an enum with one variant per operation,
//!   its AWS name, how to read it from AWS's JSON, and the one place that runs it. A
//!   front end builds a request (from arguments, or from a wire body) and calls
//!   [`Services::kms`], [`Services::iam`], [`Services::ec2`]; it never holds an
//!   engine.
//! - EC2's long operations (snapshots, copies, restores, re-keys) stop when a flag
//!   is set and report progress; both belong to the front end (the CLI's Ctrl-C
//!   flag and its terminal's bars), which lends them as [`Ec2Hooks`] when it builds
//!   the [`Services`]. They are asked for when a region's EC2 is first opened, so a
//!   command that never reaches EC2 installs no signal handler.
//!
//! - A network front end finds who signed a request with
//!   [`Services::credentials`] (sts.rs): an access key id becomes its caller and
//!   secret.
//!
//! What the CLI keeps for itself is what the AWS CLI does on the client side:
//! argument parsing, `fileb://`, retries with backoff, pagination, output formats.

pub mod attach;
pub mod cloudtrail;
pub mod ebs;
pub mod ec2;
pub mod harness;
pub mod iam;
pub mod kms;
pub mod rds;
pub mod sts;

/// The principal a request runs as (and the services calling on its behalf).
pub use crate::kms::access::Caller;
/// Client-side retries of throttled calls, as AWS SDKs do them.
pub use crate::kms::quota::Backoff;

use crate::clock::Clock;
use crate::ec2::{Ec2, Progress};
use crate::error::{Error, ErrorKind, Result};
use crate::home::DataRoot;
use crate::host::LinuxHost;
use crate::kms::Kms;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

/// This thread holds the audit records of the calls it runs until
/// [`write_held_audit_records`], which it must call before it answers any of
/// them (a server worker: src/server/poll.rs), so that a turn's records take one
/// write per file.
pub fn hold_audit_records_on_this_thread() {
    crate::kms::audit::hold_on_this_thread();
}

/// Writes the audit records this thread holds (none unless it called
/// [`hold_audit_records_on_this_thread`]).
pub fn write_held_audit_records() {
    crate::kms::audit::write_held();
}

/// Writes what this thread holds, and from now on its records are written
/// at once again.
pub fn stop_holding_audit_records_on_this_thread() {
    crate::kms::audit::stop_holding_on_this_thread();
}

/// Where a request came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The `ebsim` command line on this machine.
    Cli,
    /// A network client (the HTTP server): its address.
    Network(String),
}

/// Who calls, where, and how: what every operation receives besides its request.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The principal and, when an AWS service calls on its behalf, the service.
    pub caller: Caller,
    pub region: String,
    /// The request's id, as AWS returns it (`x-amzn-RequestId`).
    pub request_id: String,
    pub source: Source,
}

impl RequestContext {
    /// A new request, with a new id (also the caller's, so the request's
    /// CloudTrail record carries it).
    pub fn new(caller: Caller, region: &str, source: Source) -> Self {
        let id = uuid::Uuid::new_v4();
        RequestContext {
            caller: Caller {
                request_id: Some(id),
                ..caller
            },
            region: region.to_string(),
            request_id: id.to_string(),
            source,
        }
    }

    /// Takes the id a front end already gave the request (the server's
    /// `x-amzn-RequestId`); an id that is not a UUID is kept for the answer and
    /// the records get their own.
    pub fn set_request_id(&mut self, id: &str) {
        self.request_id = id.to_string();
        self.caller.request_id = uuid::Uuid::parse_str(id).ok();
    }
}

/// What a front end lends the EC2 engines it opens.
#[derive(Clone, Default)]
pub struct Ec2Hooks {
    /// Once set, long operations stop at their next block, undo what they did and
    /// fail with `ErrorKind::Interrupted`.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Where long operations report progress.
    pub progress: Option<Progress>,
}

type Ec2HooksFn = dyn Fn() -> Ec2Hooks + Send + Sync;

/// A data root's services.
pub struct Services {
    root: DataRoot,
    clock: Clock,
    kms: Mutex<HashMap<String, Arc<Kms>>>,
    iam: Mutex<Option<Arc<Mutex<crate::iam::Iam>>>>,
    /// Shared: the engine's operations take `&self` (its store and IAM are behind
    /// its own locks), so calls to one region need not wait for each other.
    ec2: Mutex<HashMap<String, Arc<Ec2>>>,
    ec2_hooks: Option<Box<Ec2HooksFn>>,
    /// How the front end starts attachment processes for AttachVolume through
    /// the table (`attach::attach_to_instance`).
    launcher: Option<Arc<attach::Launcher>>,
    /// RDS per region, and RDS's own volume service (its instances' storage).
    rds: Mutex<HashMap<String, Arc<crate::rds::Rds>>>,
    rds_storage: Mutex<HashMap<String, Arc<Ec2>>>,
    /// How the front end starts the attachment processes of DB instances' storage.
    storage_launcher: Option<Arc<rds::StorageLauncher>>,
    /// Access keys' credentials read so far (`Services::credentials`).
    credential_cache: Mutex<sts::CredentialCache>,
    /// When each access key's use was last recorded (`Services::record_key_use`).
    key_uses: Mutex<HashMap<String, (String, String, crate::clock::Timestamp)>>,
}

// A network front end shares one `Services` between its connections' threads.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<Services>();
};

impl Services {
    pub fn new(root: DataRoot, clock: Clock) -> Self {
        Services {
            root,
            clock,
            kms: Mutex::new(HashMap::new()),
            iam: Mutex::new(None),
            ec2: Mutex::new(HashMap::new()),
            ec2_hooks: None,
            launcher: None,
            rds: Mutex::new(HashMap::new()),
            rds_storage: Mutex::new(HashMap::new()),
            storage_launcher: None,
            credential_cache: Mutex::new(sts::CredentialCache::default()),
            key_uses: Mutex::new(HashMap::new()),
        }
    }

    /// `launcher` gives the command line of an attachment process for a volume
    /// attached to a simulated instance (AttachVolume through [`Services::ec2`]).
    pub fn with_launcher(
        mut self,
        launcher: impl Fn(&attach::InstanceLaunch<'_>) -> Result<attach::Launch> + Send + Sync + 'static,
    ) -> Self {
        self.launcher = Some(Arc::new(launcher));
        self
    }

    pub(crate) fn launcher(&self) -> Option<Arc<attach::Launcher>> {
        self.launcher.clone()
    }

    /// `launcher` gives the command line of the attachment process of a DB
    /// instance's storage volume (RDS's operations through [`Services::rds`]).
    pub fn with_storage_launcher(
        mut self,
        launcher: impl Fn(&rds::StorageLaunch<'_>) -> Result<attach::Launch> + Send + Sync + 'static,
    ) -> Self {
        self.storage_launcher = Some(Arc::new(launcher));
        self
    }

    pub(crate) fn storage_launcher(&self) -> Option<Arc<rds::StorageLauncher>> {
        self.storage_launcher.clone()
    }

    /// Drops the engines opened so far; the next call opens them again (after
    /// [`Services::reset`]).
    fn forget_engines(&self) {
        self.kms.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.ec2.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.rds.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.rds_storage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        *self.iam.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.forget_credentials();
    }

    /// Empties the credential cache (IAM changed in this process: its own
    /// commits do not move `data_version`).
    fn forget_credentials(&self) {
        self.credential_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// `hooks` is called when a region's EC2 is first opened; what it returns
    /// stays with that engine.
    pub fn with_ec2_hooks(mut self, hooks: impl Fn() -> Ec2Hooks + Send + Sync + 'static) -> Self {
        self.ec2_hooks = Some(Box::new(hooks));
        self
    }

    pub fn root(&self) -> &DataRoot {
        &self.root
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The KMS of `region` (opened once, then shared).
    pub fn kms_engine(&self, region: &str) -> Result<Arc<Kms>> {
        let mut all = self.kms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = all.get(region) {
            return Ok(k.clone());
        }
        let k = Arc::new(Kms::open(&self.root, region, self.clock.clone())?);
        all.insert(region.to_string(), k.clone());
        Ok(k)
    }

    /// The EC2 of `region` (opened once — which settles what interrupted
    /// operations left — then shared), with the front end's hooks.
    pub fn ec2_engine(&self, region: &str) -> Result<Arc<Ec2>> {
        let mut all = self.ec2.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = all.get(region) {
            return Ok(e.clone());
        }
        // Its own KMS handle: the engine owns the KMS it calls on the caller's
        // behalf.
        let kms = Kms::open(&self.root, region, self.clock.clone())?;
        // Its attachments live on this Linux host, which the engine reaches only
        // through its AttachmentHost.
        let mut ec2 = Ec2::with_host(&self.root, kms, Arc::new(self.host(region)?))?;
        let hooks = self.ec2_hooks.as_ref().map(|h| h()).unwrap_or_default();
        if let Some(p) = hooks.progress {
            ec2.set_progress(p);
        }
        if let Some(c) = hooks.cancel {
            ec2.set_cancel(c);
        }
        let ec2 = Arc::new(ec2);
        all.insert(region.to_string(), ec2.clone());
        Ok(ec2)
    }

    /// The host `region`'s attachments live on: their processes' control sockets
    /// and logs, and what the EC2 engine of the region is given as its
    /// `AttachmentHost`.
    pub fn host(&self, region: &str) -> Result<LinuxHost> {
        LinuxHost::for_region(&self.root, region)
    }

    /// The data root's IAM (global), opened once.
    fn iam_engine(&self) -> Result<Arc<Mutex<crate::iam::Iam>>> {
        let mut iam = self.iam.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = &*iam {
            return Ok(i.clone());
        }
        let i = Arc::new(Mutex::new(crate::iam::Iam::open(&self.root)?));
        *iam = Some(i.clone());
        Ok(i)
    }

    /// Runs one KMS operation; its response in AWS's shape (`null` for an empty one).
    pub fn kms(&self, ctx: &RequestContext, req: kms::KmsRequest) -> Result<serde_json::Value> {
        let engine = self.kms_engine(&ctx.region)?;
        req.run(&engine, &ctx.caller)
    }

    /// Runs one CloudTrail operation over the context's region's audit log.
    pub fn cloudtrail(
        &self,
        ctx: &RequestContext,
        req: cloudtrail::CloudTrailRequest,
    ) -> Result<serde_json::Value> {
        let log = self.root.region_dir(&ctx.region)?.join("cloudtrail.jsonl");
        req.run(&log)
    }

    /// Runs one IAM operation.
    pub fn iam(&self, ctx: &RequestContext, req: iam::IamRequest) -> Result<serde_json::Value> {
        let engine = self.iam_engine()?;
        let engine = engine.lock().unwrap_or_else(|p| p.into_inner());
        let out = req.run(&engine, &ctx.caller, self.clock.now());
        // Still under the IAM lock, which `credentials` reads under: no stale
        // entry can be cached after this.
        self.forget_credentials();
        out
    }

    /// Runs one EC2 operation in the context's region. DetachVolume and
    /// CreateSnapshot may reach an attachment process on this host
    /// ([`attach`]); the rest run on the engine alone.
    pub fn ec2(&self, ctx: &RequestContext, req: ec2::Ec2Request) -> Result<serde_json::Value> {
        match req {
            ec2::Ec2Request::AttachVolume(r) => attach::attach_to_instance(self, ctx, &r),
            ec2::Ec2Request::TerminateInstances(r) => attach::terminate_instances(self, ctx, r),
            ec2::Ec2Request::DetachVolume(r) => attach::detach_volume(self, ctx, &r),
            ec2::Ec2Request::CreateSnapshot(r) => attach::create_snapshot(self, ctx, r),
            req => {
                let engine = self.ec2_engine(&ctx.region)?;
                req.run(&engine, &ctx.caller)
            }
        }
    }

    /// Runs one EBS direct API call on the context's region's EC2 (its
    /// snapshots); errors in the EBS model's words.
    pub fn ebs(&self, ctx: &RequestContext, req: ebs::EbsRequest) -> Result<ebs::EbsOutput> {
        let engine = self.ec2_engine(&ctx.region)?;
        req.run(&engine, &ctx.caller)
    }

    /// The caller for principal `arn`: it must parse and, for users and roles,
    /// exist (AWS: the credentials are invalid).
    pub fn caller_for(&self, arn: &str) -> Result<Caller> {
        use crate::iam::{EntityKind, Principal};
        let principal = Principal::parse(arn)?;
        let lookup = |account: &str, kind: EntityKind, name: &str| -> Result<_> {
            let iam = self.iam_engine()?;
            let iam = iam.lock().unwrap_or_else(|p| p.into_inner());
            iam.get(account, kind, name)
        };
        let entity = match &principal {
            Principal::User { account, name, .. } => Some(lookup(account, EntityKind::User, name)?),
            Principal::AssumedRole { account, role, .. } => {
                Some(lookup(account, EntityKind::Role, role)?)
            }
            _ => None,
        };
        let principal_id = match (&principal, entity) {
            (_, Some(None)) => {
                return Err(Error::new(
                    ErrorKind::UnrecognizedClient,
                    format!(
                        "The security token included in the request is invalid: {arn} does not exist (create it with ebsim iam create-user / create-role)"
                    ),
                ));
            }
            (Principal::AssumedRole { session, .. }, Some(Some(e))) => {
                Some(format!("{}:{session}", e.id))
            }
            (_, Some(Some(e))) => Some(e.id),
            _ => None,
        };
        Ok(Caller {
            principal_id,
            ..Caller::new(principal)
        })
    }
}

/// AWS's error for an operation a service does not have.
pub(crate) fn unknown_operation(service: &str, name: &str) -> Error {
    Error::new(
        ErrorKind::UnknownOperation,
        format!("{service} has no operation {name}"),
    )
}

/// AWS's error for a body that does not read as the operation's request.
pub(crate) fn serialization_error(name: &str, e: serde_json::Error) -> Error {
    Error::new(
        ErrorKind::Serialization,
        format!("{name}: the request body cannot be read: {e}"),
    )
}

pub(crate) fn to_value<T: serde::Serialize>(v: T) -> serde_json::Value {
    serde_json::to_value(v).expect("responses serialize")
}
