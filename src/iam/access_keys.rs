//! Access keys: the long-term credentials a network client signs its requests
//! with (SigV4), for IAM users and for the account root.
//!
//! - An access key id is `AKIA` + 16 characters of `[A-Z0-9]`; its secret is 40
//!   characters of `[A-Za-z0-9+/]`, shown once, by CreateAccessKey.
//! - Keys live in `iam.db`'s `access_keys` table, one row per key: its owner
//!   (account, user name; `""` for the account root), its status, dates, and the
//!   secret *sealed* like the KMS store's rows: `nonce || AES-256-GCM(key, aad,
//!   secret)`, the key derived from the data root's root key (`root.key`,
//!   HKDF label `iam access key seal v1`), the aad binding the key id, so a
//!   sealed secret cannot be moved to another key's row. The plaintext secret
//!   exists only in memory, in zeroize-on-drop buffers.
//! - Two keys per user (and per root), as AWS allows; a user with keys cannot be
//!   deleted.
//! - The account root manages its own keys: CreateAccessKey without `UserName`
//!   by the root makes a root key (as AWS allows), by a user a key of that user.

use super::{EntityKind, Iam, Principal, no_such};
use crate::clock::Timestamp;
use crate::crypto::{SecretBytes, aead};
use crate::error::{Error, ErrorKind, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Keys per user (and per account root): AWS's quota.
pub const KEYS_PER_USER: usize = 2;

/// The HKDF label of the key that seals secrets.
const SEAL_LABEL: &[u8] = b"iam access key seal v1";

/// The table, created on first use in data roots from before access keys.
pub(super) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS access_keys (
    id TEXT PRIMARY KEY, account TEXT NOT NULL, user TEXT NOT NULL, json TEXT NOT NULL
) WITHOUT ROWID;";

/// `Active` or `Inactive`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyStatus {
    Active,
    Inactive,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "Active",
            KeyStatus::Inactive => "Inactive",
        }
    }

    /// IAM's `statusType` (`Active`, `Inactive`).
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "Active" => Ok(KeyStatus::Active),
            "Inactive" => Ok(KeyStatus::Inactive),
            other => Err(Error::new(
                ErrorKind::IamValidation,
                format!(
                    "1 validation error detected: Value '{other}' at 'status' failed to satisfy constraint: Member must satisfy enum value set: [Active, Inactive]"
                ),
            )),
        }
    }
}

/// When and where a key was last used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastUsed {
    pub date: Timestamp,
    /// The signing name of the service (`kms`, `ec2`, `sts`).
    pub service: String,
    pub region: String,
}

/// An access key, without its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessKey {
    pub access_key_id: String,
    pub account: String,
    /// `None` for a key of the account root.
    pub user_name: Option<String>,
    pub status: KeyStatus,
    pub created: Timestamp,
    pub last_used: Option<LastUsed>,
}

/// The stored row: the key and its sealed secret (base64).
#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    key: AccessKey,
    sealed_secret: String,
}

/// A key and its secret.
pub struct KeyWithSecret {
    pub key: AccessKey,
    /// The 40-character secret access key.
    pub secret: SecretBytes,
}

impl std::fmt::Debug for KeyWithSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyWithSecret({:?}, <secret>)", self.key)
    }
}

/// Whose keys an operation is about.
enum Owner {
    Root {
        account: String,
        arn: String,
    },
    User {
        account: String,
        name: String,
        arn: String,
    },
}

impl Owner {
    fn user_column(&self) -> &str {
        match self {
            Owner::Root { .. } => "",
            Owner::User { name, .. } => name,
        }
    }
    fn account(&self) -> &str {
        match self {
            Owner::Root { account, .. } | Owner::User { account, .. } => account,
        }
    }
    fn arn(&self) -> &str {
        match self {
            Owner::Root { arn, .. } | Owner::User { arn, .. } => arn,
        }
    }
}

