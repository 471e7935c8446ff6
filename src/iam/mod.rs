//! Just the IAM a KMS needs: users and roles with inline identity policies, and
//! principals parsed from ARNs. IAM is global (not regional): one database per
//! data root, `<root>/iam.db`, holding the principals of every account.
//!
//! IAM's own operations are authorized like AWS: the account root may do anything
//! in its account; other principals need an identity policy allowing `iam:<Action>`
//! on the user or role ARN.

pub mod access_keys;
pub mod principal;
pub mod sessions;

use crate::clock::Timestamp;
use crate::error::{Error, ErrorKind, Result};
use crate::home::DataRoot;
use crate::policy::{self, ConditionContext, PolicyDocument, PolicyKind, Request};
pub use principal::Principal;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A user or a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityKind {
    User,
    Role,
}

impl EntityKind {
    fn as_str(self) -> &'static str {
        match self {
            EntityKind::User => "user",
            EntityKind::Role => "role",
        }
    }
    fn title(self) -> &'static str {
        match self {
            EntityKind::User => "User",
            EntityKind::Role => "Role",
        }
    }
}

/// A stored user or role.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entity {
    pub name: String,
    pub path: String,
    /// `AIDA…` for users, `AROA…` for roles.
    pub id: String,
    pub arn: String,
    pub created: Timestamp,
    /// Roles only.
    pub assume_role_policy: Option<String>,
    pub description: Option<String>,
    /// Inline policies by name.
    pub policies: BTreeMap<String, String>,
}

/// What CreateUser / CreateRole take.
#[derive(Debug, Clone, Copy)]
pub struct NewEntity<'a> {
    pub kind: EntityKind,
    pub name: &'a str,
    pub path: Option<&'a str>,
    /// Roles only (required for them).
    pub assume_role_policy: Option<&'a str>,
    pub description: Option<&'a str>,
}

impl<'a> NewEntity<'a> {
    pub fn user(name: &'a str) -> Self {
        NewEntity {
            kind: EntityKind::User,
            name,
            path: None,
            assume_role_policy: None,
            description: None,
        }
    }
    pub fn role(name: &'a str, assume_role_policy: &'a str) -> Self {
        NewEntity {
            kind: EntityKind::Role,
            name,
            path: None,
            assume_role_policy: Some(assume_role_policy),
            description: None,
        }
    }
}

/// The IAM database of a data root.
pub struct Iam {
    conn: Connection,
    path: std::path::PathBuf,
    root: DataRoot,
    /// The key access keys' secrets are sealed under, derived from the root key
    /// when first needed (access_keys.rs).
    seal: std::sync::OnceLock<crate::crypto::SecretBytes>,
}

fn no_such(kind: EntityKind, name: &str) -> Error {
    Error::new(
        ErrorKind::NoSuchEntity,
        format!("The {} with name {name} cannot be found.", kind.as_str()),
    )
}

/// Names: 1–64 (users, roles) / 1–128 (policies) of `[\w+=,.@-]`.
fn check_name(name: &str, member: &str, max: usize) -> Result<()> {
    let ok = !name.is_empty()
        && name.chars().count() <= max
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::IamValidation,
            format!(
                "1 validation error detected: Value '{name}' at '{member}' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]+ and have length between 1 and {max}"
            ),
        ))
    }
}

fn check_path(path: &str) -> Result<()> {
    if path.starts_with('/') && path.ends_with('/') && path.len() <= 512 && !path.contains("//") {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::IamValidation,
            format!(
                "The specified value for path is invalid. It must begin and end with / and contain only alphanumeric characters and/or / characters: {path}"
            ),
        ))
    }
}

/// An identity policy, checked as IAM does (IAM's own error code).
fn check_identity_policy(doc: &str) -> Result<PolicyDocument> {
    if doc.len() > 10_240 {
        return Err(Error::new(
            ErrorKind::IamValidation,
            "Maximum policy size of 10240 bytes exceeded for an inline policy.",
        ));
    }
    policy::parse(doc, PolicyKind::Identity).map_err(|e| {
        Error::new(
            ErrorKind::IamMalformedPolicyDocument,
            e.message().to_string(),
        )
    })
}

