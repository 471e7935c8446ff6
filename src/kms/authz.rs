//! Authorization of one KMS call: the key policy and the caller's identity
//! policies (`access::decide`), then the key's grants.

use super::*;
use crate::policy::Request;
use access::{Denial, access_denied, base_context, decide};

/// What a decision needs beyond the caller, the action and the key.
#[derive(Default)]
pub(super) struct Authz<'a> {
    /// The request's encryption context: `kms:EncryptionContext:*` condition keys
    /// and grant constraints.
    pub context: Option<&'a EncryptionContext>,
    pub grant_tokens: &'a [String],
    /// More condition keys for this request (`kms:GrantOperations`, …).
    pub conditions: Vec<(&'static str, Vec<String>)>,
}

impl<'a> Authz<'a> {
    pub fn with_context(context: &'a EncryptionContext, grant_tokens: &'a [String]) -> Self {
        Authz {
            context: Some(context),
            grant_tokens,
            conditions: Vec::new(),
        }
    }
}

impl Kms {
    /// The caller's identity policies (none for the account root and for services).
    pub(super) fn identity_policies(
        &self,
        caller: &Caller,
    ) -> Result<Vec<crate::policy::PolicyDocument>> {
        if caller.is_root() || caller.is_aws_service() {
            return Ok(Vec::new());
        }
        self.with_iam(|iam| iam.identity_policies(&caller.principal))
    }

    /// Runs `f` on the data root's IAM database, opened on first use (callers that
    /// never need IAM never create iam.db).
    fn with_iam<T>(&self, f: impl FnOnce(&crate::iam::Iam) -> Result<T>) -> Result<T> {
        let mut iam = self.iam.lock().unwrap_or_else(|p| p.into_inner());
        if iam.is_none() {
            *iam = Some(crate::iam::Iam::open(&self.root)?);
        }
        f(iam.as_ref().expect("opened above"))
    }

    /// Whether an IAM principal exists (the account root and services always do).
    pub(crate) fn principal_exists(&self, p: &crate::iam::Principal) -> Result<bool> {
        if matches!(
            p,
            crate::iam::Principal::Root { .. } | crate::iam::Principal::Service { .. }
        ) {
            return Ok(true);
        }
        self.with_iam(|iam| iam.exists(p))
    }

    /// The condition context of a request on `key`.
    pub(super) fn condition_context(
        &self,
        caller: &Caller,
        action: &str,
        key: &KeyRecord,
        authz: &Authz<'_>,
    ) -> crate::policy::ConditionContext {
        let mut ctx = base_context(caller, &self.region);
        ctx.set("kms:KeyOrigin", key.origin.as_str())
            .set("kms:KeySpec", key.key_spec.as_str())
            .set("kms:KeyUsage", key.key_usage.as_str())
            .set("kms:MultiRegion", key.multi_region.to_string())
            .set(
                "aws:CurrentTime",
                crate::clock::cloudtrail_time(&self.clock.now()),
            );
        if let Some(c) = &key.multi_region_config {
            ctx.set("kms:MultiRegionKeyType", c.key_type.as_str());
        }
        if let Some(ec) = authz.context {
            for (k, v) in ec {
                ctx.set(&format!("kms:EncryptionContext:{k}"), v.clone());
            }
            if !ec.is_empty() {
                ctx.set_many("kms:EncryptionContextKeys", ec.keys().cloned());
            }
        }
        if matches!(
            action,
            "kms:CreateGrant" | "kms:ListGrants" | "kms:RevokeGrant"
        ) {
            ctx.set(
                "kms:GrantIsForAWSResource",
                caller.via_service.is_some().to_string(),
            );
        }
        for (k, v) in &authz.conditions {
            ctx.set_many(k, v.iter().cloned());
        }
        ctx
    }

    /// Decides whether `caller` may perform `action` (`kms:Encrypt`) on `key`;
    /// `grants` are the key's grants.
    pub(super) fn authorize(
        &self,
        caller: &Caller,
        action: &str,
        key: &KeyRecord,
        grants: &[Arc<GrantRecord>],
        authz: &Authz<'_>,
    ) -> Result<Via> {
        if key.aws_owned {
            // Only the AWS service that owns it uses an AWS owned key.
            let owner = key
                .service
                .as_deref()
                .is_some_and(|s| caller.is_aws_service() && caller.arn().starts_with(s));
            return if owner {
                Ok(Via::Policy)
            } else {
                Err(access_denied(
                    caller,
                    action,
                    &key.arn,
                    Denial::NoKeyPolicyAllow,
                ))
            };
        }
        let denial = match key.policy_document() {
            Some(doc) => {
                let identity = self.identity_policies(caller)?;
                // Most policies have no conditions: then the context is never read.
                let ctx = if doc.has_conditions() || identity.iter().any(|d| d.has_conditions()) {
                    self.condition_context(caller, action, key, authz)
                } else {
                    crate::policy::ConditionContext::new()
                };
                let req = Request {
                    principal: caller.principal.as_request(),
                    action,
                    resource: &key.arn,
                    context: &ctx,
                };
                match decide(&doc, &identity, &req) {
                    Ok(()) => return Ok(Via::Policy),
                    Err(d) => d,
                }
            }
            None => Denial::NoKeyPolicyAllow,
        };
        if matches!(
            denial,
            Denial::ExplicitDenyInKeyPolicy | Denial::ExplicitDenyInIdentityPolicy
        ) {
            return Err(access_denied(caller, action, &key.arn, denial));
        }
        if let Some(g) = self.grant_for(caller, action, grants, authz)? {
            return Ok(Via::Grant(g));
        }
        Err(access_denied(caller, action, &key.arn, denial))
    }
}