fn random_chars(alphabet: &[u8], n: usize) -> Zeroizing<String> {
    // Rejection sampling keeps every character equally likely.
    let limit = 256 - 256 % alphabet.len();
    let mut out = Zeroizing::new(String::with_capacity(n));
    let mut buf = Zeroizing::new([0u8; 64]);
    while out.len() < n {
        crate::crypto::random_fill(&mut buf[..]);
        for &b in buf.iter() {
            if usize::from(b) < limit && out.len() < n {
                out.push(char::from(alphabet[usize::from(b) % alphabet.len()]));
            }
        }
    }
    out
}

/// A new access key id with `prefix` (`AKIA` long-term, `ASIA` temporary).
pub fn new_key_id(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &*random_chars(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 16)
    )
}

/// A new 40-character secret access key.
pub fn new_secret() -> SecretBytes {
    let s = random_chars(
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        40,
    );
    SecretBytes::from_slice(s.as_bytes())
}

fn no_such_key(id: &str) -> Error {
    Error::new(
        ErrorKind::NoSuchEntity,
        format!("The Access Key with id {id} cannot be found."),
    )
}

impl Iam {
    fn seal_key(&self) -> Result<&SecretBytes> {
        if let Some(k) = self.seal.get() {
            return Ok(k);
        }
        let rk = crate::kms::store::RootKey::load_or_create(&self.root)?;
        Ok(self.seal.get_or_init(|| rk.derive(SEAL_LABEL)))
    }

    /// Seals `secret` for key `id`: `nonce || AES-256-GCM(…)`, the way the KMS
    /// store seals its rows.
    pub(super) fn seal_secret(&self, id: &str, secret: &[u8]) -> Result<Vec<u8>> {
        let key: &[u8; 32] = self.seal_key()?.expose().try_into().expect("32-byte key");
        let mut nonce = [0u8; aead::NONCE_LEN];
        crate::crypto::random_fill(&mut nonce);
        let mut out = nonce.to_vec();
        out.extend_from_slice(&aead::seal(key, &nonce, &secret_aad(id), secret));
        Ok(out)
    }

    pub(super) fn open_secret(&self, id: &str, sealed: &[u8]) -> Result<SecretBytes> {
        let key: &[u8; 32] = self.seal_key()?.expose().try_into().expect("32-byte key");
        let damaged = || {
            Error::environment(format!(
                "the sealed secret of {id} in {} does not open under the root key (was iam.db altered or the root key replaced?)",
                self.path.display()
            ))
        };
        if sealed.len() < aead::NONCE_LEN + aead::TAG_LEN {
            return Err(damaged());
        }
        let (nonce, body) = sealed.split_at(aead::NONCE_LEN);
        let plain = aead::open(
            key,
            nonce.try_into().expect("12 bytes"),
            &secret_aad(id),
            body,
        )
        .map_err(|_| damaged())?;
        Ok(SecretBytes::from_slice(&plain))
    }

    /// The owner of the keys `user_name` names, as `caller` sees it.
    fn key_owner(&self, caller: &Principal, user_name: Option<&str>) -> Result<Owner> {
        let account = caller.account().to_string();
        match (user_name.filter(|n| !n.is_empty()), caller) {
            (Some(name), _) => {
                let e = self.must_get(&account, EntityKind::User, name)?;
                Ok(Owner::User {
                    account,
                    name: e.name,
                    arn: e.arn,
                })
            }
            (None, Principal::Root { arn, .. }) => Ok(Owner::Root {
                arn: arn.clone(),
                account,
            }),
            (None, Principal::User { name, .. }) => {
                let e = self.must_get(&account, EntityKind::User, name)?;
                Ok(Owner::User {
                    account,
                    name: e.name,
                    arn: e.arn,
                })
            }
            (None, _) => Err(Error::new(
                ErrorKind::IamValidation,
                "Must specify a userName when calling with non-User credentials",
            )),
        }
    }

