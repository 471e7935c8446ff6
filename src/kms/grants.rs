//! Grants: CreateGrant, ListGrants, ListRetirableGrants, RetireGrant, RevokeGrant,
//! and the check that lets a grant allow an operation the policies do not.
//!
//! A grant allows its grantee the listed operations on one key, under optional
//! encryption-context constraints checked on every use. A new grant takes effect
//! after the data root's propagation delay (`kms_grant_propagation_seconds`,
//! default 0) unless the request presents its grant token, as AWS's eventual
//! consistency works. Grants only ever allow; an explicit Deny still wins.

use super::*;
use base64::Engine;

/// Every `GrantOperation` AWS defines.
pub const GRANT_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "Sign",
    "Verify",
    "GetPublicKey",
    "CreateGrant",
    "RetireGrant",
    "DescribeKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateMac",
    "VerifyMac",
    "DeriveSharedSecret",
];

/// The grant operations a symmetric encryption key supports.
pub const SYMMETRIC_GRANT_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "CreateGrant",
    "RetireGrant",
    "DescribeKey",
];

/// Operations that take an encryption context, to which grant constraints apply.
const CONTEXT_OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
];

/// Grants per key (resource quota).
pub const GRANTS_PER_KEY: usize = 50_000;

const TOKEN_PREFIX: &str = "ebsimgt1:";

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// The grant token of a grant: opaque to callers, names the grant.
pub fn grant_token(g: &GrantRecord) -> String {
    b64().encode(format!("{TOKEN_PREFIX}{}:{}", g.grant_id, g.token_nonce))
}

/// The grant a token names: (grant id, nonce).
fn parse_token(token: &str) -> Result<(String, String)> {
    let invalid = || Error::new(ErrorKind::InvalidGrantToken, "Invalid grant token.");
    let text = b64()
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(invalid)?;
    let rest = text.strip_prefix(TOKEN_PREFIX).ok_or_else(invalid)?;
    let (id, nonce) = rest.split_once(':').ok_or_else(invalid)?;
    if !is_grant_id(id) {
        return Err(invalid());
    }
    Ok((id.to_string(), nonce.to_string()))
}

fn is_grant_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn check_grant_id(id: &str) -> Result<()> {
    if is_grant_id(id) {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidGrantId,
            format!("Invalid grant ID: {id}"),
        ))
    }
}

/// A grantee or retiring principal: a principal ARN, an AWS service principal, or
/// EC2's infrastructure form `<account>:aws:ec2-infrastructure:<id>`.
fn check_grant_principal(p: &str, member: &str) -> Result<()> {
    let infra = p.split(':').count() >= 4
        && p.split(':')
            .next()
            .is_some_and(|a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()))
        && p.split(':').nth(1) == Some("aws");
    let service = p.ends_with(".amazonaws.com") && !p.contains(':');
    if infra || service || crate::iam::Principal::parse(p).is_ok() {
        Ok(())
    } else {
        Err(Error::validation(
            p,
            member,
            "Member must be a valid principal ARN",
        ))
    }
}

fn grantee_matches(g: &GrantRecord, caller: &Caller) -> bool {
    g.grantee_principal == caller.arn() || g.grantee_principal == caller.principal.principal_arn()
}

fn constraints_hold(g: &GrantRecord, op: &str, ctx: Option<&EncryptionContext>) -> bool {
    let Some(c) = &g.constraints else { return true };
    if !CONTEXT_OPERATIONS.contains(&op) {
        return true;
    }
    let empty = EncryptionContext::new();
    let ctx = ctx.unwrap_or(&empty);
    c.encryption_context_equals
        .as_ref()
        .is_none_or(|eq| eq == ctx)
        && c.encryption_context_subset
            .as_ref()
            .is_none_or(|sub| sub.iter().all(|(k, v)| ctx.get(k) == Some(v)))
}

/// Grants oldest first, one page of them (Limit 1–100, default 50).
fn grant_page(
    mut list: Vec<GrantListEntry>,
    limit: Option<u32>,
    marker: Option<&str>,
) -> Result<ListGrantsResponse> {
    list.sort_by(|a, b| (a.creation_date.0, &a.grant_id).cmp(&(b.creation_date.0, &b.grant_id)));
    let (grants, next_marker, truncated) = paginate(list, limit, 100, 50, marker)?;
    Ok(ListGrantsResponse {
        grants,
        next_marker,
        truncated,
    })
}

impl Cache {
    pub(super) fn grants_of(&self, key_id: &str) -> Vec<Arc<GrantRecord>> {
        self.grants.get(key_id).cloned().unwrap_or_default()
    }
}