fn random_id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bytes = [0u8; 17];
    crate::crypto::fast_random_fill(&mut bytes);
    let tail: String = bytes
        .iter()
        .map(|b| ALPHABET[(*b as usize) % 32] as char)
        .collect();
    format!("{prefix}{tail}")
}

impl Iam {
    /// Opens the data root's `iam.db`; it is created only when the data root never
    /// had one (a missing, empty or foreign file is a damaged data root, 253).
    pub fn open(root: &DataRoot) -> Result<Self> {
        let path = root.path().join("iam.db");
        // Evidence that iam.db existed, for a root whose registry is gone too:
        // profiles that act as IAM users or roles, which only iam.db defines.
        let config = root.config();
        let evidence = move |_: &std::path::Path| {
            let c = config.as_ref().ok()?;
            c.profiles
                .iter()
                .find(|(_, p)| {
                    p.principal.as_deref().is_some_and(|a| {
                        a.contains(":user/") || a.contains(":role/") || a.contains(":assumed-role/")
                    })
                })
                .map(|(name, _)| {
                    format!("config.json's profile {name} acts as an IAM user or role")
                })
        };
        let (conn, _) = root.open_store(&crate::home::stores::StoreSpec {
            relative: "iam.db".into(),
            schema: "PRAGMA journal_mode = WAL;
                     CREATE TABLE entities (
                         account TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, json TEXT NOT NULL,
                         PRIMARY KEY (account, kind, name)) WITHOUT ROWID;",
            tables: &["entities"],
            evidence: &evidence,
        })?;
        let setup = || -> Result<()> {
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.execute_batch(access_keys::SCHEMA)?;
            conn.execute_batch(sessions::SCHEMA)?;
            Ok(())
        };
        setup().map_err(|e| e.in_store(&path))?;
        Ok(Iam {
            conn,
            path,
            root: root.clone(),
            seal: std::sync::OnceLock::new(),
        })
    }

    /// A user or role, if it exists.
    pub fn get(&self, account: &str, kind: EntityKind, name: &str) -> Result<Option<Entity>> {
        let json: Option<String> = self
            .conn
            .query_row(
                "SELECT json FROM entities WHERE account = ?1 AND kind = ?2 AND name = ?3",
                params![account, kind.as_str(), name],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| crate::home::stores::sqlite_error(&self.path, e))?;
        json.map(|j| {
            serde_json::from_str(&j).map_err(|e| {
                Error::environment(format!("iam.db holds a damaged {}: {e}", kind.as_str()))
            })
        })
        .transpose()
    }

    fn must_get(&self, account: &str, kind: EntityKind, name: &str) -> Result<Entity> {
        self.get(account, kind, name)?
            .ok_or_else(|| no_such(kind, name))
    }