    /// Authorizes `action` on the owner's keys: a user's by identity policy (or
    /// the root); the root's keys only by the root itself.
    fn authorize_keys(&self, caller: &Principal, action: &str, owner: &Owner) -> Result<()> {
        match owner {
            Owner::Root { .. } if !matches!(caller, Principal::Root { .. }) => Err(Error::new(
                ErrorKind::IamAccessDenied,
                format!(
                    "User: {} is not authorized to perform: {action} on resource: {} (only the account root manages its own access keys)",
                    caller.arn(),
                    owner.arn()
                ),
            )),
            _ => self.authorize(caller, action, owner.arn()),
        }
    }

    fn stored(&self, id: &str) -> Result<Option<Stored>> {
        let json: Option<String> = self
            .conn
            .query_row(
                "SELECT json FROM access_keys WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| crate::home::stores::sqlite_error(&self.path, e))?;
        json.map(|j| {
            serde_json::from_str(&j).map_err(|e| {
                Error::environment(format!("iam.db holds a damaged access key {id}: {e}"))
            })
        })
        .transpose()
    }

    fn put_key(&self, s: &Stored) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO access_keys (id, account, user, json) VALUES (?1, ?2, ?3, ?4)",
                params![
                    s.key.access_key_id,
                    s.key.account,
                    s.key.user_name.as_deref().unwrap_or(""),
                    serde_json::to_string(s).expect("access keys serialize")
                ],
            )
            .map_err(|e| crate::home::stores::sqlite_error(&self.path, e))?;
        Ok(())
    }

    fn keys_of(&self, account: &str, user: &str) -> Result<Vec<AccessKey>> {
        let run = || -> Result<Vec<AccessKey>> {
            let mut stmt = self.conn.prepare(
                "SELECT json FROM access_keys WHERE account = ?1 AND user = ?2 ORDER BY id",
            )?;
            let rows = stmt.query_map(params![account, user], |r| r.get::<_, String>(0))?;
            rows.map(|j| {
                serde_json::from_str::<Stored>(&j?)
                    .map(|s| s.key)
                    .map_err(|e| {
                        Error::environment(format!("iam.db holds a damaged access key: {e}"))
                    })
            })
            .collect()
        };
        run().map_err(|e| e.in_store(&self.path))
    }

    /// Whether user `name` of `account` has access keys (DeleteUser refuses then).
    pub(super) fn user_has_keys(&self, account: &str, name: &str) -> Result<bool> {
        Ok(!self.keys_of(account, name)?.is_empty())
    }

    /// A key of `caller`'s account, owned by the user named (or the owner
    /// `key_owner` finds); NoSuchEntity when it is not that owner's.
    fn owned_key(&self, owner: &Owner, id: &str) -> Result<Stored> {
        match self.stored(id)? {
            Some(s)
                if s.key.account == owner.account()
                    && s.key.user_name.as_deref().unwrap_or("") == owner.user_column() =>
            {
                Ok(s)
            }
            _ => Err(no_such_key(id)),
        }
    }

    // ------------------------------------------------------------ operations

    /// CreateAccessKey: a new active key and its secret (shown only now).
    pub fn create_access_key(
        &self,
        caller: &Principal,
        user_name: Option<&str>,
        now: Timestamp,
    ) -> Result<KeyWithSecret> {
        let owner = self.key_owner(caller, user_name)?;
        self.authorize_keys(caller, "iam:CreateAccessKey", &owner)?;
        if self.keys_of(owner.account(), owner.user_column())?.len() >= KEYS_PER_USER {
            return Err(Error::new(
                ErrorKind::IamLimitExceeded,
                format!("Cannot exceed quota for AccessKeysPerUser: {KEYS_PER_USER}"),
            ));
        }
        let secret = new_secret();
        let key = AccessKey {
            access_key_id: new_key_id("AKIA"),
            account: owner.account().to_string(),
            user_name: match &owner {
                Owner::Root { .. } => None,
                Owner::User { name, .. } => Some(name.clone()),
            },
            status: KeyStatus::Active,
            created: now,
            last_used: None,
        };
        let sealed = self.seal_secret(&key.access_key_id, secret.expose())?;
        self.put_key(&Stored {
            key: key.clone(),
            sealed_secret: STANDARD.encode(sealed),
        })?;
        Ok(KeyWithSecret { key, secret })
    }

    /// ListAccessKeys: the owner's keys, without secrets.
    pub fn list_access_keys(
        &self,
        caller: &Principal,
        user_name: Option<&str>,
    ) -> Result<Vec<AccessKey>> {
        let owner = self.key_owner(caller, user_name)?;
        self.authorize_keys(caller, "iam:ListAccessKeys", &owner)?;
        self.keys_of(owner.account(), owner.user_column())
    }

    /// UpdateAccessKey: makes a key Active or Inactive (an inactive key signs
    /// nothing).
    pub fn update_access_key(
        &self,
        caller: &Principal,
        user_name: Option<&str>,
        id: &str,
        status: KeyStatus,
    ) -> Result<()> {
        let owner = self.key_owner(caller, user_name)?;
        self.authorize_keys(caller, "iam:UpdateAccessKey", &owner)?;
        let mut s = self.owned_key(&owner, id)?;
        s.key.status = status;
        self.put_key(&s)
    }

    /// DeleteAccessKey.
    pub fn delete_access_key(
        &self,
        caller: &Principal,
        user_name: Option<&str>,
        id: &str,
    ) -> Result<()> {
        let owner = self.key_owner(caller, user_name)?;
        self.authorize_keys(caller, "iam:DeleteAccessKey", &owner)?;
        self.owned_key(&owner, id)?;
        self.conn
            .execute("DELETE FROM access_keys WHERE id = ?1", params![id])
            .map_err(|e| crate::home::stores::sqlite_error(&self.path, e))?;
        Ok(())
    }

    /// GetAccessKeyLastUsed: any key of the caller's account, by id.
    pub fn access_key_last_used(&self, caller: &Principal, id: &str) -> Result<AccessKey> {
        let s = self
            .stored(id)?
            .filter(|s| s.key.account == caller.account())
            .ok_or_else(|| no_such_key(id))?;
        let owner = match &s.key.user_name {
            None => Owner::Root {
                account: s.key.account.clone(),
                arn: format!("arn:aws:iam::{}:root", s.key.account),
            },
            Some(name) => {
                let e = self
                    .get(&s.key.account, EntityKind::User, name)?
                    .ok_or_else(|| no_such(EntityKind::User, name))?;
                Owner::User {
                    account: s.key.account.clone(),
                    name: e.name,
                    arn: e.arn,
                }
            }
        };
        self.authorize_keys(caller, "iam:GetAccessKeyLastUsed", &owner)?;
        Ok(s.key)
    }

    /// The key `id` and its secret, for verifying a signature; `None` when no
    /// such key exists. No authorization: this is how a caller is found.
    pub fn access_key_secret(&self, id: &str) -> Result<Option<KeyWithSecret>> {
        let Some(s) = self.stored(id)? else {
            return Ok(None);
        };
        let sealed = STANDARD.decode(&s.sealed_secret).map_err(|e| {
            Error::environment(format!(
                "iam.db holds a damaged sealed secret for {id}: {e}"
            ))
        })?;
        let secret = self.open_secret(id, &sealed)?;
        Ok(Some(KeyWithSecret { key: s.key, secret }))
    }

    /// Records that key `id` was used now for `service` in `region` (kept to the
    /// minute: a request a second does not rewrite the row each time).
    pub fn record_access_key_use(
        &self,
        id: &str,
        service: &str,
        region: &str,
        now: Timestamp,
    ) -> Result<()> {
        let Some(mut s) = self.stored(id)? else {
            return Ok(());
        };
        let fresh = s.key.last_used.as_ref().is_some_and(|u| {
            u.service == service && u.region == region && (now - u.date).num_seconds().abs() < 60
        });
        if fresh {
            return Ok(());
        }
        s.key.last_used = Some(LastUsed {
            date: now,
            service: service.to_string(),
            region: region.to_string(),
        });
        self.put_key(&s)
    }
}

fn secret_aad(id: &str) -> Vec<u8> {
    let mut aad = b"iam access key v1/".to_vec();
    aad.extend_from_slice(id.as_bytes());
    aad
}
