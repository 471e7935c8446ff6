//! Who may call EC2: every operation of the volume service is authorized by the
//! caller's IAM identity policies, with EC2's action names, resource ARNs and
//! condition keys as the Service Authorization Reference lists them ("Actions,
//! resources, and condition keys for Amazon EC2"; the EBS direct API's under
//! "… for Amazon Elastic Block Store"). docs/EBS.md §7 has the table.
//!
//! - The account root of the region's account, and AWS services, may do anything.
//! - Any other principal of the account needs an identity policy that allows the
//!   action on every resource the request names, and no explicit Deny for any of
//!   them. Principals of other accounts are refused (ebsim has no resource
//!   policies on volumes or snapshots; EBS snapshot sharing is not simulated).
//! - Each resource is evaluated with its own condition keys, as EC2 does: a new
//!   volume (`volume/*`, its id is not known yet) carries the request's
//!   `aws:RequestTag/…`, `aws:TagKeys`, `ec2:Encrypted`, `ec2:VolumeSize`,
//!   `ec2:VolumeType`, `ec2:KmsKeyId`…; an existing one its `ec2:ResourceTag/…`
//!   and attributes. So a statement with `aws:RequestTag/…` on `"Resource": "*"`
//!   fails for the request's other resources, as on EC2.
//! - Tags given at creation are also authorized as `ec2:CreateTags` on the new
//!   resource with `ec2:CreateAction` (EC2's "tag on create" rule).
//!
//! A denial is EC2's `UnauthorizedOperation` with AWS's message, whose "Encoded
//! authorization failure message" is the base64 of a JSON document in the shape
//! `aws sts decode-authorization-message` returns ([`decode_authorization_message`]).

use super::Ec2;
use super::model::{GIB, SnapshotRecord, Tag, VolumeRecord};
use crate::error::{Error, ErrorKind, Result};
use crate::kms::access::Caller;
use crate::policy::{ConditionContext, PolicyDocument, Request};
use serde_json::json;

/// `arn:aws:ec2:REGION:ACCOUNT:volume/vol-…` (`volume/*` for one being created).
pub fn volume_arn(region: &str, account: &str, id: &str) -> String {
    format!("arn:aws:ec2:{region}:{account}:volume/{id}")
}

/// `arn:aws:ec2:REGION::snapshot/snap-…`: snapshot ARNs name no account.
pub fn snapshot_arn(region: &str, id: &str) -> String {
    format!("arn:aws:ec2:{region}::snapshot/{id}")
}

/// `arn:aws:ec2:REGION:ACCOUNT:instance/i-…`.
pub fn instance_arn(region: &str, account: &str, id: &str) -> String {
    format!("arn:aws:ec2:{region}:{account}:instance/{id}")
}

/// One resource of a request as policies see it: its ARN (`*` for actions on no
/// resource) and the condition keys that come with it.
#[derive(Debug, Clone)]
pub struct Target {
    pub arn: String,
    keys: Vec<(String, Vec<String>)>,
}

impl Target {
    pub(super) fn new(arn: impl Into<String>) -> Self {
        Target {
            arn: arn.into(),
            keys: Vec::new(),
        }
    }

    /// Actions on no resource (`DescribeVolumes`, the account's EBS settings).
    pub(super) fn any() -> Self {
        Self::new("*")
    }

    pub(super) fn key(mut self, key: &str, value: impl Into<String>) -> Self {
        self.keys.push((key.to_string(), vec![value.into()]));
        self
    }

    fn key_opt(self, key: &str, value: Option<impl Into<String>>) -> Self {
        match value {
            Some(v) => self.key(key, v),
            None => self,
        }
    }

    /// `aws:ResourceTag/K` and `ec2:ResourceTag/K` for each tag of an existing resource.
    pub(super) fn resource_tags(mut self, tags: &[Tag]) -> Self {
        for t in tags {
            for prefix in ["aws:ResourceTag/", "ec2:ResourceTag/"] {
                self.keys
                    .push((format!("{prefix}{}", t.key), vec![t.value.clone()]));
            }
        }
        self
    }

