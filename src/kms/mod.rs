//! The KMS: keys with backing-key versions, aliases, tags, states, rotation and
//! deletion, the symmetric cryptographic operations, quotas and the audit log,
//! with AWS KMS's names, validation and errors (shared/reference/kms-ebs.md §1).
//!
//! One [`Kms`] serves one region of one data root. Its state lives in the region's
//! sealed store ([`store`]); a cache of opened records sits in memory and is
//! reloaded whenever another process has committed (SQLite's `data_version`,
//! asked at most once per [`RECHECK`]: a call that starts at least that long
//! after another process's commit sees it).
//! Every mutation is one immediate transaction that first brings the cache up to
//! date, so concurrent processes never lose each other's updates.
//!
//! Time-driven changes (automatic rotation, the end of a deletion window) happen
//! lazily: before any call, whatever fell due by the clock's "now" is applied.

pub mod access;
pub mod api;
pub mod audit;
pub mod ciphertext;
pub mod context;
pub mod ids;
pub mod model;
pub mod quota;
pub mod spec;
pub mod store;

/// How long a cache may go without asking SQLite whether another process has
/// committed. Asking takes a shared lock on the store (four `fcntl` calls); at
/// thousands of calls per second that was a tenth of a call's time
/// (docs/BENCHMARKS.md). A millisecond is less than any process takes to commit
/// and then hand the next request to this one.
pub const RECHECK: std::time::Duration = std::time::Duration::from_millis(1);

mod aliases;
mod authz;
mod checks;
mod cryptographic;
mod grants;
mod keys;
mod rotation;

pub use grants::{GRANT_OPERATIONS, GRANTS_PER_KEY, SYMMETRIC_GRANT_OPERATIONS};

use authz::Authz;
use checks::*;

use crate::clock::{Clock, Timestamp};
use crate::crypto::SecretBytes;
use crate::error::{Error, ErrorKind, Field, Result};
use crate::home::DataRoot;
use access::Caller;
use api::*;
use chrono::TimeDelta;
use context::{EncryptionContext, canonical_bytes};
use ids::{KeyRef, alias_arn, key_arn, parse_key_ref, validate_alias_name};
use model::*;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use store::{Kind, RootKey, Store, Tx};

/// The symmetric encryption algorithm (and key spec), the only one ebsim's keys have today.
pub const SYMMETRIC_DEFAULT: &str = "SYMMETRIC_DEFAULT";
/// AWS's limit on RotateKeyOnDemand per key (2026 model).
pub const ON_DEMAND_ROTATION_LIMIT: u32 = 25;
/// Customer managed keys per region (resource quota).
pub const KEYS_PER_REGION: usize = 100_000;
/// Aliases per key (resource quota).
pub const ALIASES_PER_KEY: usize = 50;
/// Tags per key.
pub const TAGS_PER_KEY: usize = 50;

/// Aliases AWS lists in every account and region before the AWS managed key behind
/// them exists; the key is created on first use (DescribeKey, or the service).
pub const PREDEFINED_AWS_ALIASES: &[&str] = &[
    "alias/aws/acm",
    "alias/aws/dynamodb",
    "alias/aws/ebs",
    "alias/aws/elasticfilesystem",
    "alias/aws/es",
    "alias/aws/glue",
    "alias/aws/kinesisvideo",
    "alias/aws/lambda",
    "alias/aws/rds",
    "alias/aws/redshift",
    "alias/aws/s3",
    "alias/aws/secretsmanager",
    "alias/aws/ssm",
    "alias/aws/xray",
];

/// In-memory view of the store.
#[derive(Default)]
struct Cache {
    /// `data_version` the cache was loaded at; None = must reload.
    version: Option<i64>,
    /// When `version` was last compared with the store's.
    checked: Option<std::time::Instant>,
    keys: HashMap<String, Arc<KeyRecord>>,
    aliases: BTreeMap<String, AliasRecord>,
    /// Grants by key id.
    grants: HashMap<String, Vec<Arc<GrantRecord>>>,
    /// The earliest time a rotation or deletion falls due.
    next_due: Option<Timestamp>,
}

impl Cache {
    fn load(
        &mut self,
        keys: Vec<KeyRecord>,
        aliases: Vec<AliasRecord>,
        grants: Vec<GrantRecord>,
        version: i64,
    ) {
        self.grants = HashMap::new();
        for g in grants {
            self.grants
                .entry(g.key_id.clone())
                .or_default()
                .push(Arc::new(g));
        }
        self.keys = keys
            .into_iter()
            .map(|k| (k.key_id.clone(), Arc::new(k)))
            .collect();
        self.aliases = aliases.into_iter().map(|a| (a.name.clone(), a)).collect();
        self.version = Some(version);
        self.recompute_due();
    }

