//! Role sessions (STS AssumeRole): temporary credentials — an `ASIA…` access key
//! id, a secret and a session token — that act as
//! `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION` until they expire.
//!
//! Kept in `iam.db`'s `sessions` table: the secret sealed like an access key's
//! (access_keys.rs), the session token only as its SHA-256 (a token is checked,
//! never shown again), the expiration in ebsim's clock. Expired rows are removed
//! when a new session is made.
//!
//! Who may assume a role: its trust policy (`AssumeRolePolicyDocument`) must allow
//! `sts:AssumeRole` to the caller. When it names the caller (or its role) the
//! trust policy alone suffices; when it names the caller's account, the caller's
//! identity policies must also allow `sts:AssumeRole` on the role, as in AWS. The
//! account root cannot assume roles (AWS refuses it too).

use super::access_keys::{new_key_id, new_secret};
use super::{EntityKind, Iam, Principal};
use crate::clock::Timestamp;
use crate::crypto::SecretBytes;
use crate::error::{Error, ErrorKind, Result};
use crate::policy::{self, ConditionContext, PolicyKind, Request};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

pub(super) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, expires INTEGER NOT NULL, json TEXT NOT NULL
) WITHOUT ROWID;";

#[derive(Serialize, Deserialize)]
struct Stored {
    access_key_id: String,
    account: String,
    role: String,
    session_name: String,
    expiration: Timestamp,
    /// Hex SHA-256 of the session token.
    token_sha256: String,
    sealed_secret: String,
}

/// What a request's session token is checked against.
#[derive(Debug, Clone)]
pub struct SessionCheck {
    token_sha256: [u8; 32],
    pub expiration: Timestamp,
}

/// Why a session token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    /// Missing or not this session's.
    Invalid,
    Expired,
}

impl SessionCheck {
    /// Checks `token` (constant time) and the expiration against `now`.
    pub fn check(
        &self,
        token: Option<&str>,
        now: Timestamp,
    ) -> std::result::Result<(), TokenProblem> {
        let Some(token) = token else {
            return Err(TokenProblem::Invalid);
        };
        let got = Sha256::digest(token.as_bytes());
        if !bool::from(got.as_slice().ct_eq(&self.token_sha256)) {
            return Err(TokenProblem::Invalid);
        }
        if now >= self.expiration {
            return Err(TokenProblem::Expired);
        }
        Ok(())
    }
}

/// A stored session, opened.
pub struct OpenSession {
    pub account: String,
    pub role: String,
    pub session_name: String,
    pub secret: SecretBytes,
    pub check: SessionCheck,
}