    /// `aws:RequestTag/K` for each tag the request sets, and `aws:TagKeys`.
    pub(super) fn request_tags(mut self, tags: &[Tag]) -> Self {
        for t in tags {
            self.keys
                .push((format!("aws:RequestTag/{}", t.key), vec![t.value.clone()]));
        }
        if !tags.is_empty() {
            self.keys.push((
                "aws:TagKeys".into(),
                tags.iter().map(|t| t.key.clone()).collect(),
            ));
        }
        self
    }
}

/// What a volume that does not exist yet will be (CreateVolume's `volume*`).
pub(super) struct NewVolume<'a> {
    pub size_bytes: u64,
    pub volume_type: &'a str,
    pub iops: Option<u32>,
    pub throughput: Option<u32>,
    pub encrypted: bool,
    /// The KmsKeyId as the request gave it.
    pub kms_key_id: Option<&'a str>,
    pub zone: &'a str,
    pub snapshot: Option<&'a SnapshotRecord>,
    pub tags: &'a [Tag],
}

/// What a snapshot that does not exist yet will be (CreateSnapshot's and
/// CopySnapshot's new `snapshot*`).
pub(super) struct NewSnapshot<'a> {
    pub size_bytes: u64,
    pub encrypted: bool,
    /// The volume it is taken of (CreateSnapshot).
    pub parent_volume: Option<String>,
    /// The snapshot it is copied from (CopySnapshot).
    pub parent_snapshot: Option<String>,
    pub tags: &'a [Tag],
}

fn gib(bytes: u64) -> String {
    bytes.div_ceil(GIB).to_string()
}

impl Ec2 {
    pub(super) fn volume_arn(&self, id: &str) -> String {
        volume_arn(self.region(), self.kms.account_id(), id)
    }

    /// An existing volume: its id, attributes and tags.
    pub(super) fn volume_target(&self, v: &VolumeRecord) -> Target {
        Target::new(self.volume_arn(&v.volume_id))
            .key("ec2:VolumeID", &v.volume_id)
            .key("ec2:VolumeSize", gib(v.size_bytes))
            .key("ec2:VolumeType", &v.volume_type)
            .key("ec2:Encrypted", v.encrypted.to_string())
            .key("ec2:AvailabilityZone", &v.availability_zone)
            .key_opt("ec2:VolumeIops", v.iops.map(|i| i.to_string()))
            .key_opt("ec2:VolumeThroughput", v.throughput.map(|t| t.to_string()))
            .key_opt(
                "ec2:ParentSnapshot",
                v.snapshot_id
                    .as_deref()
                    .map(|s| snapshot_arn(self.region(), s)),
            )
            .resource_tags(&v.tags)
    }

    /// The volume CreateVolume makes (`volume/*`) with the request's keys.
    pub(super) fn new_volume_target(&self, n: &NewVolume<'_>) -> Target {
        Target::new(self.volume_arn("*"))
            .key("ec2:VolumeSize", gib(n.size_bytes))
            .key("ec2:VolumeType", n.volume_type)
            .key("ec2:Encrypted", n.encrypted.to_string())
            .key("ec2:AvailabilityZone", n.zone)
            .key_opt("ec2:VolumeIops", n.iops.map(|i| i.to_string()))
            .key_opt("ec2:VolumeThroughput", n.throughput.map(|t| t.to_string()))
            .key_opt("ec2:KmsKeyId", n.kms_key_id)
            .key_opt(
                "ec2:ParentSnapshot",
                n.snapshot
                    .map(|s| snapshot_arn(self.region(), &s.snapshot_id)),
            )
            .request_tags(n.tags)
    }

    /// An existing snapshot of `region` (CopySnapshot's source may be another's).
    pub(super) fn snapshot_target(&self, region: &str, s: &SnapshotRecord) -> Target {
        Target::new(snapshot_arn(region, &s.snapshot_id))
            .key("ec2:SnapshotID", &s.snapshot_id)
            .key("ec2:Encrypted", s.encrypted.to_string())
            .key("ec2:VolumeSize", gib(s.size_bytes))
            .key("ec2:Owner", self.kms.account_id())
            .key(
                "ec2:SnapshotTime",
                crate::clock::cloudtrail_time(&s.start_time),
            )
            .key(
                "ec2:ParentVolume",
                volume_arn(region, self.kms.account_id(), &s.volume_id),
            )
            .resource_tags(&s.tags)
    }