    fn recompute_due(&mut self) {
        self.next_due = self.keys.values().filter_map(|k| due_at(k)).min();
    }

    fn put_key(&mut self, tx: &mut Tx<'_>, key: KeyRecord) -> Result<Arc<KeyRecord>> {
        tx.put(Kind::Key, &key.key_id, &key)?;
        let key = Arc::new(key);
        self.keys.insert(key.key_id.clone(), key.clone());
        self.recompute_due();
        Ok(key)
    }

    fn aliases_of(&self, key_id: &str) -> impl Iterator<Item = &AliasRecord> {
        self.aliases
            .values()
            .filter(move |a| a.target_key_id == key_id)
    }
}

/// AWS owned keys exist only for the AWS service that owns them.
fn visible(k: &KeyRecord, caller: &Caller) -> bool {
    !k.aws_owned || caller.is_aws_service()
}

/// When a key next needs attention from the clock.
fn due_at(k: &KeyRecord) -> Option<Timestamp> {
    match k.state {
        KeyState::PendingDeletion => k.deletion_date,
        KeyState::Enabled if k.rotation.enabled => k.rotation.next,
        _ => None,
    }
}

struct Inner {
    store: Store,
    cache: Cache,
}

/// Filled in by an operation for its audit record.
#[derive(Default)]
struct Audit {
    resources: Vec<String>,
}

/// One region's KMS.
pub struct Kms {
    region: String,
    account_id: String,
    clock: Clock,
    inner: Mutex<Inner>,
    audit: audit::AuditLog,
    bucket: Option<Mutex<quota::TokenBucket>>,
    root: DataRoot,
    /// Opened on the first call by a principal that has identity policies.
    iam: Mutex<Option<crate::iam::Iam>>,
    /// How long a new grant takes to take effect without its token.
    grant_delay: TimeDelta,
}

/// How a call was allowed.
#[derive(Debug, Clone)]
pub(crate) enum Via {
    Policy,
    Grant(Arc<GrantRecord>),
}

impl Kms {
    /// Opens the KMS of `region` in `root`, with the account id and quotas of the
    /// root's config.
    pub fn open(root: &DataRoot, region: &str, clock: Clock) -> Result<Self> {
        let config = root.config()?;
        let rps = config.kms_quota.symmetric_rps(region)?;
        let mut kms = Self::open_with(root, region, &config.account_id, clock, rps)?;
        kms.set_grant_propagation_delay(TimeDelta::seconds(i64::from(
            config.kms_grant_propagation_seconds,
        )));
        Ok(kms)
    }

    /// Opens with explicit settings (`symmetric_rps = None`: no throttling).
    pub fn open_with(
        root: &DataRoot,
        region: &str,
        account_id: &str,
        clock: Clock,
        symmetric_rps: Option<u32>,
    ) -> Result<Self> {
        crate::home::validate_account_id(account_id)?;
        let rk = RootKey::load_or_create(root)?;
        let dir = root.region_dir(region)?;
        let store = Store::open_region(root, region, &rk)?;
        store
            .bind_account(account_id)
            .map_err(|e| e.in_store(&dir.join("kms.db")))?;
        let audit = audit::AuditLog::open(&dir.join("cloudtrail.jsonl"))?;
        Ok(Kms {
            region: region.to_string(),
            account_id: account_id.to_string(),
            clock,
            inner: Mutex::new(Inner {
                store,
                cache: Cache::default(),
            }),
            audit,
            bucket: symmetric_rps.map(|n| Mutex::new(quota::TokenBucket::new(n))),
            root: root.clone(),
            iam: Mutex::new(None),
            grant_delay: TimeDelta::zero(),
        })
    }

    /// Sets how long a new grant takes to take effect for callers that do not present
    /// its grant token (AWS: "usually less than five minutes"; ebsim's default: 0).
    pub fn set_grant_propagation_delay(&mut self, delay: TimeDelta) {
        self.grant_delay = delay;
    }