/// What AssumeRole returns.
pub struct NewSession {
    pub access_key_id: String,
    pub secret: SecretBytes,
    pub token: Zeroizing<String>,
    pub expiration: Timestamp,
    /// `AROA…:SESSION`.
    pub assumed_role_id: String,
    /// `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`.
    pub arn: String,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn validation(value: &str, member: &str, constraint: &str) -> Error {
    Error::new(
        ErrorKind::IamValidation,
        format!(
            "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {constraint}"
        ),
    )
}

impl Iam {
    /// AssumeRole: checks the trust policy (and, when it names only the account,
    /// the caller's identity policies) and makes a session.
    pub fn assume_role(
        &self,
        caller: &Principal,
        role_arn: &str,
        session_name: &str,
        duration: chrono::TimeDelta,
        now: Timestamp,
    ) -> Result<NewSession> {
        let name_ok = (2..=64).contains(&session_name.len())
            && session_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
        if !name_ok {
            return Err(validation(
                session_name,
                "roleSessionName",
                "Member must satisfy regular expression pattern: [\\w+=,.@-]* and have length between 2 and 64",
            ));
        }
        let denied = |why: &str| {
            Error::new(
                ErrorKind::IamAccessDenied,
                format!(
                    "User: {} is not authorized to perform: sts:AssumeRole on resource: {role_arn}{why}",
                    caller.arn()
                ),
            )
        };
        if matches!(caller, Principal::Root { .. }) {
            return Err(denied(" (roles may not be assumed by the account root)"));
        }
        let (account, role_name) = match Principal::parse(role_arn) {
            Ok(Principal::AssumedRole {
                account,
                role,
                role_arn: parsed,
                ..
            }) if parsed == role_arn => (account, role),
            _ => {
                return Err(validation(
                    role_arn,
                    "roleArn",
                    "Member must be a role ARN (arn:aws:iam::ACCOUNT:role/NAME)",
                ));
            }
        };
        let role = self
            .get(&account, EntityKind::Role, &role_name)?
            .ok_or_else(|| denied(" (no such role)"))?;
        let trust = role
            .assume_role_policy
            .as_deref()
            .and_then(|d| policy::parse(d, PolicyKind::Key).ok())
            .ok_or_else(|| denied(" (the role has no trust policy ebsim can read)"))?;
        let ctx = ConditionContext::new();
        let req = Request {
            principal: caller.as_request(),
            action: "sts:AssumeRole",
            resource: &role.arn,
            context: &ctx,
        };
        let v = trust.evaluate(&req);
        if v.deny {
            return Err(denied(" with an explicit deny in the role's trust policy"));
        }
        if !v.allow {
            if !v.allow_account {
                return Err(denied(" (the role's trust policy does not allow it)"));
            }
            self.authorize(caller, "sts:AssumeRole", &role.arn)?;
        }
        let expiration = now + duration;
        let access_key_id = new_key_id("ASIA");
        let secret = new_secret();
        let mut raw = Zeroizing::new([0u8; 48]);
        crate::crypto::random_fill(&mut raw[..]);
        let token = Zeroizing::new(format!("ebsim/{}", STANDARD.encode(&raw[..])));
        let sealed = self.seal_secret(&access_key_id, secret.expose())?;
        let stored = Stored {
            access_key_id: access_key_id.clone(),
            account: account.clone(),
            role: role.name.clone(),
            session_name: session_name.to_string(),
            expiration,
            token_sha256: hex(&Sha256::digest(token.as_bytes())),
            sealed_secret: STANDARD.encode(sealed),
        };
        let run = || -> Result<()> {
            self.conn.execute(
                "DELETE FROM sessions WHERE expires < ?1",
                params![now.timestamp()],
            )?;
            self.conn.execute(
                "INSERT INTO sessions (id, expires, json) VALUES (?1, ?2, ?3)",
                params![
                    access_key_id,
                    expiration.timestamp(),
                    serde_json::to_string(&stored).expect("sessions serialize")
                ],
            )?;
            Ok(())
        };
        run().map_err(|e| e.in_store(&self.path))?;
        Ok(NewSession {
            arn: format!(
                "arn:aws:sts::{account}:assumed-role/{}/{session_name}",
                role.name
            ),
            assumed_role_id: format!("{}:{session_name}", role.id),
            access_key_id,
            secret,
            token,
            expiration,
        })
    }

    /// The session whose access key id is `id`, if there is one.
    pub fn session(&self, id: &str) -> Result<Option<OpenSession>> {
        if !id.starts_with("ASIA") {
            return Ok(None);
        }
        let json: Option<String> = self
            .conn
            .query_row(
                "SELECT json FROM sessions WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| crate::home::stores::sqlite_error(&self.path, e))?;
        let Some(json) = json else {
            return Ok(None);
        };
        let damaged = |what: String| {
            Error::environment(format!("iam.db holds a damaged session {id}: {what}"))
        };
        let s: Stored = serde_json::from_str(&json).map_err(|e| damaged(e.to_string()))?;
        let sealed = STANDARD
            .decode(&s.sealed_secret)
            .map_err(|e| damaged(e.to_string()))?;
        let mut token_sha256 = [0u8; 32];
        let bytes: Vec<u8> = (0..s.token_sha256.len() / 2)
            .filter_map(|i| u8::from_str_radix(s.token_sha256.get(2 * i..2 * i + 2)?, 16).ok())
            .collect();
        if bytes.len() != 32 {
            return Err(damaged("its token hash is not 32 bytes".into()));
        }
        token_sha256.copy_from_slice(&bytes);
        Ok(Some(OpenSession {
            secret: self.open_secret(id, &sealed)?,
            account: s.account,
            role: s.role,
            session_name: s.session_name,
            check: SessionCheck {
                token_sha256,
                expiration: s.expiration,
            },
        }))
    }
}
