//! Who is calling, and whether they may.
//!
//! Every call carries a [`Caller`]. This caller is the account root (the
//! default identity of a fresh AWS account) or the account acting through an AWS
//! service (ebsim's volume service: `kms:ViaService = ec2.<region>.amazonaws.com`).
//! For those callers the two key policies ebsim writes decide exactly as below:
//! the default customer-key policy gives the account root `kms:*`; the AWS managed
//! key policy gives the account only `Describe*`, `Get*` and `List*` directly and
//! the key's use only through its own service. The general policy evaluator
//! (identity policies, grants, arbitrary documents) replaces this module's body
//! without changing its signature.

use super::model::{KeyManager, KeyRecord};
use crate::error::{Error, ErrorKind, Result};

/// The principal making a call, and how the call reached KMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `arn:aws:iam::<account>:root`, a user or a role ARN.
    pub arn: String,
    pub account_id: String,
    /// CloudTrail's `userIdentity.type`: `Root`, `IAMUser`, `AssumedRole`.
    pub identity_type: String,
    /// Set when an AWS service calls on the principal's behalf: `ec2.us-east-1.amazonaws.com`.
    pub via_service: Option<String>,
    pub user_agent: String,
    pub source_ip: String,
}

impl Caller {
    /// The account root, calling directly (the CLI's default identity).
    pub fn account_root(account_id: &str) -> Self {
        Caller {
            arn: format!("arn:aws:iam::{account_id}:root"),
            account_id: account_id.to_string(),
            identity_type: "Root".into(),
            via_service: None,
            user_agent: concat!("ebsim/", env!("CARGO_PKG_VERSION")).into(),
            source_ip: "127.0.0.1".into(),
        }
    }

    /// The same principal, calling through AWS service `service` (`ec2`, `rds`) in `region`.
    pub fn via(&self, service: &str, region: &str) -> Self {
        Caller {
            via_service: Some(format!("{service}.{region}.amazonaws.com")),
            user_agent: "AWS Internal".into(),
            source_ip: "AWS Internal".into(),
            ..self.clone()
        }
    }

    /// True for an AWS service acting on its own behalf (not for a principal calling
    /// through a service).
    pub fn is_aws_service(&self) -> bool {
        self.identity_type == "AWSService"
    }

    /// CloudTrail's `userName` lookup value.
    pub fn user_name(&self) -> String {
        if self.identity_type == "Root" {
            "root".into()
        } else {
            self.arn.rsplit('/').next().unwrap_or(&self.arn).to_string()
        }
    }
}

/// Actions the AWS managed key policy lets the account call directly.
fn aws_managed_direct(action: &str) -> bool {
    ["Describe", "Get", "List"].iter().any(|p| {
        action
            .strip_prefix("kms:")
            .is_some_and(|a| a.starts_with(p))
    })
}

/// Actions the AWS managed key policy allows through the owning service.
fn aws_managed_via_service(action: &str) -> bool {
    matches!(
        action,
        "kms:Encrypt"
            | "kms:Decrypt"
            | "kms:ReEncryptFrom"
            | "kms:ReEncryptTo"
            | "kms:GenerateDataKey"
            | "kms:GenerateDataKeyWithoutPlaintext"
            | "kms:CreateGrant"
            | "kms:DescribeKey"
    )
}

/// Decides whether `caller` may perform `action` (`kms:Encrypt`) on `key`.
pub fn authorize(caller: &Caller, action: &str, key: &KeyRecord) -> Result<()> {
    let same_account = caller.account_id == key.account_id;
    let allowed = if key.aws_owned {
        // Only the AWS service that owns it uses an AWS owned key.
        caller.is_aws_service()
            && key
                .service
                .as_deref()
                .is_some_and(|s| caller.arn.starts_with(s))
    } else {
        same_account
            && match key.manager {
                KeyManager::Customer => true,
                KeyManager::Aws => {
                    aws_managed_direct(action)
                        || (aws_managed_via_service(action)
                            && key.service.as_deref().is_some_and(|svc| {
                                // kms:ViaService must name the owning service in the key's region.
                                let region = key.arn.split(':').nth(3).unwrap_or_default();
                                caller.via_service.as_deref()
                                    == Some(&format!(
                                        "{}.{region}.amazonaws.com",
                                        svc_endpoint(svc)
                                    ))
                            }))
                }
            }
    };
    if allowed {
        Ok(())
    } else {
        Err(access_denied(caller, action, &key.arn))
    }
}

/// The service endpoint prefix that owns an AWS managed key (`aws/ebs` is used by EC2).
fn svc_endpoint(service: &str) -> &str {
    match service {
        "ebs" => "ec2",
        other => other,
    }
}

/// AWS's AccessDeniedException text.
pub fn access_denied(caller: &Caller, action: &str, resource: &str) -> Error {
    Error::new(
        ErrorKind::AccessDenied,
        format!(
            "User: {} is not authorized to perform: {action} on resource: {resource} because no resource-based policy allows the {action} action",
            caller.arn
        ),
    )
}

/// The default key policy AWS gives a key created without one.
pub fn default_key_policy(account_id: &str) -> String {
    let doc = serde_json::json!({
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": [{
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{account_id}:root")},
            "Action": "kms:*",
            "Resource": "*"
        }]
    });
    serde_json::to_string_pretty(&doc).expect("policy serializes")
}

/// The key policy of an AWS managed key, in the shape AWS writes it.
pub fn aws_managed_key_policy(account_id: &str, region: &str, service: &str) -> String {
    let via = format!("{}.{region}.amazonaws.com", svc_endpoint(service));
    let doc = serde_json::json!({
        "Version": "2012-10-17",
        "Id": format!("auto-{service}-2"),
        "Statement": [
            {
                "Sid": format!("Allow access through {} for all principals in the account that are authorized to use {}", service.to_uppercase(), service.to_uppercase()),
                "Effect": "Allow",
                "Principal": {"AWS": "*"},
                "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:CreateGrant", "kms:DescribeKey"],
                "Resource": "*",
                "Condition": {"StringEquals": {"kms:CallerAccount": account_id, "kms:ViaService": via}}
            },
            {
                "Sid": "Allow direct access to key metadata to the account",
                "Effect": "Allow",
                "Principal": {"AWS": format!("arn:aws:iam::{account_id}:root")},
                "Action": ["kms:Describe*", "kms:Get*", "kms:List*", "kms:RevokeGrant"],
                "Resource": "*"
            }
        ]
    });
    serde_json::to_string_pretty(&doc).expect("policy serializes")
}

/// Checks that a caller-supplied policy is a JSON policy document; the full grammar
/// is checked by the policy evaluator.
pub fn check_policy_document(policy: &str) -> Result<()> {
    if policy.len() > 32 * 1024 {
        return Err(Error::new(
            ErrorKind::LimitExceeded,
            "Policy document exceeds the 32768-byte key policy limit.",
        ));
    }
    let malformed = |why: &str| {
        Error::new(
            ErrorKind::MalformedPolicyDocument,
            format!(
                "The new key policy will not allow you to update the key policy in the future. ({why})"
            ),
        )
    };
    let v: serde_json::Value = serde_json::from_str(policy).map_err(|e| {
        Error::new(
            ErrorKind::MalformedPolicyDocument,
            format!("Policy contains a statement that is not valid JSON: {e}"),
        )
    })?;
    match v.get("Statement") {
        Some(serde_json::Value::Array(_)) | Some(serde_json::Value::Object(_)) => Ok(()),
        _ => Err(malformed("the document has no Statement")),
    }
}