    /// Authorization for actions on no key (`kms:CreateKey`, `kms:ListKeys`,
    /// `kms:GenerateRandom`, `kms:ListRetirableGrants`, and an alias resource): the
    /// account root and AWS services may; other principals need an identity policy.
    pub(crate) fn authorize_account_action(
        &self,
        caller: &Caller,
        action: &str,
        resource: &str,
    ) -> Result<()> {
        if caller.is_aws_service() || (caller.is_root() && caller.account_id() == self.account_id) {
            return Ok(());
        }
        let ctx = access::base_context(caller, &self.region);
        let req = crate::policy::Request {
            principal: caller.principal.as_request(),
            action,
            resource,
            context: &ctx,
        };
        let crate::policy::Verdict { allow, deny, .. } =
            crate::policy::evaluate_all(&self.identity_policies(caller)?, &req);
        if allow && !deny && caller.account_id() == self.account_id {
            return Ok(());
        }
        let why = if deny {
            access::Denial::ExplicitDenyInIdentityPolicy
        } else {
            access::Denial::NoIdentityAllow
        };
        Err(access::access_denied(caller, action, resource, why))
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Where this region's audit log is.
    pub fn audit_log_path(&self) -> &std::path::Path {
        self.audit.path()
    }

    /// Forgets every key, alias and grant of the region, and empties its audit
    /// log (`ebsim serve`'s reset: `service::Services::reset`). The store itself,
    /// its account and the root key stay: this is an empty region, not a new data
    /// root.
    pub fn reset(&self) -> Result<()> {
        let mut inner = self.lock();
        inner.store.write(|tx| tx.clear())?;
        inner.cache = Cache::default();
        drop(inner);
        self.audit.clear()
    }

    // ------------------------------------------------------------------
    // plumbing: cache, transactions, maintenance, audit
    // ------------------------------------------------------------------

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Brings the cache up to date and applies whatever fell due; returns the guard.
    fn fresh(&self) -> Result<std::sync::MutexGuard<'_, Inner>> {
        let mut inner = self.lock();
        let started = std::time::Instant::now();
        let recent = inner.cache.version.is_some()
            && inner
                .cache
                .checked
                .is_some_and(|t| started.duration_since(t) < RECHECK);
        if !recent {
            let version = inner.store.data_version()?;
            if inner.cache.version != Some(version) {
                let keys = inner.store.list(Kind::Key)?;
                let aliases = inner.store.list(Kind::Alias)?;
                let grants = inner.store.list(Kind::Grant)?;
                inner.cache.load(keys, aliases, grants, version);
            }
            inner.cache.checked = Some(started);
        }
        let now = self.clock.now();
        if inner.cache.next_due.is_some_and(|d| d <= now) {
            drop(inner);
            self.mutate(|_, _| Ok(()))?;
            inner = self.lock();
        }
        Ok(inner)
    }

