//! STS's operation table (GetCallerIdentity, AssumeRole) and how a network front
//! end finds who signed a request: [`Services::credentials`] turns an access key
//! id (long-term `AKIA…` or a session's `ASIA…`) into its caller and secret.

use super::{RequestContext, Services, serialization_error, unknown_operation};
use crate::crypto::SecretBytes;
use crate::error::{Error, ErrorKind, Result};
use crate::iam::{EntityKind, Principal};
use crate::kms::access::Caller;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// Who an access key signs for, and the secret its signatures are made with.
/// Credentials read so far, valid while `iam.db`'s `data_version` is `version`
/// (asked at most once per [`crate::kms::RECHECK`], as the KMS asks its store).
#[derive(Default)]
pub(super) struct CredentialCache {
    version: Option<i64>,
    /// When `version` was last compared with `iam.db`'s.
    checked: Option<std::time::Instant>,
    entries: std::collections::HashMap<String, Arc<Credentials>>,
}

impl CredentialCache {
    pub(super) fn clear(&mut self) {
        self.version = None;
        self.checked = None;
        self.entries.clear();
    }

    /// The cached credentials of `access_key_id` if `iam.db` was asked about
    /// other processes' commits less than [`crate::kms::RECHECK`] ago.
    fn recent(&self, access_key_id: &str, now: std::time::Instant) -> Option<Arc<Credentials>> {
        let recent = self.version.is_some()
            && self
                .checked
                .is_some_and(|t| now.duration_since(t) < crate::kms::RECHECK);
        if recent {
            self.entries.get(access_key_id).cloned()
        } else {
            None
        }
    }
}

pub struct Credentials {
    pub caller: Caller,
    /// The secret access key (zeroized on drop).
    pub secret: SecretBytes,
    /// A session's credentials need their session token; `Some` for them.
    pub session: Option<crate::iam::sessions::SessionCheck>,
    /// The last SigV4 signing key derived from `secret`, with its credential
    /// scope: a front end that checks signatures keeps it here (it depends only on
    /// the secret, the day, the region and the service), zeroized with the rest.
    pub signing_key: std::sync::Mutex<Option<(String, SecretBytes)>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <secret>)", self.caller.arn())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct GetCallerIdentityRequest {}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AssumeRoleRequest {
    pub role_arn: String,
    pub role_session_name: String,
    /// 900 to 43200 seconds; 3600 when absent.
    pub duration_seconds: Option<i64>,
}

/// One STS request, in STS's member names.
#[derive(Debug, Clone)]
pub enum StsRequest {
    GetCallerIdentity(GetCallerIdentityRequest),
    AssumeRole(AssumeRoleRequest),
}

/// Every STS operation ebsim serves.
pub const OPERATIONS: &[&str] = &["GetCallerIdentity", "AssumeRole"];

impl StsRequest {
    pub fn name(&self) -> &'static str {
        match self {
            StsRequest::GetCallerIdentity(_) => "GetCallerIdentity",
            StsRequest::AssumeRole(_) => "AssumeRole",
        }
    }

    /// Reads a request from its operation name and its members (as JSON).
    pub fn from_json(name: &str, body: Value) -> Result<Self> {
        match name {
            "GetCallerIdentity" => serde_json::from_value(body)
                .map(StsRequest::GetCallerIdentity)
                .map_err(|e| serialization_error(name, e)),
            "AssumeRole" => serde_json::from_value(body)
                .map(StsRequest::AssumeRole)
                .map_err(|e| serialization_error(name, e)),
            _ => Err(unknown_operation("STS", name)),
        }
    }
}

/// STS's `UserId`: the user's or role's unique id (`AROA…:session` for a
/// session), the account id for the root.
fn user_id(caller: &Caller) -> String {
    caller
        .principal_id
        .clone()
        .unwrap_or_else(|| caller.account_id().to_string())
}

impl Services {
    /// The credentials of access key `access_key_id`: `None` when there is no
    /// such key or it is inactive (AWS: the security token is invalid).
    ///
    /// Kept in memory once read (the key's row read, its secret unsealed into
    /// locked memory: most of a request's cost otherwise) until IAM changes:
    /// another process's commit to `iam.db` moves its `data_version`, and this
    /// process's own IAM calls and resets empty the cache.
    pub fn credentials(&self, access_key_id: &str) -> Result<Option<Arc<Credentials>>> {
        let started = std::time::Instant::now();
        let cached = self
            .credential_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .recent(access_key_id, started);
        if let Some(c) = cached {
            return Ok(Some(c));
        }
        let iam = self.iam_engine()?;
        let iam = iam.lock().unwrap_or_else(|p| p.into_inner());
        let version = iam.data_version()?;
        let mut cache = self
            .credential_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if cache.version != Some(version) {
            cache.entries.clear();
            cache.version = Some(version);
        }
        cache.checked = Some(started);
        if let Some(c) = cache.entries.get(access_key_id) {
            return Ok(Some(c.clone()));
        }
        let found = Self::read_credentials(&iam, access_key_id)?.map(Arc::new);
        if let Some(c) = &found {
            // Bounded: a client cycling through made-up key ids finds none, and
            // only keys that exist are kept.
            if cache.entries.len() >= 4096 {
                cache.entries.clear();
            }
            cache.entries.insert(access_key_id.to_string(), c.clone());
        }
        Ok(found)
    }