impl Kms {
    /// The key's grants, from a fresh cache.
    pub(super) fn key_grants(&self, key_id: &str) -> Result<Vec<Arc<GrantRecord>>> {
        Ok(self.fresh()?.cache.grants_of(key_id))
    }

    /// The grant (if any) that allows `caller` to perform `action` now.
    pub(super) fn grant_for(
        &self,
        caller: &Caller,
        action: &str,
        grants: &[Arc<GrantRecord>],
        authz: &Authz<'_>,
    ) -> Result<Option<Arc<GrantRecord>>> {
        let presented: Vec<(String, String)> = authz
            .grant_tokens
            .iter()
            .map(|t| parse_token(t))
            .collect::<Result<_>>()?;
        let Some(op) = action.strip_prefix("kms:") else {
            return Ok(None);
        };
        let now = self.clock.now();
        Ok(grants
            .iter()
            .find(|g| {
                g.operations.iter().any(|o| o == op)
                    && grantee_matches(g, caller)
                    && (g.creation_date + self.grant_delay <= now
                        || presented
                            .iter()
                            .any(|(id, nonce)| *id == g.grant_id && *nonce == g.token_nonce))
                    && constraints_hold(g, op, authz.context)
            })
            .cloned())
    }

    pub fn create_grant(
        &self,
        caller: &Caller,
        req: CreateGrantRequest,
    ) -> Result<CreateGrantResponse> {
        self.call(caller, "CreateGrant", CallKind::Mutation, &req, |audit| {
            check_grant_principal(&req.grantee_principal, "granteePrincipal")?;
            if let Some(r) = &req.retiring_principal {
                check_grant_principal(r, "retiringPrincipal")?;
            }
            if req.operations.is_empty() {
                return Err(Error::validation(
                    "[]",
                    "operations",
                    "Member must have length greater than or equal to 1",
                ));
            }
            for op in &req.operations {
                check_enum(op, "operations", GRANT_OPERATIONS)?;
                if !SYMMETRIC_GRANT_OPERATIONS.contains(&op.as_str()) {
                    return Err(Error::new(
                        ErrorKind::Validation,
                        format!("Grant operation {op} is not valid for a SYMMETRIC_DEFAULT key."),
                    ));
                }
            }
            if let Some(name) = &req.name {
                let ok = !name.is_empty()
                    && name.len() <= 256
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b":/_-".contains(&b));
                if !ok {
                    return Err(Error::validation(
                        name,
                        "name",
                        "Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$",
                    ));
                }
            }
            check_grant_tokens(&req.grant_tokens)?;
            let mut ops = req.operations.clone();
            ops.sort();
            ops.dedup();
            let now = self.clock.now();
            self.mutate(|cache, tx| {
                let key = self.resolve(cache, caller, &req.key_id, false)?;
                audit.resources.push(key.arn.clone());
                let grants = cache.grants_of(&key.key_id);
                let mut conditions = vec![
                    ("kms:GrantOperations", ops.clone()),
                    ("kms:GranteePrincipal", vec![req.grantee_principal.clone()]),
                ];
                if let Some(r) = &req.retiring_principal {
                    conditions.push(("kms:RetiringPrincipal", vec![r.clone()]));
                }
                if let Some(c) = &req.constraints {
                    let mut types = Vec::new();
                    if c.encryption_context_equals.is_some() {
                        types.push("EncryptionContextEquals".to_string());
                    }
                    if c.encryption_context_subset.is_some() {
                        types.push("EncryptionContextSubset".to_string());
                    }
                    conditions.push(("kms:GrantConstraintType", types));
                }
                let authz = Authz {
                    context: None,
                    grant_tokens: &req.grant_tokens,
                    conditions,
                };
                if let Via::Grant(parent) =
                    self.authorize(caller, "kms:CreateGrant", &key, &grants, &authz)?
                {
                    // A grantee may only pass on what its own grant allows, under at
                    // least the same constraints.
                    let narrower = ops.iter().all(|o| parent.operations.contains(o))
                        && parent
                            .constraints
                            .as_ref()
                            .is_none_or(|pc| Some(pc) == req.constraints.as_ref());
                    if !narrower {
                        return Err(access::access_denied(
                            caller,
                            "kms:CreateGrant",
                            &key.arn,
                            access::Denial::NoKeyPolicyAllow,
                        ));
                    }
                }
                check_usable(&key)?;
                dry_run(req.dry_run)?;
                if let Some(name) = &req.name
                    && let Some(same) = grants.iter().find(|g| {
                        g.name.as_deref() == Some(name.as_str())
                            && g.grantee_principal == req.grantee_principal
                            && g.retiring_principal == req.retiring_principal
                            && g.operations == ops
                            && g.constraints == req.constraints
                    })
                {
                    // Name makes CreateGrant idempotent: the same request returns the same grant.
                    return Ok(CreateGrantResponse {
                        grant_token: grant_token(same),
                        grant_id: same.grant_id.clone(),
                    });
                }
                if grants.len() >= GRANTS_PER_KEY {
                    return Err(Error::new(
                        ErrorKind::LimitExceeded,
                        format!("The key {} already has {GRANTS_PER_KEY} grants.", key.arn),
                    ));
                }
                let hex = |n| {
                    crate::crypto::random_bytes(n)
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                };
                let g = GrantRecord {
                    grant_id: hex(32),
                    key_id: key.key_id.clone(),
                    name: req.name.clone(),
                    creation_date: now,
                    grantee_principal: req.grantee_principal.clone(),
                    retiring_principal: req.retiring_principal.clone(),
                    issuing_account: format!("arn:aws:iam::{}:root", caller.account_id()),
                    operations: ops.clone(),
                    constraints: req.constraints.clone(),
                    token_nonce: hex(16),
                };
                tx.put(Kind::Grant, &g.grant_id, &g)?;
                let resp = CreateGrantResponse {
                    grant_token: grant_token(&g),
                    grant_id: g.grant_id.clone(),
                };
                cache
                    .grants
                    .entry(key.key_id.clone())
                    .or_default()
                    .push(Arc::new(g));
                Ok(resp)
            })
        })
    }

    fn entry(&self, g: &GrantRecord) -> GrantListEntry {
        GrantListEntry {
            key_id: key_arn(&self.region, &self.account_id, &g.key_id),
            grant_id: g.grant_id.clone(),
            name: g.name.clone(),
            creation_date: Time(g.creation_date),
            grantee_principal: g.grantee_principal.clone(),
            retiring_principal: g.retiring_principal.clone(),
            issuing_account: g.issuing_account.clone(),
            operations: g.operations.clone(),
            constraints: g.constraints.clone(),
        }
    }

    pub fn list_grants(
        &self,
        caller: &Caller,
        req: ListGrantsRequest,
    ) -> Result<ListGrantsResponse> {
        self.call(caller, "ListGrants", CallKind::Read, &req, |audit| {
            if let Some(id) = &req.grant_id {
                check_grant_id(id)?;
            }
            let key = self.resolve_fresh(caller, &req.key_id, false)?;
            audit.resources.push(key.arn.clone());
            let grants = self.key_grants(&key.key_id)?;
            self.authorize(caller, "kms:ListGrants", &key, &grants, &Authz::default())?;
            let list: Vec<GrantListEntry> = grants
                .iter()
                .filter(|g| req.grant_id.as_ref().is_none_or(|id| *id == g.grant_id))
                .filter(|g| {
                    req.grantee_principal
                        .as_ref()
                        .is_none_or(|p| *p == g.grantee_principal)
                })
                .map(|g| self.entry(g))
                .collect();
            grant_page(list, req.limit, req.marker.as_deref())
        })
    }

    pub fn list_retirable_grants(
        &self,
        caller: &Caller,
        req: ListRetirableGrantsRequest,
    ) -> Result<ListGrantsResponse> {
        self.call(caller, "ListRetirableGrants", CallKind::Read, &req, |_| {
            check_grant_principal(&req.retiring_principal, "retiringPrincipal")?;
            self.authorize_account_action(caller, "kms:ListRetirableGrants", "*")?;
            let inner = self.fresh()?;
            let list: Vec<GrantListEntry> = inner
                .cache
                .grants
                .values()
                .flatten()
                .filter(|g| {
                    g.retiring_principal.as_deref() == Some(req.retiring_principal.as_str())
                })
                .map(|g| self.entry(g))
                .collect();
            drop(inner);
            grant_page(list, req.limit, req.marker.as_deref())
        })
    }

    pub fn retire_grant(&self, caller: &Caller, req: RetireGrantRequest) -> Result<()> {
        self.call(caller, "RetireGrant", CallKind::Mutation, &req, |audit| {
            let by_token = req.grant_token.as_deref().map(parse_token).transpose()?;
            let (key_input, grant_id) = match (&by_token, &req.key_id, &req.grant_id) {
                (Some((id, _)), _, _) => (None, id.clone()),
                (None, Some(k), Some(g)) => {
                    check_grant_id(g)?;
                    (Some(k.clone()), g.clone())
                }
                _ => {
                    return Err(Error::new(
                        ErrorKind::Validation,
                        "Either GrantToken, or both KeyId and GrantId, must be specified.",
                    ));
                }
            };
            self.mutate(|cache, tx| {
                let grant = match &key_input {
                    Some(k) => {
                        let key = self.resolve(cache, caller, k, false)?;
                        cache
                            .grants_of(&key.key_id)
                            .into_iter()
                            .find(|g| g.grant_id == grant_id)
                    }
                    None => cache
                        .grants
                        .values()
                        .flatten()
                        .find(|g| g.grant_id == grant_id)
                        .cloned(),
                };
                let grant = grant.ok_or_else(|| {
                    Error::new(
                        ErrorKind::NotFound,
                        format!("Grant ID {grant_id} not found"),
                    )
                })?;
                let key = cache
                    .keys
                    .get(&grant.key_id)
                    .cloned()
                    .ok_or_else(|| self.not_found_key(&grant.key_id))?;
                audit.resources.push(key.arn.clone());
                // Who may retire: the retiring principal, a grantee allowed RetireGrant,
                // or whoever the key's policies allow kms:RetireGrant.
                let retiring = grant
                    .retiring_principal
                    .as_deref()
                    .is_some_and(|r| r == caller.arn() || r == caller.principal.principal_arn());
                let grantee = grantee_matches(&grant, caller)
                    && grant.operations.iter().any(|o| o == "RetireGrant");
                if !retiring && !grantee {
                    self.authorize(caller, "kms:RetireGrant", &key, &[], &Authz::default())?;
                }
                dry_run(req.dry_run)?;
                tx.delete(Kind::Grant, &grant.grant_id)?;
                if let Some(list) = cache.grants.get_mut(&grant.key_id) {
                    list.retain(|g| g.grant_id != grant.grant_id);
                }
                Ok(())
            })
        })
    }

    pub fn revoke_grant(&self, caller: &Caller, req: RevokeGrantRequest) -> Result<()> {
        self.call(caller, "RevokeGrant", CallKind::Mutation, &req, |audit| {
            check_grant_id(&req.grant_id)?;
            self.mutate(|cache, tx| {
                let key = self.resolve(cache, caller, &req.key_id, false)?;
                audit.resources.push(key.arn.clone());
                self.authorize(caller, "kms:RevokeGrant", &key, &[], &Authz::default())?;
                let exists = cache
                    .grants_of(&key.key_id)
                    .iter()
                    .any(|g| g.grant_id == req.grant_id);
                if !exists {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!("Grant ID {} not found", req.grant_id),
                    ));
                }
                dry_run(req.dry_run)?;
                tx.delete(Kind::Grant, &req.grant_id)?;
                if let Some(list) = cache.grants.get_mut(&key.key_id) {
                    list.retain(|g| g.grant_id != req.grant_id);
                }
                Ok(())
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_grant_and_reject_garbage() {
        let g = GrantRecord {
            grant_id: "ab".repeat(32),
            key_id: "k".into(),
            name: None,
            creation_date: chrono::Utc::now(),
            grantee_principal: "arn:aws:iam::111122223333:user/a".into(),
            retiring_principal: None,
            issuing_account: "arn:aws:iam::111122223333:root".into(),
            operations: vec!["Decrypt".into()],
            constraints: None,
            token_nonce: "00ff".into(),
        };
        let t = grant_token(&g);
        assert_eq!(
            parse_token(&t).unwrap(),
            ("ab".repeat(32), "00ff".to_string())
        );
        for bad in [
            "",
            "!!!",
            &b64().encode("hello"),
            &b64().encode("ebsimgt1:xyz:1"),
        ] {
            assert_eq!(
                parse_token(bad).unwrap_err().kind(),
                ErrorKind::InvalidGrantToken,
                "{bad}"
            );
        }
    }

    #[test]
    fn grant_principals() {
        check_grant_principal("arn:aws:iam::111122223333:user/alice", "g").unwrap();
        check_grant_principal("arn:aws:sts::111122223333:assumed-role/R/s", "g").unwrap();
        check_grant_principal("111122223333:aws:ec2-infrastructure:i-0123", "g").unwrap();
        check_grant_principal("ec2.amazonaws.com", "g").unwrap();
        assert!(check_grant_principal("alice", "g").is_err());
    }
}
