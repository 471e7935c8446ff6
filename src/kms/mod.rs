//! The KMS: keys with backing-key versions, aliases, tags, states, rotation and
//! deletion, the symmetric cryptographic operations, quotas and the audit log,
//! with AWS KMS's names, validation and errors (shared/reference/kms-ebs.md §1).
//!
//! One [`Kms`] serves one region of one data root. Its state lives in the region's
//! sealed store ([`store`]); a cache of opened records sits in memory and is
//! reloaded whenever another process has committed (SQLite's `data_version`).
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
pub mod store;

use crate::clock::{Clock, Timestamp};
use crate::crypto::SecretBytes;
use crate::error::{Error, ErrorKind, Result};
use crate::home::DataRoot;
use access::{Caller, authorize};
use api::*;
use chrono::TimeDelta;
use context::{EncryptionContext, canonical_bytes};
use ids::{KeyRef, alias_arn, key_arn, parse_key_ref, validate_alias_name};
use model::*;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use store::{Kind, RootKey, Store, Tx};

/// The symmetric encryption algorithm, the only one ebsim's keys have.
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

const KEY_SPECS: &[&str] = &[
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "SYMMETRIC_DEFAULT",
    "HMAC_224",
    "HMAC_256",
    "HMAC_384",
    "HMAC_512",
    "SM2",
    "ML_DSA_44",
    "ML_DSA_65",
    "ML_DSA_87",
    "ECC_NIST_EDWARDS25519",
];
const KEY_USAGES: &[&str] = &[
    "SIGN_VERIFY",
    "ENCRYPT_DECRYPT",
    "GENERATE_VERIFY_MAC",
    "KEY_AGREEMENT",
];
const ORIGINS: &[&str] = &["AWS_KMS", "EXTERNAL", "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"];
const ENCRYPTION_ALGORITHMS: &[&str] = &[
    "SYMMETRIC_DEFAULT",
    "RSAES_OAEP_SHA_1",
    "RSAES_OAEP_SHA_256",
    "SM2PKE",
];

/// In-memory view of the store.
#[derive(Default)]
struct Cache {
    /// `data_version` the cache was loaded at; None = must reload.
    version: Option<i64>,
    keys: HashMap<String, Arc<KeyRecord>>,
    aliases: BTreeMap<String, AliasRecord>,
    /// The earliest time a rotation or deletion falls due.
    next_due: Option<Timestamp>,
}

impl Cache {
    fn load(&mut self, keys: Vec<KeyRecord>, aliases: Vec<AliasRecord>, version: i64) {
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
}

impl Kms {
    /// Opens the KMS of `region` in `root`, with the account id and quotas of the
    /// root's config.
    pub fn open(root: &DataRoot, region: &str, clock: Clock) -> Result<Self> {
        let config = root.config()?;
        let rps = config.kms_quota.symmetric_rps(region)?;
        Self::open_with(root, region, &config.account_id, clock, rps)
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
        let store = Store::open(&dir.join("kms.db"), &rk)?;
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
        })
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