    fn read_credentials(iam: &crate::iam::Iam, access_key_id: &str) -> Result<Option<Credentials>> {
        if let Some(s) = iam.session(access_key_id)? {
            let role = iam.get(&s.account, EntityKind::Role, &s.role)?;
            let Some(role) = role else {
                return Ok(None);
            };
            let principal = Principal::AssumedRole {
                arn: format!(
                    "arn:aws:sts::{}:assumed-role/{}/{}",
                    s.account, s.role, s.session_name
                ),
                role_arn: role.arn.clone(),
                role: s.role.clone(),
                session: s.session_name.clone(),
                account: s.account.clone(),
            };
            return Ok(Some(Credentials {
                caller: Caller {
                    principal_id: Some(format!("{}:{}", role.id, s.session_name)),
                    ..Caller::new(principal)
                },
                secret: s.secret,
                session: Some(s.check),
                signing_key: std::sync::Mutex::new(None),
            }));
        }
        let Some(k) = iam.access_key_secret(access_key_id)? else {
            return Ok(None);
        };
        if k.key.status != crate::iam::access_keys::KeyStatus::Active {
            return Ok(None);
        }
        let caller = match &k.key.user_name {
            None => Caller::account_root(&k.key.account),
            Some(name) => {
                let Some(e) = iam.get(&k.key.account, EntityKind::User, name)? else {
                    return Ok(None);
                };
                Caller {
                    principal_id: Some(e.id.clone()),
                    ..Caller::new(Principal::User {
                        account: k.key.account.clone(),
                        name: e.name.clone(),
                        arn: e.arn.clone(),
                    })
                }
            }
        };
        Ok(Some(Credentials {
            caller,
            secret: k.secret,
            session: None,
            signing_key: std::sync::Mutex::new(None),
        }))
    }

    /// Records that a long-term key signed a request for `service` in `region`
    /// (GetAccessKeyLastUsed).
    pub fn record_key_use(&self, access_key_id: &str, service: &str, region: &str) -> Result<()> {
        // The engine writes a use at most once a minute per key, service and
        // region; this skips even its read for the uses in between.
        let now = self.clock.now();
        {
            let mut seen = self.key_uses.lock().unwrap_or_else(|p| p.into_inner());
            let fresh = seen.get(access_key_id).is_some_and(|(s, r, at)| {
                s == service && r == region && (now - *at).num_seconds().abs() < 60
            });
            if fresh {
                return Ok(());
            }
            if seen.len() >= 4096 {
                seen.clear();
            }
            seen.insert(
                access_key_id.to_string(),
                (service.to_string(), region.to_string(), now),
            );
        }
        let iam = self.iam_engine()?;
        let iam = iam.lock().unwrap_or_else(|p| p.into_inner());
        iam.record_access_key_use(access_key_id, service, region, self.clock.now())
    }

    /// Runs one STS operation.
    pub fn sts(&self, ctx: &RequestContext, req: StsRequest) -> Result<Value> {
        match req {
            StsRequest::GetCallerIdentity(_) => Ok(json!({
                "UserId": user_id(&ctx.caller),
                "Account": ctx.caller.account_id(),
                "Arn": ctx.caller.arn(),
            })),
            StsRequest::AssumeRole(r) => {
                let iam = self.iam_engine()?;
                let iam = iam.lock().unwrap_or_else(|p| p.into_inner());
                let duration = r.duration_seconds.unwrap_or(3600);
                if !(900..=43_200).contains(&duration) {
                    return Err(Error::new(
                        ErrorKind::IamValidation,
                        format!(
                            "1 validation error detected: Value '{duration}' at 'durationSeconds' failed to satisfy constraint: Member must have value between 900 and 43200"
                        ),
                    ));
                }
                let s = iam.assume_role(
                    &ctx.caller.principal,
                    &r.role_arn,
                    &r.role_session_name,
                    chrono::TimeDelta::seconds(duration),
                    self.clock.now(),
                )?;
                Ok(json!({
                    "Credentials": {
                        "AccessKeyId": s.access_key_id,
                        "SecretAccessKey": std::str::from_utf8(s.secret.expose()).expect("secrets are ASCII"),
                        "SessionToken": s.token.as_str(),
                        "Expiration": crate::clock::iso8601(&s.expiration),
                    },
                    "AssumedRoleUser": {
                        "AssumedRoleId": s.assumed_role_id,
                        "Arn": s.arn,
                    },
                }))
            }
        }
    }
}