    /// Runs `f` inside one write transaction on an up-to-date cache, after applying
    /// due rotations and deletions. On any error the cache is dropped and reloaded
    /// next time, so it never disagrees with the store.
    fn mutate<T>(&self, f: impl FnOnce(&mut Cache, &mut Tx<'_>) -> Result<T>) -> Result<T> {
        let mut guard = self.lock();
        let Inner { store, cache } = &mut *guard;
        let mut events = Vec::new();
        let now = self.clock.now();
        let result = store.write(|tx| {
            let version = tx.data_version()?;
            if cache.version != Some(version) {
                let keys = tx.list(Kind::Key)?;
                let aliases = tx.list(Kind::Alias)?;
                let grants = tx.list(Kind::Grant)?;
                cache.load(keys, aliases, grants, version);
            }
            if cache.next_due.is_some_and(|d| d <= now) {
                events = self.apply_due(cache, tx, now)?;
            }
            f(cache, tx)
        });
        if result.is_err() {
            // Rolled back: the due changes were not made, so they are not logged;
            // the next call applies (and logs) them again.
            cache.version = None;
            events.clear();
        }
        drop(guard);
        let service = Caller::aws_service(&self.account_id, "kms.amazonaws.com");
        for (name, arn, time) in events {
            self.write_audit(audit::Event {
                time,
                region: &self.region,
                caller: &service,
                event_name: name,
                read_only: false,
                request: serde_json::json!({ "keyId": arn }),
                response: serde_json::Value::Null,
                resources: std::slice::from_ref(&arn),
                error: None,
            });
        }
        result
    }

    /// Applies automatic rotations and ends of deletion windows that are due.
    fn apply_due(
        &self,
        cache: &mut Cache,
        tx: &mut Tx<'_>,
        now: Timestamp,
    ) -> Result<Vec<(&'static str, String, Timestamp)>> {
        let mut events = Vec::new();
        let due: Vec<Arc<KeyRecord>> = cache
            .keys
            .values()
            .filter(|k| due_at(k).is_some_and(|d| d <= now))
            .cloned()
            .collect();
        for key in due {
            if key.state == KeyState::PendingDeletion {
                // The waiting period is over: the key, its material and its aliases go.
                let when = key.deletion_date.unwrap_or(now);
                tx.delete(Kind::Key, &key.key_id)?;
                let aliases: Vec<String> = cache
                    .aliases_of(&key.key_id)
                    .map(|a| a.name.clone())
                    .collect();
                for a in aliases {
                    tx.delete(Kind::Alias, &a)?;
                    cache.aliases.remove(&a);
                }
                for g in cache.grants.remove(&key.key_id).unwrap_or_default() {
                    tx.delete(Kind::Grant, &g.grant_id)?;
                }
                cache.keys.remove(&key.key_id);
                events.push(("DeleteKey", key.arn.clone(), when));
            } else {
                let mut k = key.duplicate();
                let period = TimeDelta::days(i64::from(k.rotation.period_days));
                // One rotation per elapsed period, each dated when it fell due.
                while let Some(next) = k.rotation.next.filter(|n| *n <= now) {
                    k.materials
                        .push(new_material(next, Some(RotationType::Automatic)));
                    k.rotation.next = Some(next + period);
                    events.push(("RotateKey", k.arn.clone(), next));
                }
                cache.put_key(tx, k)?;
            }
        }
        cache.recompute_due();
        Ok(events)
    }

    fn write_audit(&self, ev: audit::Event<'_>) {
        if let Err(e) = self.audit.record(&ev) {
            // The call's outcome stands (it may already be committed); say loudly
            // that its record is missing.
            tracing::warn!("{e}");
        }
    }

    /// Runs one API call: quota, the operation, the audit record.
    fn call<Req: Audited, Resp: Serialize>(
        &self,
        caller: &Caller,
        name: &'static str,
        kind: CallKind,
        req: &Req,
        op: impl FnOnce(&mut Audit) -> Result<Resp>,
    ) -> Result<Resp> {
        let mut audit = Audit::default();
        // An AWS service's own calls (AWS owned keys, rotation) count against no
        // account's quota and appear in no account's trail; its infrastructure acting
        // for the account's resources (EBS attach) does both.
        let own_use = caller.is_aws_service() && caller.via_service.is_none();
        let result = (|| {
            if kind == CallKind::Crypto
                && !own_use
                && let Some(b) = &self.bucket
            {
                b.lock().unwrap_or_else(|p| p.into_inner()).take()?;
            }
            op(&mut audit)
        })();
        // The name, the caller and the outcome only: never a parameter (a
        // plaintext could be one).
        tracing::debug!(
            "kms {name} by {} in {}: {}",
            caller.arn(),
            self.region,
            match &result {
                Ok(_) => "ok",
                Err(e) => e.code(),
            }
        );
        if own_use {
            return result;
        }
        let response = match (&result, kind) {
            (Ok(r), CallKind::Mutation) => {
                api::camel_case(serde_json::to_value(r).unwrap_or_default())
            }
            _ => serde_json::Value::Null,
        };
        self.write_audit(audit::Event {
            time: self.clock.now(),
            region: &self.region,
            caller,
            event_name: name,
            read_only: kind != CallKind::Mutation,
            request: req.audit_parameters(),
            response,
            resources: &audit.resources,
            error: result.as_ref().err(),
        });
        result
    }

    // ------------------------------------------------------------------
    // key resolution
    // ------------------------------------------------------------------

    fn not_found_key(&self, id: &str) -> Error {
        Error::new(
            ErrorKind::NotFound,
            format!(
                "Key '{}' does not exist",
                key_arn(&self.region, &self.account_id, id)
            ),
        )
    }

    fn not_found_alias(&self, name: &str) -> Error {
        Error::new(
            ErrorKind::NotFound,
            format!(
                "Alias {} is not found.",
                alias_arn(&self.region, &self.account_id, name)
            ),
        )
    }

    /// Resolves a `KeyId` against the cache. `aliases`: whether this operation
    /// accepts alias names (management operations take only key ids and ARNs).
    fn resolve(
        &self,
        cache: &Cache,
        caller: &Caller,
        input: &str,
        aliases: bool,
    ) -> Result<Arc<KeyRecord>> {
        let here = |region: &Option<String>, account: &Option<String>| {
            region.as_deref().is_none_or(|r| r == self.region)
                && account.as_deref().is_none_or(|a| a == self.account_id)
        };
        match parse_key_ref(input)? {
            KeyRef::Key {
                id,
                region,
                account,
            } => {
                if !here(&region, &account) {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!("Key '{input}' does not exist"),
                    ));
                }
                cache
                    .keys
                    .get(&id)
                    .filter(|k| visible(k, caller))
                    .cloned()
                    .ok_or_else(|| self.not_found_key(&id))
            }
            KeyRef::Alias {
                name,
                region,
                account,
            } => {
                if !aliases {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!("Invalid keyId {input}"),
                    ));
                }
                if !here(&region, &account) {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!("Alias {input} is not found."),
                    ));
                }
                let a = cache
                    .aliases
                    .get(&name)
                    .ok_or_else(|| self.not_found_alias(&name))?;
                cache
                    .keys
                    .get(&a.target_key_id)
                    .cloned()
                    .ok_or_else(|| self.not_found_key(&a.target_key_id))
            }
        }
    }

    /// Resolves for an operation on a snapshot of the cache.
    fn resolve_fresh(&self, caller: &Caller, input: &str, aliases: bool) -> Result<Arc<KeyRecord>> {
        let inner = self.fresh()?;
        self.resolve(&inner.cache, caller, input, aliases)
    }

    /// The state of key `key_id` (an ARN) as an AWS service that holds a grant
    /// on it sees it (RDS watching its instances' keys): no API call, no
    /// audit record. None: the key is gone (deleted).
    pub fn key_state_seen_by_service(&self, key_id: &str) -> Result<Option<String>> {
        let service = Caller::aws_service(&self.account_id, "kms.amazonaws.com");
        match self.resolve_fresh(&service, key_id, false) {
            Ok(k) => Ok(Some(metadata(&k).key_state)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The AWS managed key for `service` (`ebs`, `rds`), created on first use as AWS
    /// does. Used by ebsim's own services; callers cannot use it directly.
    pub fn aws_managed_key(&self, service: &str) -> Result<KeyMetadata> {
        let alias = format!("alias/aws/{service}");
        if !PREDEFINED_AWS_ALIASES.contains(&alias.as_str()) {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("{alias} is not an AWS managed key alias"),
            ));
        }
        if let Ok(k) = self.resolve_fresh(
            &Caller::aws_service(&self.account_id, "kms.amazonaws.com"),
            &alias,
            true,
        ) {
            return Ok(metadata(&k));
        }
        let now = self.clock.now();
        let k = self.mutate(|cache, tx| {
            if let Some(a) = cache.aliases.get(&alias)
                && let Some(k) = cache.keys.get(&a.target_key_id)
            {
                return Ok(k.clone());
            }
            let mut key = self.new_key_record(now, String::new(), Origin::AwsKms);
            key.manager = KeyManager::Aws;
            key.service = Some(service.to_string());
            key.description = format!(
                "Default key that protects my {} data when no other key is defined",
                service.to_uppercase()
            );
            key.policy = access::aws_managed_key_policy(&self.account_id, &self.region, service);
            key.rotation = Rotation {
                enabled: true,
                period_days: 365,
                next: Some(now + TimeDelta::days(365)),
            };
            let rec = AliasRecord {
                name: alias.clone(),
                target_key_id: key.key_id.clone(),
                creation_date: now,
                last_updated_date: now,
            };
            tx.put(Kind::Alias, &rec.name, &rec)?;
            cache.aliases.insert(rec.name.clone(), rec);
            cache.put_key(tx, key)
        })?;
        Ok(metadata(&k))
    }

    /// The AWS owned key a service (`ec2`, `s3`, `dynamodb`) uses for its own
    /// purposes in this region, created on first use. It is never listed, cannot be
    /// described or used by the account, and only `Caller::aws_service(account,
    /// "<service>.amazonaws.com")` may use it; returns its key id.
    pub fn aws_owned_key(&self, service: &str) -> Result<String> {
        if service.is_empty() || !service.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
            return Err(Error::usage(format!("'{service}' is not a service name")));
        }
        let find = |cache: &Cache| {
            cache
                .keys
                .values()
                .find(|k| k.aws_owned && k.service.as_deref() == Some(service))
                .map(|k| k.key_id.clone())
        };
        if let Some(id) = find(&self.fresh()?.cache) {
            return Ok(id);
        }
        let now = self.clock.now();
        self.mutate(|cache, tx| {
            if let Some(id) = find(cache) {
                return Ok(id);
            }
            let mut key =
                self.new_key_record(now, format!("AWS owned key of {service}"), Origin::AwsKms);
            key.manager = KeyManager::Aws;
            key.service = Some(service.to_string());
            key.aws_owned = true;
            Ok(cache.put_key(tx, key)?.key_id.clone())
        })
    }

    /// A new single-Region SYMMETRIC_DEFAULT key of this account and region; callers
    /// change what differs.
    fn new_key_record(&self, now: Timestamp, description: String, origin: Origin) -> KeyRecord {
        let key_id = ids::new_key_id(false);
        KeyRecord {
            arn: key_arn(&self.region, &self.account_id, &key_id),
            key_id,
            account_id: self.account_id.clone(),
            creation_date: now,
            description,
            // A key whose material is imported has none until the import.
            state: match origin {
                Origin::External => KeyState::PendingImport,
                _ => KeyState::Enabled,
            },
            manager: KeyManager::Customer,
            origin,
            key_spec: KeySpec::SymmetricDefault,
            key_usage: KeyUsage::EncryptDecrypt,
            multi_region: false,
            multi_region_config: None,
            service: None,
            deletion_date: None,
            pending_window_days: None,
            policy: access::default_key_policy(&self.account_id),
            tags: Vec::new(),
            rotation: Rotation {
                enabled: false,
                period_days: 365,
                next: None,
            },
            materials: match origin {
                Origin::External => Vec::new(),
                _ => vec![new_material(now, None)],
            },
            on_demand_rotations: 0,
            aws_owned: false,
            parsed_policy: Default::default(),
        }
    }

    /// Resolves `input`, authorizes `action`, then applies `change` to a copy of the
    /// key in one transaction. `change` sees the key as it is inside the transaction.
    fn update_key<T>(
        &self,
        caller: &Caller,
        audit: &mut Audit,
        input: &str,
        action: &str,
        authz: authz::Authz<'_>,
        change: impl FnOnce(&mut KeyRecord, Timestamp) -> Result<T>,
    ) -> Result<T> {
        let now = self.clock.now();
        self.mutate(|cache, tx| {
            let key = self.resolve(cache, caller, input, false)?;
            audit.resources.push(key.arn.clone());
            self.authorize(caller, action, &key, &[], &authz)?;
            let mut k = key.duplicate();
            let out = change(&mut k, now)?;
            cache.put_key(tx, k)?;
            Ok(out)
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallKind {
    /// Counts against the shared cryptographic quota; read-only in CloudTrail.
    Crypto,
    Read,
    Mutation,
}

/// New key material for a SYMMETRIC_DEFAULT key: a random 256-bit backing key.
fn new_material(created: Timestamp, rotation: Option<RotationType>) -> KeyMaterial {
    let id: String = crate::crypto::random_bytes(32)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    KeyMaterial {
        id,
        created,
        rotation,
        secret: KeySecret::Symmetric(SecretBytes::random(32)),
    }
}

/// `KeyMetadata` for a key, from its record: the algorithm lists are the ones
/// AWS shows for the key's spec and usage ([`spec::KeySpec::algorithms`]), each
/// present only for its usage, as in AWS's responses.
pub fn metadata(k: &KeyRecord) -> KeyMetadata {
    // A record whose spec does not allow its usage (none is written) lists nothing.
    let a = k
        .key_spec
        .algorithms(k.key_usage)
        .unwrap_or(spec::Algorithms::NONE);
    fn names<T: Copy + std::fmt::Display>(list: &[T]) -> Vec<String> {
        list.iter().map(|x| x.to_string()).collect()
    }
    KeyMetadata {
        aws_account_id: k.account_id.clone(),
        key_id: k.key_id.clone(),
        arn: k.arn.clone(),
        creation_date: Time(k.creation_date),
        enabled: k.state == KeyState::Enabled,
        description: k.description.clone(),
        key_usage: k.key_usage.as_str().into(),
        key_state: k.state.as_str().into(),
        deletion_date: k.deletion_date.map(Time),
        origin: k.origin.as_str().into(),
        key_manager: match k.manager {
            KeyManager::Customer => "CUSTOMER",
            KeyManager::Aws => "AWS",
        }
        .into(),
        // AWS: "The KeySpec and CustomerMasterKeySpec fields have the same value."
        customer_master_key_spec: k.key_spec.as_str().into(),
        key_spec: k.key_spec.as_str().into(),
        encryption_algorithms: names(a.encryption),
        signing_algorithms: names(a.signing),
        key_agreement_algorithms: names(a.key_agreement),
        multi_region: k.multi_region,
        multi_region_configuration: k.multi_region_config.as_ref().map(|c| {
            let key = |region: &str| MultiRegionKey {
                arn: key_arn(region, &k.account_id, &k.key_id),
                region: region.to_string(),
            };
            MultiRegionConfiguration {
                multi_region_key_type: c.key_type.as_str().into(),
                primary_key: key(&c.primary_region),
                replica_keys: c.replica_regions.iter().map(|r| key(r)).collect(),
            }
        }),
        pending_deletion_window_in_days: k.pending_window_days,
        mac_algorithms: names(a.mac),
        current_key_material_id: k.current_material().map(|(_, m)| m.id.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A KMS of `region` on a fresh data root, with a manual clock and no quota.
    fn test_kms(region: &str) -> (tempfile::TempDir, DataRoot, Kms) {
        let dir = tempfile::tempdir().unwrap();
        let root = DataRoot::open(dir.path()).unwrap();
        let kms = Kms::open_with(
            &root,
            region,
            "111122223333",
            Clock::manual(chrono::Utc::now()),
            None,
        )
        .unwrap();
        (dir, root, kms)
    }

    /// The backing keys (and the root key outside root.key) never appear in any file.
    #[test]
    fn backing_keys_are_never_stored_in_the_clear() {
        let (dir, _root, kms) = test_kms("us-east-1");
        let me = Caller::account_root("111122223333");
        for _ in 0..3 {
            let k = kms
                .create_key(&me, CreateKeyRequest::default())
                .unwrap()
                .key_metadata;
            kms.rotate_key_on_demand(&me, KeyIdRequest { key_id: k.key_id })
                .unwrap();
        }
        kms.aws_managed_key("ebs").unwrap();
        let mut secrets: Vec<Vec<u8>> = Vec::new();
        {
            let inner = kms.fresh().unwrap();
            for k in inner.cache.keys.values() {
                for m in &k.materials {
                    secrets.push(m.secret.expose().to_vec());
                }
            }
        }
        assert_eq!(secrets.len(), 7);
        let root_key = std::fs::read(dir.path().join("root.key")).unwrap()[8..40].to_vec();
        let scan = |secrets: &[Vec<u8>]| {
            let mut stack = vec![dir.path().to_path_buf()];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).unwrap() {
                    let p = e.unwrap().path();
                    if p.is_dir() {
                        stack.push(p);
                        continue;
                    }
                    let bytes = std::fs::read(&p).unwrap();
                    for s in secrets {
                        assert!(
                            !bytes.windows(s.len()).any(|w| w == &s[..]),
                            "secret found in {}",
                            p.display()
                        );
                    }
                    if !p.ends_with("root.key") {
                        assert!(
                            !bytes.windows(32).any(|w| w == &root_key[..]),
                            "root key found in {}",
                            p.display()
                        );
                    }
                }
            }
        };
        scan(&secrets);
        drop(kms);
        scan(&secrets);
    }

    /// Multi-Region ids resolve like any key id: by id, by ARN and through an alias
    /// once such a key exists (only a later ebsim writes one: this test stores the
    /// record directly), NotFoundException while it does not; nothing panics, and
    /// the cryptographic operations refuse what ciphertext v1 cannot name.
    #[test]
    fn multi_region_ids_resolve_and_never_panic() {
        let (_dir, root, kms) = test_kms("us-west-2");
        let me = Caller::account_root("111122223333");
        let mrk = "mrk-1234abcd12ab34cd56ef1234567890ab";
        let arn = key_arn("us-west-2", "111122223333", mrk);
        let describe = |id: &str| {
            kms.describe_key(
                &me,
                DescribeKeyRequest {
                    key_id: id.into(),
                    grant_tokens: vec![],
                },
            )
        };
        for id in [mrk.to_string(), arn.clone()] {
            let e = describe(&id).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::NotFound, "{id}");
            assert_eq!(
                e.to_string(),
                format!("NotFoundException: Key '{arn}' does not exist")
            );
        }
        let alias = |target: &str| {
            kms.create_alias(
                &me,
                AliasRequest {
                    alias_name: "alias/mrk".into(),
                    target_key_id: target.into(),
                },
            )
        };
        assert_eq!(alias(mrk).unwrap_err().kind(), ErrorKind::NotFound);

        let now = kms.clock.now();
        kms.mutate(|cache, tx| {
            let mut key = kms.new_key_record(now, "multi-Region".into(), Origin::AwsKms);
            key.key_id = mrk.into();
            key.arn = arn.clone();
            key.multi_region = true;
            key.multi_region_config = Some(MultiRegionConfig {
                key_type: MultiRegionKeyType::Primary,
                primary_region: "us-west-2".into(),
                replica_regions: vec![],
            });
            cache.put_key(tx, key).map(|_| ())
        })
        .unwrap();
        alias(&arn).unwrap();
        let upper = format!("mrk-{}", mrk[4..].to_ascii_uppercase());
        for id in [mrk, &arn, &upper, "alias/mrk"] {
            let m = describe(id).unwrap().key_metadata;
            assert_eq!(m.key_id, mrk, "{id}");
            assert!(m.multi_region);
            let c = m.multi_region_configuration.unwrap();
            assert_eq!(c.multi_region_key_type, "PRIMARY");
            assert_eq!(c.primary_key.arn, arn);
            assert!(c.replica_keys.is_empty());
        }
        let other_region = key_arn("eu-west-1", "111122223333", mrk);
        assert_eq!(
            describe(&other_region).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        let e = kms
            .encrypt(
                &me,
                EncryptRequest {
                    key_id: "alias/mrk".into(),
                    plaintext: Blob::new(b"x".to_vec()),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnsupportedOperation, "{e}");
        // The store reopens with the record in it.
        drop(kms);
        let kms = Kms::open_with(
            &root,
            "us-west-2",
            "111122223333",
            Clock::manual(chrono::Utc::now()),
            None,
        )
        .unwrap();
        let m = kms
            .describe_key(
                &me,
                DescribeKeyRequest {
                    key_id: mrk.into(),
                    grant_tokens: vec![],
                },
            )
            .unwrap()
            .key_metadata;
        assert!(m.multi_region);
    }

    /// A key of another usage (which only a later ebsim creates: this test stores
    /// the record directly) is refused by the symmetric operations with AWS's
    /// InvalidKeyUsageException, and by rotation.
    #[test]
    fn keys_of_other_usages_are_refused_by_symmetric_operations() {
        let (_dir, _root, kms) = test_kms("us-east-1");
        let me = Caller::account_root("111122223333");
        let now = kms.clock.now();
        let key = kms
            .mutate(|cache, tx| {
                let mut key = kms.new_key_record(now, "hmac".into(), Origin::AwsKms);
                key.key_spec = KeySpec::Hmac256;
                key.key_usage = KeyUsage::GenerateVerifyMac;
                cache.put_key(tx, key)
            })
            .unwrap();
        let m = kms
            .describe_key(
                &me,
                DescribeKeyRequest {
                    key_id: key.key_id.clone(),
                    grant_tokens: vec![],
                },
            )
            .unwrap()
            .key_metadata;
        assert_eq!(m.key_usage, "GENERATE_VERIFY_MAC");
        assert_eq!(m.mac_algorithms, ["HMAC_SHA_256"]);
        assert!(m.encryption_algorithms.is_empty());
        let e = kms
            .encrypt(
                &me,
                EncryptRequest {
                    key_id: key.key_id.clone(),
                    plaintext: Blob::new(b"x".to_vec()),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidKeyUsage);
        assert_eq!(
            e.to_string(),
            format!(
                "InvalidKeyUsageException: {} key usage is GENERATE_VERIFY_MAC which is not valid for Encrypt.",
                key.arn
            )
        );
        let e = kms
            .enable_key_rotation(
                &me,
                EnableKeyRotationRequest {
                    key_id: key.key_id.clone(),
                    rotation_period_in_days: None,
                },
            )
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnsupportedOperation, "{e}");
    }

    #[test]
    fn pagination_markers_are_opaque_and_checked() {
        let items: Vec<u32> = (0..5).collect();
        let (p, next, t) = paginate(items.clone(), Some(2), 10, 5, None).unwrap();
        assert_eq!((p, t), (vec![0, 1], true));
        let (p, next, t) = paginate(items.clone(), Some(2), 10, 5, next.as_deref()).unwrap();
        assert_eq!((p, t), (vec![2, 3], true));
        let (p, next, t) = paginate(items.clone(), Some(2), 10, 5, next.as_deref()).unwrap();
        assert_eq!((p, next, t), (vec![4], None, false));
        assert!(
            paginate(items, None, 10, 5, Some("ZWJzaW06OTk=")).is_err(),
            "offset past the end"
        );
    }
}