    // ------------------------------------------------------------------
    // plumbing: cache, transactions, maintenance, audit
    // ------------------------------------------------------------------

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Brings the cache up to date and applies whatever fell due; returns the guard.
    fn fresh(&self) -> Result<std::sync::MutexGuard<'_, Inner>> {
        let mut inner = self.lock();
        let version = inner.store.data_version()?;
        if inner.cache.version != Some(version) {
            let keys = inner.store.list(Kind::Key)?;
            let aliases = inner.store.list(Kind::Alias)?;
            inner.cache.load(keys, aliases, version);
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
                cache.load(keys, aliases, version);
            }
            if cache.next_due.is_some_and(|d| d <= now) {
                events = self.apply_due(cache, tx, now)?;
            }
            f(cache, tx)
        });
        if result.is_err() {
            cache.version = None;
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
            eprintln!("ebsim: warning: {e}");
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
        let result = (|| {
            if kind == CallKind::Crypto
                && let Some(b) = &self.bucket
            {
                b.lock().unwrap_or_else(|p| p.into_inner()).take()?;
            }
            op(&mut audit)
        })();
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
    fn resolve(&self, cache: &Cache, input: &str, aliases: bool) -> Result<Arc<KeyRecord>> {
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
    fn resolve_fresh(&self, input: &str, aliases: bool) -> Result<Arc<KeyRecord>> {
        let inner = self.fresh()?;
        self.resolve(&inner.cache, input, aliases)
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
        if let Ok(k) = self.resolve_fresh(&alias, true) {
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

    fn new_key_record(&self, now: Timestamp, description: String, origin: Origin) -> KeyRecord {
        let key_id = uuid::Uuid::new_v4().to_string();
        KeyRecord {
            arn: key_arn(&self.region, &self.account_id, &key_id),
            key_id,
            account_id: self.account_id.clone(),
            creation_date: now,
            description,
            state: match origin {
                Origin::AwsKms => KeyState::Enabled,
                Origin::External => KeyState::PendingImport,
            },
            manager: KeyManager::Customer,
            origin,
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
                Origin::AwsKms => vec![new_material(now, None)],
                Origin::External => Vec::new(),
            },
            on_demand_rotations: 0,
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
        change: impl FnOnce(&mut KeyRecord, Timestamp) -> Result<T>,
    ) -> Result<T> {
        let now = self.clock.now();
        self.mutate(|cache, tx| {
            let key = self.resolve(cache, input, false)?;
            audit.resources.push(key.arn.clone());
            authorize(caller, action, &key)?;
            let mut k = key.duplicate();
            let out = change(&mut k, now)?;
            cache.put_key(tx, k)?;
            Ok(out)
        })
    }

    // ------------------------------------------------------------------
    // key management
    // ------------------------------------------------------------------

    pub fn create_key(
        &self,
        caller: &Caller,
        req: CreateKeyRequest,
    ) -> Result<KeyMetadataResponse> {
        self.call(caller, "CreateKey", CallKind::Mutation, &req, |audit| {
            let description = req.description.clone().unwrap_or_default();
            check_description(&description)?;
            let usage = req.key_usage.as_deref().unwrap_or("ENCRYPT_DECRYPT");
            check_enum(usage, "keyUsage", KEY_USAGES)?;
            if req.key_spec.is_some() && req.customer_master_key_spec.is_some() {
                return Err(Error::new(
                    ErrorKind::Validation,
                    "You cannot specify KeySpec and CustomerMasterKeySpec in the same request. CustomerMasterKeySpec is deprecated.",
                ));
            }
            let spec = req
                .key_spec
                .as_deref()
                .or(req.customer_master_key_spec.as_deref())
                .unwrap_or(SYMMETRIC_DEFAULT);
            check_enum(spec, "keySpec", KEY_SPECS)?;
            if spec != SYMMETRIC_DEFAULT {
                return Err(Error::new(
                    ErrorKind::UnsupportedOperation,
                    format!("KeySpec {spec} is not supported: ebsim implements symmetric encryption keys (SYMMETRIC_DEFAULT) only."),
                ));
            }
            if usage != "ENCRYPT_DECRYPT" {
                return Err(Error::new(
                    ErrorKind::Validation,
                    format!("KeyUsage {usage} is not compatible with KeySpec {spec}"),
                ));
            }
            let origin_s = req.origin.as_deref().unwrap_or("AWS_KMS");
            check_enum(origin_s, "origin", ORIGINS)?;
            let origin = match origin_s {
                "AWS_KMS" => Origin::AwsKms,
                "EXTERNAL" => Origin::External,
                other => {
                    return Err(Error::new(
                        ErrorKind::UnsupportedOperation,
                        format!("Origin {other} needs a custom key store, which ebsim does not implement."),
                    ));
                }
            };
            if req.multi_region == Some(true) {
                return Err(Error::new(
                    ErrorKind::UnsupportedOperation,
                    "Multi-Region keys are not implemented by ebsim.",
                ));
            }
            if let Some(p) = &req.policy {
                access::check_policy_document(p)?;
            }
            check_tags(&req.tags, &[])?;
            let now = self.clock.now();
            let k = self.mutate(|cache, tx| {
                let customer = cache
                    .keys
                    .values()
                    .filter(|k| k.manager == KeyManager::Customer)
                    .count();
                if customer >= KEYS_PER_REGION {
                    return Err(Error::new(
                        ErrorKind::LimitExceeded,
                        format!("The request would exceed the limit of {KEYS_PER_REGION} customer managed keys in {}.", self.region),
                    ));
                }
                let mut key = self.new_key_record(now, description.clone(), origin);
                if let Some(p) = &req.policy {
                    key.policy = p.clone();
                }
                key.tags = req.tags.clone();
                cache.put_key(tx, key)
            })?;
            audit.resources.push(k.arn.clone());
            Ok(KeyMetadataResponse {
                key_metadata: metadata(&k),
            })
        })
    }

    pub fn describe_key(
        &self,
        caller: &Caller,
        req: DescribeKeyRequest,
    ) -> Result<KeyMetadataResponse> {
        self.call(caller, "DescribeKey", CallKind::Read, &req, |audit| {
            check_grant_tokens(&req.grant_tokens)?;
            let key = match self.resolve_fresh(&req.key_id, true) {
                Err(e)
                    if e.kind() == ErrorKind::NotFound
                        && PREDEFINED_AWS_ALIASES.contains(&req.key_id.as_str()) =>
                {
                    // DescribeKey on a predefined AWS alias creates the AWS managed key.
                    let service = req.key_id.trim_start_matches("alias/aws/");
                    self.aws_managed_key(service)?;
                    self.resolve_fresh(&req.key_id, true)?
                }
                other => other?,
            };
            audit.resources.push(key.arn.clone());
            authorize(caller, "kms:DescribeKey", &key)?;
            Ok(KeyMetadataResponse {
                key_metadata: metadata(&key),
            })
        })
    }

    pub fn list_keys(&self, caller: &Caller, req: ListRequest) -> Result<ListKeysResponse> {
        self.call(caller, "ListKeys", CallKind::Read, &req, |_| {
            let inner = self.fresh()?;
            let mut keys: Vec<KeyListEntry> = inner
                .cache
                .keys
                .values()
                .map(|k| KeyListEntry {
                    key_id: k.key_id.clone(),
                    key_arn: k.arn.clone(),
                })
                .collect();
            drop(inner);
            keys.sort_by(|a, b| a.key_id.cmp(&b.key_id));
            let (keys, next_marker, truncated) =
                paginate(keys, req.limit, 1000, 100, req.marker.as_deref())?;
            Ok(ListKeysResponse {
                keys,
                next_marker,
                truncated,
            })
        })
    }

    pub fn enable_key(&self, caller: &Caller, req: KeyIdRequest) -> Result<()> {
        self.call(caller, "EnableKey", CallKind::Mutation, &req, |audit| {
            self.update_key(caller, audit, &req.key_id, "kms:EnableKey", |k, now| {
                check_manageable(k)?;
                if k.state == KeyState::Disabled {
                    k.state = KeyState::Enabled;
                    // A key that missed its rotation while disabled rotates now.
                    if k.rotation.enabled && k.rotation.next.is_some_and(|n| n <= now) {
                        k.materials
                            .push(new_material(now, Some(RotationType::Automatic)));
                        k.rotation.next =
                            Some(now + TimeDelta::days(i64::from(k.rotation.period_days)));
                    }
                }
                Ok(())
            })
        })
    }

    pub fn disable_key(&self, caller: &Caller, req: KeyIdRequest) -> Result<()> {
        self.call(caller, "DisableKey", CallKind::Mutation, &req, |audit| {
            self.update_key(caller, audit, &req.key_id, "kms:DisableKey", |k, _| {
                check_manageable(k)?;
                k.state = KeyState::Disabled;
                Ok(())
            })
        })
    }

    pub fn schedule_key_deletion(
        &self,
        caller: &Caller,
        req: ScheduleKeyDeletionRequest,
    ) -> Result<ScheduleKeyDeletionResponse> {
        self.call(
            caller,
            "ScheduleKeyDeletion",
            CallKind::Mutation,
            &req,
            |audit| {
                let days = req.pending_window_in_days.unwrap_or(30);
                check_range(days, "pendingWindowInDays", 7, 30)?;
                self.update_key(
                    caller,
                    audit,
                    &req.key_id,
                    "kms:ScheduleKeyDeletion",
                    |k, now| {
                        if k.state == KeyState::PendingDeletion {
                            return Err(invalid_state(k, "is pending deletion."));
                        }
                        let when = now + TimeDelta::days(i64::from(days));
                        k.state = KeyState::PendingDeletion;
                        k.deletion_date = Some(when);
                        k.pending_window_days = Some(days);
                        Ok(ScheduleKeyDeletionResponse {
                            key_id: k.arn.clone(),
                            deletion_date: Time(when),
                            key_state: KeyState::PendingDeletion.as_str().into(),
                            pending_window_in_days: days,
                        })
                    },
                )
            },
        )
    }

    pub fn cancel_key_deletion(&self, caller: &Caller, req: KeyIdRequest) -> Result<KeyIdResponse> {
        self.call(
            caller,
            "CancelKeyDeletion",
            CallKind::Mutation,
            &req,
            |audit| {
                self.update_key(
                    caller,
                    audit,
                    &req.key_id,
                    "kms:CancelKeyDeletion",
                    |k, _| {
                        if k.state != KeyState::PendingDeletion {
                            return Err(invalid_state(k, "is not pending deletion."));
                        }
                        // AWS puts a key whose deletion is cancelled in Disabled, not Enabled.
                        k.state = KeyState::Disabled;
                        k.deletion_date = None;
                        k.pending_window_days = None;
                        Ok(KeyIdResponse {
                            key_id: k.arn.clone(),
                        })
                    },
                )
            },
        )
    }

    pub fn update_key_description(
        &self,
        caller: &Caller,
        req: UpdateKeyDescriptionRequest,
    ) -> Result<()> {
        self.call(
            caller,
            "UpdateKeyDescription",
            CallKind::Mutation,
            &req,
            |audit| {
                check_description(&req.description)?;
                self.update_key(
                    caller,
                    audit,
                    &req.key_id,
                    "kms:UpdateKeyDescription",
                    |k, _| {
                        check_not_pending_deletion(k)?;
                        k.description = req.description.clone();
                        Ok(())
                    },
                )
            },
        )
    }

    // ------------------------------------------------------------------
    // aliases
    // ------------------------------------------------------------------

    /// Resolves an alias target (key id or key ARN only) inside a transaction.
    fn alias_target(&self, cache: &Cache, target: &str) -> Result<Arc<KeyRecord>> {
        if target.is_empty() {
            return Err(Error::validation(
                "null",
                "targetKeyId",
                "Member must not be null",
            ));
        }
        if matches!(parse_key_ref(target)?, KeyRef::Alias { .. }) {
            return Err(Error::new(
                ErrorKind::Validation,
                format!("Aliases must refer to keys. Not aliases: {target}"),
            ));
        }
        let key = self.resolve(cache, target, false)?;
        check_not_pending_deletion(&key)?;
        Ok(key)
    }

    pub fn create_alias(&self, caller: &Caller, req: AliasRequest) -> Result<()> {
        self.call(caller, "CreateAlias", CallKind::Mutation, &req, |audit| {
            validate_alias_name(&req.alias_name, false)?;
            let now = self.clock.now();
            self.mutate(|cache, tx| {
                let key = self.alias_target(cache, &req.target_key_id)?;
                audit.resources.push(key.arn.clone());
                authorize(caller, "kms:CreateAlias", &key)?;
                if cache.aliases.contains_key(&req.alias_name) {
                    return Err(Error::new(
                        ErrorKind::AlreadyExists,
                        format!(
                            "An alias with the name {} already exists",
                            alias_arn(&self.region, &self.account_id, &req.alias_name)
                        ),
                    ));
                }
                if cache.aliases_of(&key.key_id).count() >= ALIASES_PER_KEY {
                    return Err(Error::new(
                        ErrorKind::LimitExceeded,
                        format!("The key {} already has {ALIASES_PER_KEY} aliases.", key.arn),
                    ));
                }
                let rec = AliasRecord {
                    name: req.alias_name.clone(),
                    target_key_id: key.key_id.clone(),
                    creation_date: now,
                    last_updated_date: now,
                };
                tx.put(Kind::Alias, &rec.name, &rec)?;
                cache.aliases.insert(rec.name.clone(), rec);
                Ok(())
            })
        })
    }

    pub fn update_alias(&self, caller: &Caller, req: AliasRequest) -> Result<()> {
        self.call(caller, "UpdateAlias", CallKind::Mutation, &req, |audit| {
            validate_alias_name(&req.alias_name, false)?;
            let now = self.clock.now();
            self.mutate(|cache, tx| {
                let mut rec = cache
                    .aliases
                    .get(&req.alias_name)
                    .cloned()
                    .ok_or_else(|| self.not_found_alias(&req.alias_name))?;
                let key = self.alias_target(cache, &req.target_key_id)?;
                audit.resources.push(key.arn.clone());
                authorize(caller, "kms:UpdateAlias", &key)?;
                if let Some(old) = cache.keys.get(&rec.target_key_id) {
                    authorize(caller, "kms:UpdateAlias", old)?;
                }
                rec.target_key_id = key.key_id.clone();
                rec.last_updated_date = now;
                tx.put(Kind::Alias, &rec.name, &rec)?;
                cache.aliases.insert(rec.name.clone(), rec);
                Ok(())
            })
        })
    }

    pub fn delete_alias(&self, caller: &Caller, req: AliasRequest) -> Result<()> {
        self.call(caller, "DeleteAlias", CallKind::Mutation, &req, |audit| {
            validate_alias_name(&req.alias_name, false)?;
            self.mutate(|cache, tx| {
                let rec = cache
                    .aliases
                    .get(&req.alias_name)
                    .cloned()
                    .ok_or_else(|| self.not_found_alias(&req.alias_name))?;
                if let Some(key) = cache.keys.get(&rec.target_key_id) {
                    audit.resources.push(key.arn.clone());
                    authorize(caller, "kms:DeleteAlias", key)?;
                }
                tx.delete(Kind::Alias, &rec.name)?;
                cache.aliases.remove(&rec.name);
                Ok(())
            })
        })
    }

    pub fn list_aliases(
        &self,
        caller: &Caller,
        req: ListAliasesRequest,
    ) -> Result<ListAliasesResponse> {
        self.call(caller, "ListAliases", CallKind::Read, &req, |audit| {
            let inner = self.fresh()?;
            let filter = match &req.key_id {
                Some(id) => {
                    let k = self.resolve(&inner.cache, id, false)?;
                    audit.resources.push(k.arn.clone());
                    Some(k.key_id.clone())
                }
                None => None,
            };
            let entry = |name: &str, rec: Option<&AliasRecord>| AliasListEntry {
                alias_name: name.to_string(),
                alias_arn: alias_arn(&self.region, &self.account_id, name),
                target_key_id: rec.map(|r| r.target_key_id.clone()),
                creation_date: rec.map(|r| Time(r.creation_date)),
                last_updated_date: rec.map(|r| Time(r.last_updated_date)),
            };
            let mut all: Vec<AliasListEntry> = inner
                .cache
                .aliases
                .values()
                .filter(|a| filter.as_ref().is_none_or(|k| &a.target_key_id == k))
                .map(|a| entry(&a.name, Some(a)))
                .collect();
            if filter.is_none() {
                // AWS lists the predefined AWS aliases even before their keys exist.
                for name in PREDEFINED_AWS_ALIASES {
                    if !inner.cache.aliases.contains_key(*name) {
                        all.push(entry(name, None));
                    }
                }
            }
            drop(inner);
            all.sort_by(|a, b| a.alias_name.cmp(&b.alias_name));
            let (aliases, next_marker, truncated) =
                paginate(all, req.limit, 100, 50, req.marker.as_deref())?;
            Ok(ListAliasesResponse {
                aliases,
                next_marker,
                truncated,
            })
        })
    }

    // ------------------------------------------------------------------
    // tags
    // ------------------------------------------------------------------

    pub fn tag_resource(&self, caller: &Caller, req: TagResourceRequest) -> Result<()> {
        self.call(caller, "TagResource", CallKind::Mutation, &req, |audit| {
            self.update_key(caller, audit, &req.key_id, "kms:TagResource", |k, _| {
                check_not_pending_deletion(k)?;
                check_tags(&req.tags, &k.tags)?;
                for t in &req.tags {
                    match k.tags.iter_mut().find(|x| x.tag_key == t.tag_key) {
                        Some(x) => x.tag_value = t.tag_value.clone(),
                        None => k.tags.push(t.clone()),
                    }
                }
                Ok(())
            })
        })
    }

    pub fn untag_resource(&self, caller: &Caller, req: UntagResourceRequest) -> Result<()> {
        self.call(caller, "UntagResource", CallKind::Mutation, &req, |audit| {
            self.update_key(caller, audit, &req.key_id, "kms:UntagResource", |k, _| {
                check_not_pending_deletion(k)?;
                k.tags.retain(|t| !req.tag_keys.contains(&t.tag_key));
                Ok(())
            })
        })
    }

    pub fn list_resource_tags(
        &self,
        caller: &Caller,
        req: ListResourceTagsRequest,
    ) -> Result<ListResourceTagsResponse> {
        self.call(caller, "ListResourceTags", CallKind::Read, &req, |audit| {
            let key = self.resolve_fresh(&req.key_id, false)?;
            audit.resources.push(key.arn.clone());
            authorize(caller, "kms:ListResourceTags", &key)?;
            let (tags, next_marker, truncated) =
                paginate(key.tags.clone(), req.limit, 50, 50, req.marker.as_deref())?;
            Ok(ListResourceTagsResponse {
                tags,
                next_marker,
                truncated,
            })
        })
    }

    // ------------------------------------------------------------------
    // rotation
    // ------------------------------------------------------------------

    pub fn enable_key_rotation(
        &self,
        caller: &Caller,
        req: EnableKeyRotationRequest,
    ) -> Result<()> {
        self.call(
            caller,
            "EnableKeyRotation",
            CallKind::Mutation,
            &req,
            |audit| {
                let days = req.rotation_period_in_days.unwrap_or(365);
                check_range(days, "rotationPeriodInDays", 90, 2560)?;
                self.update_key(
                    caller,
                    audit,
                    &req.key_id,
                    "kms:EnableKeyRotation",
                    |k, now| {
                        check_rotatable(k)?;
                        let anchor = if k.rotation.enabled {
                            // Changing the period keeps the schedule's anchor: the last
                            // rotation (or when rotation was turned on).
                            k.rotation
                                .next
                                .map(|n| n - TimeDelta::days(i64::from(k.rotation.period_days)))
                        } else {
                            None
                        };
                        let next = anchor.unwrap_or(now) + TimeDelta::days(i64::from(days));
                        k.rotation = Rotation {
                            enabled: true,
                            period_days: days,
                            next: Some(next.max(now)),
                        };
                        Ok(())
                    },
                )
            },
        )
    }

    pub fn disable_key_rotation(&self, caller: &Caller, req: KeyIdRequest) -> Result<()> {
        self.call(
            caller,
            "DisableKeyRotation",
            CallKind::Mutation,
            &req,
            |audit| {
                self.update_key(
                    caller,
                    audit,
                    &req.key_id,
                    "kms:DisableKeyRotation",
                    |k, _| {
                        check_rotatable(k)?;
                        k.rotation.enabled = false;
                        k.rotation.next = None;
                        Ok(())
                    },
                )
            },
        )
    }

    pub fn get_key_rotation_status(
        &self,
        caller: &Caller,
        req: KeyIdRequest,
    ) -> Result<GetKeyRotationStatusResponse> {
        self.call(
            caller,
            "GetKeyRotationStatus",
            CallKind::Read,
            &req,
            |audit| {
                let key = self.resolve_fresh(&req.key_id, false)?;
                audit.resources.push(key.arn.clone());
                authorize(caller, "kms:GetKeyRotationStatus", &key)?;
                if key.origin == Origin::External {
                    return Err(external_unsupported(&key));
                }
                let r = &key.rotation;
                Ok(GetKeyRotationStatusResponse {
                    key_rotation_enabled: r.enabled,
                    key_id: key.arn.clone(),
                    rotation_period_in_days: r.enabled.then_some(r.period_days),
                    next_rotation_date: r.next.filter(|_| r.enabled).map(Time),
                    on_demand_rotation_start_date: None,
                })
            },
        )
    }

    pub fn rotate_key_on_demand(
        &self,
        caller: &Caller,
        req: KeyIdRequest,
    ) -> Result<KeyIdResponse> {
        self.call(caller, "RotateKeyOnDemand", CallKind::Mutation, &req, |audit| {
            self.update_key(caller, audit, &req.key_id, "kms:RotateKeyOnDemand", |k, now| {
                check_rotatable(k)?;
                if k.on_demand_rotations >= ON_DEMAND_ROTATION_LIMIT {
                    return Err(Error::new(
                        ErrorKind::LimitExceeded,
                        format!("The on-demand rotations limit has been reached for the given key. Limit: {ON_DEMAND_ROTATION_LIMIT}"),
                    ));
                }
                if k.rotation.enabled
                    && k.rotation.next.is_some_and(|n| n - now < TimeDelta::minutes(20))
                {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        format!("{} has an automatic rotation scheduled within 20 minutes.", k.arn),
                    ));
                }
                k.materials.push(new_material(now, Some(RotationType::OnDemand)));
                k.on_demand_rotations += 1;
                Ok(KeyIdResponse {
                    key_id: k.arn.clone(),
                })
            })
        })
    }

    pub fn list_key_rotations(
        &self,
        caller: &Caller,
        req: ListKeyRotationsRequest,
    ) -> Result<ListKeyRotationsResponse> {
        self.call(caller, "ListKeyRotations", CallKind::Read, &req, |audit| {
            let all = match req.include_key_material.as_deref() {
                None | Some("ROTATIONS_ONLY") => false,
                Some("ALL_KEY_MATERIAL") => true,
                Some(other) => {
                    return Err(enum_error(
                        other,
                        "includeKeyMaterial",
                        &["ALL_KEY_MATERIAL", "ROTATIONS_ONLY"],
                    ));
                }
            };
            let key = self.resolve_fresh(&req.key_id, false)?;
            audit.resources.push(key.arn.clone());
            authorize(caller, "kms:ListKeyRotations", &key)?;
            if key.origin == Origin::External {
                return Err(external_unsupported(&key));
            }
            let current = key.materials.len().saturating_sub(1);
            let entries: Vec<RotationsListEntry> = key
                .materials
                .iter()
                .enumerate()
                .filter(|(_, m)| all || m.rotation.is_some())
                .map(|(i, m)| RotationsListEntry {
                    key_id: key.arn.clone(),
                    key_material_id: m.id.clone(),
                    key_material_state: if i == current {
                        "CURRENT"
                    } else {
                        "NON_CURRENT"
                    }
                    .into(),
                    rotation_date: m.rotation.map(|_| Time(m.created)),
                    rotation_type: m.rotation.map(|r| {
                        match r {
                            RotationType::Automatic => "AUTOMATIC",
                            RotationType::OnDemand => "ON_DEMAND",
                        }
                        .to_string()
                    }),
                })
                .collect();
            let (rotations, next_marker, truncated) =
                paginate(entries, req.limit, 1000, 100, req.marker.as_deref())?;
            Ok(ListKeyRotationsResponse {
                rotations,
                next_marker,
                truncated,
            })
        })
    }

    // ------------------------------------------------------------------
    // cryptographic operations
    // ------------------------------------------------------------------

    /// Resolves, authorizes and state-checks a key for a cryptographic operation.
    fn usable_key(
        &self,
        caller: &Caller,
        audit: &mut Audit,
        key_id: &str,
        action: &str,
    ) -> Result<Arc<KeyRecord>> {
        let key = self.resolve_fresh(key_id, true)?;
        audit.resources.push(key.arn.clone());
        authorize(caller, action, &key)?;
        check_usable(&key)?;
        Ok(key)
    }

    fn seal_under(
        &self,
        key: &KeyRecord,
        ctx: &EncryptionContext,
        plaintext: &[u8],
    ) -> Result<(Vec<u8>, String)> {
        let (version, m) = key
            .current_material()
            .ok_or_else(|| invalid_state(key, "is pending import."))?;
        let blob = ciphertext::seal(
            &key.uuid(),
            version,
            m.secret.expose(),
            &canonical_bytes(ctx),
            plaintext,
        );
        Ok((blob, m.id.clone()))
    }

    /// Opens a ciphertext blob: finds its key and backing-key version, checks the
    /// optional `KeyId`, authorizes `action`, decrypts with the context.
    fn open_blob(
        &self,
        caller: &Caller,
        audit: &mut Audit,
        blob: &[u8],
        ctx: &EncryptionContext,
        key_id: Option<&str>,
        action: &str,
    ) -> Result<(Arc<KeyRecord>, zeroize::Zeroizing<Vec<u8>>, String)> {
        check_len(blob.len(), "ciphertextBlob", 1, ciphertext::MAX_LEN)?;
        let parsed = ciphertext::Blob::parse(blob).map_err(|_| invalid_ciphertext())?;
        let inner = self.fresh()?;
        let named = key_id
            .map(|id| self.resolve(&inner.cache, id, true))
            .transpose()?;
        let key = inner.cache.keys.get(&parsed.key_id.to_string()).cloned();
        drop(inner);
        let Some(key) = key else {
            return Err(Error::new(
                ErrorKind::AccessDenied,
                "The ciphertext refers to a customer master key that does not exist, does not exist in this region, or you are not allowed to access.",
            ));
        };
        audit.resources.push(key.arn.clone());
        if let Some(named) = named
            && named.key_id != key.key_id
        {
            return Err(Error::new(
                ErrorKind::IncorrectKey,
                "The key ID in the request does not identify a CMK that can perform this operation.",
            ));
        }
        authorize(caller, action, &key)?;
        check_usable(&key)?;
        let m = key
            .materials
            .get(parsed.material_version as usize)
            .ok_or_else(invalid_ciphertext)?;
        let plaintext = parsed
            .open(m.secret.expose(), &canonical_bytes(ctx))
            .map_err(|_| invalid_ciphertext())?;
        let material_id = m.id.clone();
        Ok((key, plaintext, material_id))
    }

    pub fn encrypt(&self, caller: &Caller, req: EncryptRequest) -> Result<EncryptResponse> {
        self.call(caller, "Encrypt", CallKind::Crypto, &req, |audit| {
            check_len(req.plaintext.as_slice().len(), "plaintext", 1, 4096)?;
            check_grant_tokens(&req.grant_tokens)?;
            check_algorithm(req.encryption_algorithm.as_deref())?;
            let key = self.usable_key(caller, audit, &req.key_id, "kms:Encrypt")?;
            dry_run(req.dry_run)?;
            let (blob, _) =
                self.seal_under(&key, &req.encryption_context, req.plaintext.as_slice())?;
            Ok(EncryptResponse {
                ciphertext_blob: Blob::new(blob),
                key_id: key.arn.clone(),
                encryption_algorithm: SYMMETRIC_DEFAULT.into(),
            })
        })
    }

    pub fn decrypt(&self, caller: &Caller, req: DecryptRequest) -> Result<DecryptResponse> {
        self.call(caller, "Decrypt", CallKind::Crypto, &req, |audit| {
            check_grant_tokens(&req.grant_tokens)?;
            check_algorithm(req.encryption_algorithm.as_deref())?;
            let (key, plaintext, material_id) = self.open_blob(
                caller,
                audit,
                req.ciphertext_blob.as_slice(),
                &req.encryption_context,
                req.key_id.as_deref(),
                "kms:Decrypt",
            )?;
            dry_run(req.dry_run)?;
            Ok(DecryptResponse {
                key_id: key.arn.clone(),
                plaintext: Blob(plaintext),
                encryption_algorithm: SYMMETRIC_DEFAULT.into(),
                key_material_id: material_id,
            })
        })
    }

    pub fn re_encrypt(&self, caller: &Caller, req: ReEncryptRequest) -> Result<ReEncryptResponse> {
        self.call(caller, "ReEncrypt", CallKind::Crypto, &req, |audit| {
            check_grant_tokens(&req.grant_tokens)?;
            check_algorithm(req.source_encryption_algorithm.as_deref())?;
            check_algorithm(req.destination_encryption_algorithm.as_deref())?;
            let (source, plaintext, source_material) = self.open_blob(
                caller,
                audit,
                req.ciphertext_blob.as_slice(),
                &req.source_encryption_context,
                req.source_key_id.as_deref(),
                "kms:ReEncryptFrom",
            )?;
            let dest =
                self.usable_key(caller, audit, &req.destination_key_id, "kms:ReEncryptTo")?;
            dry_run(req.dry_run)?;
            let (blob, dest_material) =
                self.seal_under(&dest, &req.destination_encryption_context, &plaintext)?;
            Ok(ReEncryptResponse {
                ciphertext_blob: Blob::new(blob),
                source_key_id: source.arn.clone(),
                key_id: dest.arn.clone(),
                source_encryption_algorithm: SYMMETRIC_DEFAULT.into(),
                destination_encryption_algorithm: SYMMETRIC_DEFAULT.into(),
                source_key_material_id: source_material,
                destination_key_material_id: dest_material,
            })
        })
    }

    /// The shared body of GenerateDataKey and GenerateDataKeyWithoutPlaintext.
    fn data_key(
        &self,
        caller: &Caller,
        audit: &mut Audit,
        req: &GenerateDataKeyRequest,
        action: &str,
    ) -> Result<DataKey> {
        let len = match (req.number_of_bytes, req.key_spec.as_deref()) {
            (Some(n), None) => {
                check_range(n, "numberOfBytes", 1, 1024)?;
                n as usize
            }
            (None, Some(spec)) => match spec {
                "AES_256" => 32,
                "AES_128" => 16,
                other => return Err(enum_error(other, "keySpec", &["AES_256", "AES_128"])),
            },
            _ => {
                return Err(Error::new(
                    ErrorKind::Validation,
                    "Please specify either number of bytes or key spec.",
                ));
            }
        };
        check_grant_tokens(&req.grant_tokens)?;
        let key = self.usable_key(caller, audit, &req.key_id, action)?;
        dry_run(req.dry_run)?;
        // The plaintext data key goes back to the caller in the response (a zeroizing
        // buffer); it is never kept.
        let mut data_key = zeroize::Zeroizing::new(vec![0u8; len]);
        crate::crypto::random_fill(&mut data_key);
        let (blob, material) = self.seal_under(&key, &req.encryption_context, &data_key)?;
        Ok(DataKey {
            plaintext: data_key,
            blob,
            key,
            material,
        })
    }

    pub fn generate_data_key(
        &self,
        caller: &Caller,
        req: GenerateDataKeyRequest,
    ) -> Result<GenerateDataKeyResponse> {
        self.call(caller, "GenerateDataKey", CallKind::Crypto, &req, |audit| {
            let DataKey {
                plaintext: dk,
                blob,
                key,
                material,
            } = self.data_key(caller, audit, &req, "kms:GenerateDataKey")?;
            Ok(GenerateDataKeyResponse {
                ciphertext_blob: Blob::new(blob),
                plaintext: Blob(dk),
                key_id: key.arn.clone(),
                key_material_id: material,
            })
        })
    }

    pub fn generate_data_key_without_plaintext(
        &self,
        caller: &Caller,
        req: GenerateDataKeyRequest,
    ) -> Result<GenerateDataKeyWithoutPlaintextResponse> {
        self.call(
            caller,
            "GenerateDataKeyWithoutPlaintext",
            CallKind::Crypto,
            &req,
            |audit| {
                let DataKey {
                    blob,
                    key,
                    material,
                    ..
                } = self.data_key(caller, audit, &req, "kms:GenerateDataKeyWithoutPlaintext")?;
                Ok(GenerateDataKeyWithoutPlaintextResponse {
                    ciphertext_blob: Blob::new(blob),
                    key_id: key.arn.clone(),
                    key_material_id: material,
                })
            },
        )
    }

    pub fn generate_random(
        &self,
        caller: &Caller,
        req: GenerateRandomRequest,
    ) -> Result<GenerateRandomResponse> {
        self.call(caller, "GenerateRandom", CallKind::Crypto, &req, |_| {
            if req.custom_key_store_id.is_some() {
                return Err(Error::new(
                    ErrorKind::UnsupportedOperation,
                    "Custom key stores are not implemented by ebsim.",
                ));
            }
            let n = req.number_of_bytes.ok_or_else(|| {
                Error::validation("null", "numberOfBytes", "Member must not be null")
            })?;
            check_range(n, "numberOfBytes", 1, 1024)?;
            Ok(GenerateRandomResponse {
                plaintext: Blob::new(crate::crypto::random_bytes(n as usize)),
            })
        })
    }
}

/// A generated data key: the plaintext (for the caller only), its blob, the key.
struct DataKey {
    plaintext: zeroize::Zeroizing<Vec<u8>>,
    blob: Vec<u8>,
    key: Arc<KeyRecord>,
    material: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallKind {
    /// Counts against the shared cryptographic quota; read-only in CloudTrail.
    Crypto,
    Read,
    Mutation,
}

impl Caller {
    /// An AWS service acting on its own (automatic rotation, key deletion).
    pub fn aws_service(account_id: &str, service: &str) -> Self {
        Caller {
            arn: service.to_string(),
            account_id: account_id.to_string(),
            identity_type: "AWSService".into(),
            via_service: None,
            user_agent: service.to_string(),
            source_ip: service.to_string(),
        }
    }
}

fn new_material(created: Timestamp, rotation: Option<RotationType>) -> KeyMaterial {
    let id: String = crate::crypto::random_bytes(32)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    KeyMaterial {
        id,
        created,
        rotation,
        secret: SecretBytes::random(32),
    }
}

/// `KeyMetadata` for a key.
pub fn metadata(k: &KeyRecord) -> KeyMetadata {
    KeyMetadata {
        aws_account_id: k.account_id.clone(),
        key_id: k.key_id.clone(),
        arn: k.arn.clone(),
        creation_date: Time(k.creation_date),
        enabled: k.state == KeyState::Enabled,
        description: k.description.clone(),
        key_usage: "ENCRYPT_DECRYPT".into(),
        key_state: k.state.as_str().into(),
        deletion_date: k.deletion_date.map(Time),
        origin: k.origin.as_str().into(),
        key_manager: match k.manager {
            KeyManager::Customer => "CUSTOMER",
            KeyManager::Aws => "AWS",
        }
        .into(),
        customer_master_key_spec: SYMMETRIC_DEFAULT.into(),
        key_spec: SYMMETRIC_DEFAULT.into(),
        encryption_algorithms: vec![SYMMETRIC_DEFAULT.into()],
        multi_region: false,
        pending_deletion_window_in_days: k.pending_window_days,
        current_key_material_id: k.current_material().map(|(_, m)| m.id.clone()),
    }
}

// ----------------------------------------------------------------------
// validation and state checks, with AWS's messages
// ----------------------------------------------------------------------

fn invalid_state(k: &KeyRecord, what: &str) -> Error {
    Error::new(ErrorKind::KmsInvalidState, format!("{} {what}", k.arn))
}

fn invalid_ciphertext() -> Error {
    // AWS returns this exception with an empty message.
    Error::new(ErrorKind::InvalidCiphertext, "")
}

fn external_unsupported(k: &KeyRecord) -> Error {
    Error::new(
        ErrorKind::UnsupportedOperation,
        format!(
            "{} origin is EXTERNAL which is not valid for this operation.",
            k.arn
        ),
    )
}

/// Key-state gate of the cryptographic operations.
fn check_usable(k: &KeyRecord) -> Result<()> {
    match k.state {
        KeyState::Enabled => Ok(()),
        KeyState::Disabled => Err(Error::new(
            ErrorKind::Disabled,
            format!("{} is disabled.", k.arn),
        )),
        KeyState::PendingDeletion => Err(invalid_state(k, "is pending deletion.")),
        KeyState::PendingImport => Err(invalid_state(k, "is pending import.")),
    }
}

fn check_not_pending_deletion(k: &KeyRecord) -> Result<()> {
    if k.state == KeyState::PendingDeletion {
        Err(invalid_state(k, "is pending deletion."))
    } else {
        Ok(())
    }
}

/// EnableKey / DisableKey: not while pending deletion or import.
fn check_manageable(k: &KeyRecord) -> Result<()> {
    check_not_pending_deletion(k)?;
    if k.state == KeyState::PendingImport {
        return Err(invalid_state(k, "is pending import."));
    }
    Ok(())
}

/// Rotation operations: an enabled or disabled AWS_KMS key (state table note [7]).
fn check_rotatable(k: &KeyRecord) -> Result<()> {
    if k.origin == Origin::External {
        return Err(external_unsupported(k));
    }
    match k.state {
        KeyState::Disabled => Err(Error::new(
            ErrorKind::Disabled,
            format!("{} is disabled.", k.arn),
        )),
        KeyState::PendingDeletion => Err(invalid_state(k, "is pending deletion.")),
        _ => Ok(()),
    }
}

fn dry_run(dry: bool) -> Result<()> {
    if dry {
        Err(Error::new(
            ErrorKind::DryRunOperation,
            "The request would have succeeded, but the DryRun option is set.",
        ))
    } else {
        Ok(())
    }
}

fn enum_error(value: &str, member: &str, set: &[&str]) -> Error {
    Error::validation(
        value,
        member,
        &format!("Member must satisfy enum value set: [{}]", set.join(", ")),
    )
}

fn check_enum(value: &str, member: &str, set: &[&str]) -> Result<()> {
    if set.contains(&value) {
        Ok(())
    } else {
        Err(enum_error(value, member, set))
    }
}

fn check_algorithm(alg: Option<&str>) -> Result<()> {
    match alg {
        None | Some(SYMMETRIC_DEFAULT) => Ok(()),
        Some(a) if ENCRYPTION_ALGORITHMS.contains(&a) => Err(Error::new(
            ErrorKind::InvalidKeyUsage,
            format!("The encryption algorithm {a} is not valid for a SYMMETRIC_DEFAULT key."),
        )),
        Some(a) => Err(enum_error(a, "encryptionAlgorithm", ENCRYPTION_ALGORITHMS)),
    }
}

fn check_range(v: u32, member: &str, min: u32, max: u32) -> Result<()> {
    if v < min {
        Err(Error::validation(
            v,
            member,
            &format!("Member must have value greater than or equal to {min}"),
        ))
    } else if v > max {
        Err(Error::validation(
            v,
            member,
            &format!("Member must have value less than or equal to {max}"),
        ))
    } else {
        Ok(())
    }
}

/// Length check for a sensitive member: AWS leaves the value out of the message.
fn check_len(len: usize, member: &str, min: usize, max: usize) -> Result<()> {
    let c = if len < min {
        format!("Member must have length greater than or equal to {min}")
    } else if len > max {
        format!("Member must have length less than or equal to {max}")
    } else {
        return Ok(());
    };
    Err(Error::new(
        ErrorKind::Validation,
        format!(
            "1 validation error detected: Value at '{member}' failed to satisfy constraint: {c}"
        ),
    ))
}

fn check_description(d: &str) -> Result<()> {
    if d.chars().count() > 8192 {
        return Err(Error::new(
            ErrorKind::Validation,
            "1 validation error detected: Value at 'description' failed to satisfy constraint: Member must have length less than or equal to 8192",
        ));
    }
    Ok(())
}

fn check_grant_tokens(tokens: &[String]) -> Result<()> {
    if tokens.len() > 10 {
        return Err(Error::new(
            ErrorKind::Validation,
            "1 validation error detected: Value at 'grantTokens' failed to satisfy constraint: Member must have length less than or equal to 10",
        ));
    }
    if tokens.iter().any(|t| t.is_empty() || t.len() > 8192) {
        return Err(Error::new(
            ErrorKind::InvalidGrantToken,
            "Invalid grant token.",
        ));
    }
    Ok(())
}

fn check_tags(new: &[Tag], existing: &[Tag]) -> Result<()> {
    for t in new {
        if t.tag_key.is_empty() || t.tag_key.chars().count() > 128 {
            return Err(Error::new(
                ErrorKind::Tag,
                format!("Tag key '{}' must be 1 to 128 characters.", t.tag_key),
            ));
        }
        if t.tag_value.chars().count() > 256 {
            return Err(Error::new(
                ErrorKind::Tag,
                format!(
                    "Tag value for '{}' must be at most 256 characters.",
                    t.tag_key
                ),
            ));
        }
        if t.tag_key.starts_with("aws:") {
            return Err(Error::new(
                ErrorKind::Tag,
                format!("Tags beginning with aws: are reserved: {}", t.tag_key),
            ));
        }
    }
    let mut keys: Vec<&str> = existing
        .iter()
        .chain(new)
        .map(|t| t.tag_key.as_str())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    if keys.len() > TAGS_PER_KEY {
        return Err(Error::new(
            ErrorKind::Tag,
            format!("A key can have at most {TAGS_PER_KEY} tags."),
        ));
    }
    Ok(())
}

/// Pages `items` with AWS's `Limit`/`Marker`/`NextMarker`/`Truncated`. The marker
/// is opaque to callers (base64 of the next offset).
fn paginate<T>(
    items: Vec<T>,
    limit: Option<u32>,
    max: u32,
    default: u32,
    marker: Option<&str>,
) -> Result<(Vec<T>, Option<String>, bool)> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let limit = limit.unwrap_or(default);
    check_range(limit, "limit", 1, max)?;
    let start = match marker {
        None => 0,
        Some(m) => b64
            .decode(m)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix("ebsim:")?.parse::<usize>().ok())
            .filter(|&n| n <= items.len())
            .ok_or_else(|| Error::new(ErrorKind::InvalidMarker, "Invalid marker"))?,
    };
    let end = (start + limit as usize).min(items.len());
    let truncated = end < items.len();
    let next = truncated.then(|| b64.encode(format!("ebsim:{end}")));
    let page = items.into_iter().skip(start).take(end - start).collect();
    Ok((page, next, truncated))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backing keys (and the root key outside root.key) never appear in any file.
    #[test]
    fn backing_keys_are_never_stored_in_the_clear() {
        let dir = tempfile::tempdir().unwrap();
        let root = DataRoot::open(dir.path()).unwrap();
        let kms = Kms::open_with(
            &root,
            "us-east-1",
            "111122223333",
            Clock::manual(chrono::Utc::now()),
            None,
        )
        .unwrap();
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