    fn put(&self, account: &str, kind: EntityKind, e: &Entity) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO entities (account, kind, name, json) VALUES (?1, ?2, ?3, ?4)",
            params![
                account,
                kind.as_str(),
                e.name,
                serde_json::to_string(e).expect("entities serialize")
            ],
        )
        .map_err(|e| crate::home::stores::sqlite_error(&self.path, e))?;
        Ok(())
    }

    pub fn list(&self, account: &str, kind: EntityKind) -> Result<Vec<Entity>> {
        let run = || -> Result<Vec<Entity>> {
            let mut stmt = self.conn.prepare(
                "SELECT json FROM entities WHERE account = ?1 AND kind = ?2 ORDER BY name",
            )?;
            let rows =
                stmt.query_map(params![account, kind.as_str()], |r| r.get::<_, String>(0))?;
            rows.map(|j| {
                serde_json::from_str(&j?)
                    .map_err(|e| Error::environment(format!("iam.db holds a damaged entry: {e}")))
            })
            .collect()
        };
        run().map_err(|e| e.in_store(&self.path))
    }

    /// The inline identity policies that apply to `p` (none for the account root and
    /// for services).
    pub fn identity_policies(&self, p: &Principal) -> Result<Vec<PolicyDocument>> {
        let entity = match p {
            Principal::User { account, name, .. } => self.get(account, EntityKind::User, name)?,
            Principal::AssumedRole { account, role, .. } => {
                self.get(account, EntityKind::Role, role)?
            }
            Principal::Root { .. } | Principal::Service { .. } => None,
        };
        Ok(entity
            .map(|e| {
                e.policies
                    .values()
                    .filter_map(|d| policy::parse(d, PolicyKind::Identity).ok())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Whether `p` is a principal that exists (users and roles must be created first).
    pub fn exists(&self, p: &Principal) -> Result<bool> {
        Ok(match p {
            Principal::Root { .. } | Principal::Service { .. } => true,
            Principal::User { account, name, .. } => {
                self.get(account, EntityKind::User, name)?.is_some()
            }
            Principal::AssumedRole { account, role, .. } => {
                self.get(account, EntityKind::Role, role)?.is_some()
            }
        })
    }

    /// IAM's own authorization: root does anything in its account; others need an
    /// identity policy allowing the action on the resource.
    fn authorize(&self, caller: &Principal, action: &str, resource: &str) -> Result<()> {
        if let Principal::Root { .. } = caller {
            return Ok(());
        }
        let docs = self.identity_policies(caller)?;
        let ctx = ConditionContext::new();
        let req = Request {
            principal: caller.as_request(),
            action,
            resource,
            context: &ctx,
        };
        let policy::Verdict { allow, deny, .. } = policy::evaluate_all(&docs, &req);
        if allow && !deny {
            return Ok(());
        }
        let why = if deny {
            "with an explicit deny in an identity-based policy".to_string()
        } else {
            format!("because no identity-based policy allows the {action} action")
        };
        Err(Error::new(
            ErrorKind::IamAccessDenied,
            format!(
                "User: {} is not authorized to perform: {action} on resource: {resource} {why}",
                caller.arn()
            ),
        ))
    }

    // ------------------------------------------------------------ operations

    pub fn create(
        &self,
        caller: &Principal,
        new: &NewEntity<'_>,
        now: Timestamp,
    ) -> Result<Entity> {
        let NewEntity {
            kind,
            name,
            path,
            assume_role_policy,
            description,
        } = *new;
        let account = caller.account();
        check_name(name, &format!("{}Name", kind.as_str()), 64)?;
        let path = path.unwrap_or("/");
        check_path(path)?;
        let arn = format!("arn:aws:iam::{account}:{}{path}{name}", kind.as_str());
        self.authorize(caller, &format!("iam:Create{}", kind.title()), &arn)?;
        if kind == EntityKind::Role {
            let doc = assume_role_policy.ok_or_else(|| {
                Error::new(ErrorKind::IamValidation, "1 validation error detected: Value null at 'assumeRolePolicyDocument' failed to satisfy constraint: Member must not be null")
            })?;
            serde_json::from_str::<serde_json::Value>(doc).map_err(|e| {
                Error::new(
                    ErrorKind::IamMalformedPolicyDocument,
                    format!("The assume-role policy is not valid JSON: {e}"),
                )
            })?;
        }
        if self.get(account, kind, name)?.is_some() {
            return Err(Error::new(
                ErrorKind::EntityAlreadyExists,
                format!("{} with name {name} already exists.", kind.title()),
            ));
        }
        let e = Entity {
            name: name.to_string(),
            path: path.to_string(),
            id: random_id(if kind == EntityKind::User {
                "AIDA"
            } else {
                "AROA"
            }),
            arn,
            created: now,
            assume_role_policy: assume_role_policy.map(String::from),
            description: description.map(String::from),
            policies: BTreeMap::new(),
        };
        self.put(account, kind, &e)?;
        Ok(e)
    }

    pub fn get_entity(&self, caller: &Principal, kind: EntityKind, name: &str) -> Result<Entity> {
        let e = self.must_get(caller.account(), kind, name)?;
        self.authorize(caller, &format!("iam:Get{}", kind.title()), &e.arn)?;
        Ok(e)
    }

    pub fn delete(&self, caller: &Principal, kind: EntityKind, name: &str) -> Result<()> {
        let e = self.must_get(caller.account(), kind, name)?;
        self.authorize(caller, &format!("iam:Delete{}", kind.title()), &e.arn)?;
        if !e.policies.is_empty() {
            return Err(Error::new(
                ErrorKind::DeleteConflict,
                "Cannot delete entity, must delete policies first.",
            ));
        }
        if kind == EntityKind::User && self.user_has_keys(caller.account(), name)? {
            return Err(Error::new(
                ErrorKind::DeleteConflict,
                "Cannot delete entity, must delete access keys first.",
            ));
        }
        self.conn
            .execute(
                "DELETE FROM entities WHERE account = ?1 AND kind = ?2 AND name = ?3",
                params![caller.account(), kind.as_str(), name],
            )
            .map_err(|e| crate::home::stores::sqlite_error(&self.path, e))?;
        Ok(())
    }

    /// SQLite's `data_version` of `iam.db`: it changes when another connection
    /// (another process) commits a change, so what was read before can be kept
    /// until it does.
    pub fn data_version(&self) -> Result<i64> {
        // Asked on every call: the statement is kept prepared.
        self.conn
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut st| st.query_row([], |r| r.get(0)))
            .map_err(|e| crate::home::stores::sqlite_error(&self.path, e))
    }

    /// Forgets every user, role, inline policy, session and user access key
    /// (`ebsim serve`'s reset); the account roots' access keys stay, so the client
    /// that asked for the reset can go on. One transaction.
    pub fn reset(&mut self) -> Result<()> {
        let path = self.path.clone();
        let run = |conn: &mut rusqlite::Connection| -> rusqlite::Result<()> {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM entities", [])?;
            tx.execute("DELETE FROM access_keys WHERE user <> ''", [])?;
            tx.execute("DELETE FROM sessions", [])?;
            tx.commit()
        };
        run(&mut self.conn).map_err(|e| crate::home::stores::sqlite_error(&path, e))
    }

    pub fn list_entities(&self, caller: &Principal, kind: EntityKind) -> Result<Vec<Entity>> {
        let resource = format!("arn:aws:iam::{}:{}/*", caller.account(), kind.as_str());
        self.authorize(caller, &format!("iam:List{}s", kind.title()), &resource)?;
        self.list(caller.account(), kind)
    }

    pub fn put_policy(
        &self,
        caller: &Principal,
        kind: EntityKind,
        name: &str,
        policy_name: &str,
        doc: &str,
    ) -> Result<()> {
        let mut e = self.must_get(caller.account(), kind, name)?;
        self.authorize(caller, &format!("iam:Put{}Policy", kind.title()), &e.arn)?;
        check_name(policy_name, "policyName", 128)?;
        check_identity_policy(doc)?;
        e.policies.insert(policy_name.to_string(), doc.to_string());
        self.put(caller.account(), kind, &e)
    }

    pub fn get_policy(
        &self,
        caller: &Principal,
        kind: EntityKind,
        name: &str,
        policy_name: &str,
    ) -> Result<String> {
        let e = self.must_get(caller.account(), kind, name)?;
        self.authorize(caller, &format!("iam:Get{}Policy", kind.title()), &e.arn)?;
        e.policies.get(policy_name).cloned().ok_or_else(|| {
            Error::new(
                ErrorKind::NoSuchEntity,
                format!(
                    "The {} policy with name {policy_name} cannot be found.",
                    kind.as_str()
                ),
            )
        })
    }

    pub fn delete_policy(
        &self,
        caller: &Principal,
        kind: EntityKind,
        name: &str,
        policy_name: &str,
    ) -> Result<()> {
        let mut e = self.must_get(caller.account(), kind, name)?;
        self.authorize(caller, &format!("iam:Delete{}Policy", kind.title()), &e.arn)?;
        if e.policies.remove(policy_name).is_none() {
            return Err(Error::new(
                ErrorKind::NoSuchEntity,
                format!(
                    "The {} policy with name {policy_name} cannot be found.",
                    kind.as_str()
                ),
            ));
        }
        self.put(caller.account(), kind, &e)
    }

    pub fn list_policies(
        &self,
        caller: &Principal,
        kind: EntityKind,
        name: &str,
    ) -> Result<Vec<String>> {
        let e = self.must_get(caller.account(), kind, name)?;
        self.authorize(caller, &format!("iam:List{}Policies", kind.title()), &e.arn)?;
        Ok(e.policies.keys().cloned().collect())
    }
}

#[cfg(test)]
mod tests;