    /// The snapshot CreateSnapshot or CopySnapshot makes (`snapshot/*`).
    pub(super) fn new_snapshot_target(&self, n: &NewSnapshot<'_>) -> Target {
        Target::new(snapshot_arn(self.region(), "*"))
            .key("ec2:VolumeSize", gib(n.size_bytes))
            .key("ec2:Encrypted", n.encrypted.to_string())
            .key("ec2:Owner", self.kms.account_id())
            .key_opt("ec2:ParentVolume", n.parent_volume.clone())
            .key_opt("ec2:ParentSnapshot", n.parent_snapshot.clone())
            .request_tags(n.tags)
    }

    /// The instance an attachment names: a simulated instance with its type, zone,
    /// image and tags; this host's (or any other id the CLI gives) with its id alone.
    pub(super) fn instance_target(&self, instance_id: &str) -> Target {
        if let Some(i) = self
            .instances()
            .ok()
            .and_then(|all| all.into_iter().find(|i| i.instance_id == instance_id))
        {
            return self.instance_record_target(&i);
        }
        Target::new(instance_arn(
            self.region(),
            self.kms.account_id(),
            instance_id,
        ))
        .key("ec2:InstanceID", instance_id)
    }

    /// The condition keys of every request: the caller, the time, the region.
    fn global_keys(&self, caller: &Caller) -> Vec<(String, Vec<String>)> {
        let now = self.kms.clock().now();
        let mut keys = vec![
            (
                "aws:PrincipalArn",
                caller.principal.principal_arn().to_string(),
            ),
            ("aws:PrincipalAccount", caller.account_id().to_string()),
            ("aws:PrincipalType", caller.identity_type().to_string()),
            ("aws:RequestedRegion", self.region().to_string()),
            ("aws:CurrentTime", crate::clock::cloudtrail_time(&now)),
            ("aws:EpochTime", now.timestamp().to_string()),
            ("aws:SourceIp", caller.source_ip.clone()),
            ("aws:ViaAWSService", "false".to_string()),
            ("ec2:Region", self.region().to_string()),
        ];
        if let Some(id) = &caller.principal_id {
            keys.push(("aws:userid", id.clone()));
        }
        if let crate::iam::Principal::User { name, .. } = &caller.principal {
            keys.push(("aws:username", name.clone()));
        }
        keys.into_iter()
            .map(|(k, v)| (k.to_string(), vec![v]))
            .collect()
    }

    /// The caller's identity policies (IAM opened on first use, so callers that
    /// never need it never create iam.db).
    fn identity_policies(&self, caller: &Caller) -> Result<Vec<PolicyDocument>> {
        let mut iam = self.iam.lock().unwrap_or_else(|p| p.into_inner());
        if iam.is_none() {
            *iam = Some(crate::iam::Iam::open(&self.root)?);
        }
        iam.as_ref()
            .expect("opened above")
            .identity_policies(&caller.principal)
    }

    /// Decides whether `caller` may perform `action` (`ec2:CreateVolume`) on every
    /// one of `targets`: UnauthorizedOperation otherwise.
    pub(super) fn authorize(
        &self,
        caller: &Caller,
        action: &str,
        targets: &[Target],
    ) -> Result<()> {
        let same_account = caller.account_id() == self.kms.account_id();
        if caller.is_aws_service() || (caller.is_root() && same_account) {
            return Ok(());
        }
        if !self.owner.is_ec2() {
            // RDS's storage: RDS authorized its own action (rds:…) first.
            return Ok(());
        }
        let policies = if same_account {
            self.identity_policies(caller)?
        } else {
            Vec::new()
        };
        let global = self.global_keys(caller);
        let mut refused: Option<(&Target, bool, Vec<String>)> = None;
        for t in targets {
            let mut ctx = ConditionContext::new();
            for (k, v) in global.iter().chain(&t.keys) {
                ctx.set_many(k, v.iter().cloned());
            }
            let req = Request {
                principal: caller.principal.as_request(),
                action,
                resource: &t.arn,
                context: &ctx,
            };
            let v = crate::policy::evaluate_all(&policies, &req);
            if v.deny {
                // An explicit Deny on any resource decides the request.
                let sids = denying_statements(&policies, &req);
                refused = Some((t, true, sids));
                break;
            }
            if !v.allow && refused.is_none() {
                refused = Some((t, false, Vec::new()));
            }
        }
        match refused {
            None => Ok(()),
            Some((t, explicit, sids)) => {
                Err(unauthorized(caller, action, t, &global, explicit, &sids))
            }
        }
    }

