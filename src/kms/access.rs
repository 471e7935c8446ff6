//! Who is calling, and whether they may (shared/reference/kms-ebs.md §1.11–1.12).
//!
//! Every call carries a [`Caller`]: a principal (account root, IAM user, role
//! session, or an AWS service acting on its own) and, when an AWS service calls on
//! the principal's behalf, `kms:ViaService`. [`decide`] combines the key policy and
//! the caller's identity policies as AWS does: an explicit Deny in either wins;
//! otherwise an Allow in the key policy for the caller, or for the caller's account
//! together with an Allow in the caller's identity policies; otherwise the caller is
//! denied unless a grant allows the operation (grants are checked by the KMS, which
//! owns them).

use crate::error::{Error, ErrorKind};
use crate::iam::Principal;
use crate::policy::{ConditionContext, PolicyDocument, Request};

/// The principal making a call, and how the call reached KMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub principal: Principal,
    /// The principal's unique id (`AIDA…` for users), when known: CloudTrail's `principalId`.
    pub principal_id: Option<String>,
    /// Set when an AWS service calls on the principal's behalf: `ec2.us-east-1.amazonaws.com`.
    pub via_service: Option<String>,
    pub user_agent: String,
    pub source_ip: String,
    /// The id of the request this call answers (`x-amzn-RequestId`), which its
    /// CloudTrail record carries as `requestID`; None: the record gets an id of
    /// its own (a call a service makes on the caller's behalf is a request of
    /// its own, as on AWS).
    pub request_id: Option<uuid::Uuid>,
}

impl Caller {
    /// A principal calling directly from this machine.
    pub fn new(principal: Principal) -> Self {
        Caller {
            principal,
            principal_id: None,
            via_service: None,
            user_agent: concat!("ebsim/", env!("CARGO_PKG_VERSION")).into(),
            source_ip: "127.0.0.1".into(),
            request_id: None,
        }
    }

    /// The account root, calling directly (the CLI's default identity).
    pub fn account_root(account_id: &str) -> Self {
        Self::new(Principal::root(account_id))
    }

    /// An AWS service acting on its own (automatic rotation, key deletion, AWS owned keys).
    pub fn aws_service(account_id: &str, service: &str) -> Self {
        Caller {
            principal: Principal::Service {
                name: service.into(),
                account: account_id.into(),
            },
            principal_id: None,
            via_service: None,
            user_agent: service.to_string(),
            source_ip: service.to_string(),
            request_id: None,
        }
    }

    /// The infrastructure of AWS service `service` (`ec2`) in `region` acting for one
    /// of the account's resources (`resource`, an instance id): EBS's grantee
    /// `ACCOUNT:aws:ec2-infrastructure:i-…`. Unlike a service acting on its own, its
    /// calls are the account's: they are metered and written to the account's trail
    /// (`invokedBy` names the service).
    pub fn infrastructure(account_id: &str, service: &str, region: &str, resource: &str) -> Self {
        Caller {
            principal: Principal::Service {
                name: format!("{account_id}:aws:{service}-infrastructure:{resource}"),
                account: account_id.into(),
            },
            principal_id: None,
            via_service: Some(format!("{service}.{region}.amazonaws.com")),
            user_agent: format!("{service}.amazonaws.com"),
            source_ip: format!("{service}.amazonaws.com"),
            request_id: None,
        }
    }

    /// The same principal, calling through AWS service `service` (`ec2`, `rds`) in `region`.
    pub fn via(&self, service: &str, region: &str) -> Self {
        Caller {
            via_service: Some(format!("{service}.{region}.amazonaws.com")),
            user_agent: "AWS Internal".into(),
            source_ip: "AWS Internal".into(),
            request_id: None,
            ..self.clone()
        }
    }

    pub fn arn(&self) -> &str {
        self.principal.arn()
    }

    pub fn account_id(&self) -> &str {
        self.principal.account()
    }

    pub fn identity_type(&self) -> &'static str {
        self.principal.identity_type()
    }

    /// True for an AWS service acting on its own behalf (not for a principal calling
    /// through a service).
    pub fn is_aws_service(&self) -> bool {
        matches!(self.principal, Principal::Service { .. })
    }

    pub fn is_root(&self) -> bool {
        matches!(self.principal, Principal::Root { .. })
    }

    /// CloudTrail's `userName` lookup value.
    pub fn user_name(&self) -> String {
        match &self.principal {
            Principal::Root { .. } => "root".into(),
            Principal::User { name, .. } => name.clone(),
            Principal::AssumedRole { session, .. } => session.clone(),
            Principal::Service { name, .. } => name.clone(),
        }
    }
}

/// Why a request was denied (each has AWS's own wording).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    ExplicitDenyInKeyPolicy,
    ExplicitDenyInIdentityPolicy,
    /// The key policy delegates to the caller's account, but no identity policy allows.
    NoIdentityAllow,
    NoKeyPolicyAllow,
}

/// The key policy and identity policies' decision for one request.
pub fn decide(
    key_policy: &PolicyDocument,
    identity: &[PolicyDocument],
    req: &Request<'_>,
) -> Result<(), Denial> {
    let kp = key_policy.evaluate(req);
    if kp.deny {
        return Err(Denial::ExplicitDenyInKeyPolicy);
    }
    let id = crate::policy::evaluate_all(identity, req);
    let (id_allow, id_deny) = (id.allow, id.deny);
    if id_deny {
        return Err(Denial::ExplicitDenyInIdentityPolicy);
    }
    if kp.allow || (kp.allow_account && id_allow) {
        Ok(())
    } else if kp.allow_account {
        Err(Denial::NoIdentityAllow)
    } else {
        Err(Denial::NoKeyPolicyAllow)
    }
}

/// AWS's AccessDeniedException for a denial.
pub fn access_denied(caller: &Caller, action: &str, resource: &str, why: Denial) -> Error {
    let reason = match why {
        Denial::ExplicitDenyInKeyPolicy => {
            "with an explicit deny in a resource-based policy".to_string()
        }
        Denial::ExplicitDenyInIdentityPolicy => {
            "with an explicit deny in an identity-based policy".to_string()
        }
        Denial::NoIdentityAllow => {
            format!("because no identity-based policy allows the {action} action")
        }
        Denial::NoKeyPolicyAllow => {
            format!("because no resource-based policy allows the {action} action")
        }
    };
    Error::new(
        ErrorKind::AccessDenied,
        format!(
            "User: {} is not authorized to perform: {action} on resource: {resource} {reason}",
            caller.arn()
        ),
    )
}

/// The condition keys every KMS request carries.
pub fn base_context(caller: &Caller, key_region: &str) -> ConditionContext {
    let mut ctx = ConditionContext::new();
    ctx.set("kms:CallerAccount", caller.account_id())
        .set("aws:PrincipalArn", caller.principal.principal_arn())
        .set("aws:PrincipalAccount", caller.account_id())
        .set("aws:PrincipalType", caller.identity_type())
        .set("aws:RequestedRegion", key_region);
    if let Some(v) = &caller.via_service {
        ctx.set("kms:ViaService", v.clone());
    }
    ctx
}

/// The service endpoint prefix that owns an AWS managed key (`aws/ebs` is used by EC2).
fn svc_endpoint(service: &str) -> &str {
    match service {
        "ebs" => "ec2",
        other => other,
    }
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