    /// EC2's tag-on-create rule: tags given to a new resource also need
    /// `ec2:CreateTags` on it, with `ec2:CreateAction` naming the operation.
    pub(super) fn authorize_tags(
        &self,
        caller: &Caller,
        create_action: &str,
        new: &Target,
        tags: &[Tag],
    ) -> Result<()> {
        if tags.is_empty() {
            return Ok(());
        }
        let t = Target::new(new.arn.clone())
            .key("ec2:CreateAction", create_action)
            .request_tags(tags);
        self.authorize(caller, "ec2:CreateTags", &[t])
    }
}

/// The Sids of the Deny statements that matched (for the encoded message).
fn denying_statements(policies: &[PolicyDocument], req: &Request<'_>) -> Vec<String> {
    policies
        .iter()
        .flat_map(|d| &d.statements)
        .filter(|s| s.effect == crate::policy::Effect::Deny && s.applies(req))
        .map(|s| s.sid.clone().unwrap_or_default())
        .collect()
}

/// EC2's UnauthorizedOperation, with AWS's message and an encoded authorization
/// failure message that says why.
fn unauthorized(
    caller: &Caller,
    action: &str,
    t: &Target,
    global: &[(String, Vec<String>)],
    explicit: bool,
    sids: &[String],
) -> Error {
    let reason = if explicit {
        "with an explicit deny in an identity-based policy".to_string()
    } else {
        format!("because no identity-based policy allows the {action} action")
    };
    let conditions: Vec<serde_json::Value> = global
        .iter()
        .chain(&t.keys)
        .map(|(k, vs)| {
            json!({
                "key": k,
                "values": { "items": vs.iter().map(|v| json!({ "value": v })).collect::<Vec<_>>() },
            })
        })
        .collect();
    let decoded = json!({
        "allowed": false,
        "explicitDeny": explicit,
        "matchedStatements": {
            "items": sids.iter().map(|sid| json!({ "statementId": sid, "effect": "DENY" })).collect::<Vec<_>>(),
        },
        "failures": { "items": [] },
        "context": {
            "principal": {
                "id": caller.principal_id.clone().unwrap_or_else(|| caller.account_id().to_string()),
                "arn": caller.arn(),
            },
            "action": action,
            "resource": t.arn,
            "conditions": { "items": conditions },
        },
    });
    let encoded = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .encode(serde_json::to_vec(&decoded).expect("serializes"))
    };
    Error::new(
        ErrorKind::UnauthorizedOperation,
        format!(
            "You are not authorized to perform this operation. User: {} is not authorized to perform: {action} on resource: {} {reason}. Encoded authorization failure message: {encoded}",
            caller.arn(),
            t.arn
        ),
    )
}

/// The document behind an UnauthorizedOperation's "Encoded authorization failure
/// message" (what `aws sts decode-authorization-message` would print as its
/// `DecodedMessage`): `allowed`, `explicitDeny`, `matchedStatements` (the Sids of
/// the Deny statements that matched), and the request's `context` (principal,
/// action, resource, every condition key with its values). Accepts the whole
/// error message too.
pub fn decode_authorization_message(encoded: &str) -> Result<serde_json::Value> {
    use base64::Engine;
    let blob = encoded
        .rsplit("Encoded authorization failure message: ")
        .next()
        .unwrap_or(encoded)
        .trim();
    base64::engine::general_purpose::STANDARD
        .decode(blob)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidParameterValue,
                "The encoded authorization failure message is not one ebsim wrote.",
            )
        })
}
