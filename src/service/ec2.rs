//! EC2's operation table (EBS volumes, snapshots, the region's encryption
//! settings, and ebsim's own RekeyVolume and Cleanup): one variant per operation,
//! its AWS name, its request in EC2's member names (`src/ec2/model.rs`, and the
//! small requests below) and the one place it is run. Authorization, validation and
//! the CloudTrail record happen in the engine (`Ec2::call`), the same for every
//! front end.
//!
//! AttachVolume, DetachVolume, CreateSnapshot and TerminateInstances are in the
//! table but run by [`super::Services::ec2`] through `super::attach`: AttachVolume
//! starts an attachment process for a simulated instance (RunInstances) with the
//! command line the front end's launcher gives; DetachVolume stops one;
//! CreateSnapshot is taken by one when the volume is attached through FUSE or
//! NBD; TerminateInstances detaches an instance's volumes first. The CLI's
//! `attach-volume --fuse/--nbd` (this host as the instance) goes through
//! `super::attach::attach_volume`.

use super::{serialization_error, to_value, unknown_operation};
use crate::ec2::Ec2;
use crate::ec2::model::*;
use crate::error::{Error, ErrorKind, Result};
use crate::kms::access::Caller;
use serde::Deserialize;
use serde_json::{Value, json};

/// An operation whose request has only EC2's `DryRun` (the account's EBS
/// encryption settings, ebsim's Cleanup).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DryRunRequest {
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DeleteVolumeRequest {
    pub volume_id: String,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ModifyEbsDefaultKmsKeyIdRequest {
    pub kms_key_id: String,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateSnapshotRequest {
    pub volume_id: String,
    pub description: String,
    /// Only `ResourceType=snapshot` (see [`snapshot_tags`]).
    pub tag_specifications: Vec<TagSpecification>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DescribeSnapshotsRequest {
    pub snapshot_ids: Vec<String>,
    pub filters: Vec<Filter>,
    /// Accepted and ignored: every snapshot here is the account's own.
    pub owner_ids: Vec<String>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DeleteSnapshotRequest {
    pub snapshot_id: String,
    pub dry_run: bool,
}

/// Sent to the destination region (the request context's).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CopySnapshotRequest {
    pub source_region: String,
    pub source_snapshot_id: String,
    pub encrypted: Option<bool>,
    pub kms_key_id: Option<String>,
    pub description: Option<String>,
    pub tag_specifications: Vec<TagSpecification>,
    /// What SDKs add for a copy from another region (botocore's
    /// `inject_presigned_url_ec2`): the region the request is sent to, which
    /// must be this one.
    pub destination_region: Option<String>,
    /// The SDK's presigned CopySnapshot request for the source region. Accepted
    /// here as it is; verifying its SigV4 signature is the wire server's work
    /// (the service layer knows no credentials): ebsim's source and destination
    /// regions share one data root, so the copy itself does not need it.
    pub presigned_url: Option<String>,
    pub dry_run: bool,
}

/// CreateTags and DeleteTags.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TagsRequest {
    /// Volume and snapshot ids.
    pub resources: Vec<String>,
    pub tags: Vec<TagRef>,
    pub dry_run: bool,
}

/// The EBS direct API's ListChangedBlocks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ListChangedBlocksRequest {
    pub first_snapshot_id: String,
    pub second_snapshot_id: String,
}

/// ebsim's RekeyVolume.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RekeyVolumeRequest {
    pub volume_id: String,
    pub kms_key_id: String,
    pub dry_run: bool,
}

macro_rules! operations {
    ($( $variant:ident => $name:literal ($req:ty); )*) => {
        /// One EC2 request, in EC2's member names.
        #[derive(Debug, Clone)]
        pub enum Ec2Request {
            $( $variant($req), )*
        }

        /// Every EC2 operation ebsim serves, by its AWS name.
        pub const OPERATIONS: &[&str] = &[$( $name, )*];

        impl Ec2Request {
            /// The operation's AWS name (`CreateVolume`).
            pub fn name(&self) -> &'static str {
                match self {
                    $( Ec2Request::$variant(_) => $name, )*
                }
            }

            /// Reads a request from its operation name (EC2's `Action`) and a body
            /// in EC2's member names.
            pub fn from_json(name: &str, body: Value) -> Result<Self> {
                match name {
                    $( $name => serde_json::from_value(body)
                        .map(Ec2Request::$variant)
                        .map_err(|e| serialization_error(name, e)), )*
                    _ => Err(unknown_operation("EC2", name)),
                }
            }
        }
    };
}

operations! {
    CreateVolume => "CreateVolume" (CreateVolumeRequest);
    DescribeVolumes => "DescribeVolumes" (DescribeVolumesRequest);
    DeleteVolume => "DeleteVolume" (DeleteVolumeRequest);
    ModifyVolume => "ModifyVolume" (ModifyVolumeRequest);
    EnableEbsEncryptionByDefault => "EnableEbsEncryptionByDefault" (DryRunRequest);
    DisableEbsEncryptionByDefault => "DisableEbsEncryptionByDefault" (DryRunRequest);
    GetEbsEncryptionByDefault => "GetEbsEncryptionByDefault" (DryRunRequest);
    GetEbsDefaultKmsKeyId => "GetEbsDefaultKmsKeyId" (DryRunRequest);
    ModifyEbsDefaultKmsKeyId => "ModifyEbsDefaultKmsKeyId" (ModifyEbsDefaultKmsKeyIdRequest);
    ResetEbsDefaultKmsKeyId => "ResetEbsDefaultKmsKeyId" (DryRunRequest);
    AttachVolume => "AttachVolume" (super::attach::AttachVolumeRequest);
    DetachVolume => "DetachVolume" (super::attach::DetachVolumeRequest);
    CreateSnapshot => "CreateSnapshot" (CreateSnapshotRequest);
    DescribeSnapshots => "DescribeSnapshots" (DescribeSnapshotsRequest);
    DeleteSnapshot => "DeleteSnapshot" (DeleteSnapshotRequest);
    CopySnapshot => "CopySnapshot" (CopySnapshotRequest);
    CreateTags => "CreateTags" (TagsRequest);
    DeleteTags => "DeleteTags" (TagsRequest);
    DescribeTags => "DescribeTags" (DescribeTagsRequest);
    DescribeAvailabilityZones => "DescribeAvailabilityZones" (DescribeAvailabilityZonesRequest);
    DescribeRegions => "DescribeRegions" (DescribeRegionsRequest);
    ListChangedBlocks => "ListChangedBlocks" (ListChangedBlocksRequest);
    RekeyVolume => "RekeyVolume" (RekeyVolumeRequest);
    Cleanup => "Cleanup" (DryRunRequest);
    RunInstances => "RunInstances" (RunInstancesRequest);
    DescribeInstances => "DescribeInstances" (DescribeInstancesRequest);
    TerminateInstances => "TerminateInstances" (TerminateInstancesRequest);
}

impl Ec2Request {
    /// Runs it: the one place every front end's EC2 calls go through. Long
    /// operations stop and report progress through what the engine was opened with
    /// (`super::Ec2Hooks`).
    pub(super) fn run(self, ec2: &Ec2, caller: &Caller) -> Result<Value> {
        use Ec2Request as R;
        match self {
            R::CreateVolume(r) => ec2.create_volume(caller, r).map(to_value),
            R::DescribeVolumes(r) => ec2.describe_volumes(caller, r).map(to_value),
            R::DeleteVolume(r) => ec2
                .delete_volume(caller, &r.volume_id, r.dry_run)
                .map(to_value),
            R::ModifyVolume(r) => ec2.modify_volume(caller, r).map(to_value),
            R::EnableEbsEncryptionByDefault(r) => ec2
                .set_ebs_encryption_by_default_with(caller, true, r.dry_run)
                .map(to_value),
            R::DisableEbsEncryptionByDefault(r) => ec2
                .set_ebs_encryption_by_default_with(caller, false, r.dry_run)
                .map(to_value),
            R::GetEbsEncryptionByDefault(r) => ec2
                .get_ebs_encryption_by_default_with(caller, r.dry_run)
                .map(to_value),
            R::GetEbsDefaultKmsKeyId(r) => ec2
                .get_ebs_default_kms_key_id_with(caller, r.dry_run)
                .map(to_value),
            R::ModifyEbsDefaultKmsKeyId(r) => ec2
                .modify_ebs_default_kms_key_id_with(caller, &r.kms_key_id, r.dry_run)
                .map(to_value),
            R::ResetEbsDefaultKmsKeyId(r) => ec2
                .reset_ebs_default_kms_key_id_with(caller, r.dry_run)
                .map(to_value),
            R::AttachVolume(_)
            | R::DetachVolume(_)
            | R::CreateSnapshot(_)
            | R::TerminateInstances(_) => {
                unreachable!("Services::ec2 runs them through service::attach")
            }
            R::DescribeSnapshots(r) => ec2
                .describe_snapshots_with(caller, &r.snapshot_ids, &r.filters, r.dry_run)
                .map(to_value),
            R::DeleteSnapshot(r) => ec2
                .delete_snapshot_with(caller, &r.snapshot_id, r.dry_run)
                .map(to_value),
            R::CopySnapshot(r) => {
                if let Some(d) = r.destination_region.as_deref()
                    && d != ec2.region()
                {
                    return Err(Error::new(
                        ErrorKind::InvalidParameterValue,
                        format!(
                            "DestinationRegion {d} is not the region this request was sent to ({}).",
                            ec2.region()
                        ),
                    ));
                }
                let tags = snapshot_tags(r.tag_specifications)?;
                let s = ec2.copy_snapshot_with(
                    caller,
                    &r.source_region,
                    &r.source_snapshot_id,
                    r.encrypted,
                    r.kms_key_id.as_deref(),
                    r.description.as_deref(),
                    tags,
                    r.dry_run,
                )?;
                // CopySnapshot answers with the new id only.
                Ok(json!({ "SnapshotId": s.snapshot_id }))
            }
            R::ListChangedBlocks(r) => ec2
                .list_changed_blocks(caller, &r.first_snapshot_id, &r.second_snapshot_id)
                .map(to_value),
            R::CreateTags(r) => ec2
                .create_tags(caller, &r.resources, &r.tags, r.dry_run)
                .map(to_value),
            R::DeleteTags(r) => ec2
                .delete_tags(caller, &r.resources, &r.tags, r.dry_run)
                .map(to_value),
            R::DescribeTags(r) => ec2.describe_tags(caller, r).map(to_value),
            R::DescribeAvailabilityZones(r) => {
                ec2.describe_availability_zones(caller, r).map(to_value)
            }
            R::DescribeRegions(r) => ec2.describe_regions(caller, r).map(to_value),
            R::RekeyVolume(r) => rekey_volume(ec2, caller, r),
            R::Cleanup(r) => ec2.cleanup_with(caller, r.dry_run).map(to_value),
            R::RunInstances(r) => ec2.run_instances(caller, r).map(to_value),
            R::DescribeInstances(r) => ec2.describe_instances(caller, r).map(to_value),
        }
    }
}

/// RekeyVolume, its progress reported as `re-keying <volume>` through the engine's
/// reporter. The re-key reports its end more than once, and nothing when it fails
/// part way; the reporter hears of the end once, after the call, either way (a
/// terminal's bar closes when its work is done).
fn rekey_volume(ec2: &Ec2, caller: &Caller, r: RekeyVolumeRequest) -> Result<Value> {
    let what = format!("re-keying {}", r.volume_id);
    let report = ec2.progress_reporter();
    let last_total = std::cell::Cell::new(None);
    let progress = |done: u64, total: u64| {
        last_total.set(Some(total));
        if let Some(p) = report.as_deref().filter(|_| done < total) {
            p(&what, done, total);
        }
    };
    let out = ec2.rekey_volume_with(caller, &r.volume_id, &r.kms_key_id, r.dry_run, &progress);
    if let (Some(p), Some(total)) = (report.as_deref(), last_total.get()) {
        p(&what, total, total);
    }
    out.map(to_value)
}

/// The tags of `specs`, which may only name the `snapshot` resource type.
pub fn snapshot_tags(specs: Vec<TagSpecification>) -> Result<Vec<Tag>> {
    let mut tags = Vec::new();
    for spec in specs {
        if spec.resource_type != "snapshot" {
            return Err(Error::new(
                ErrorKind::InvalidParameterValue,
                format!(
                    "'{}' is not a valid taggable resource type for this operation.",
                    spec.resource_type
                ),
            ));
        }
        tags.extend(spec.tags);
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_reads_from_json_under_its_name() {
        for name in OPERATIONS {
            match Ec2Request::from_json(name, json!({})) {
                Ok(r) => assert_eq!(r.name(), *name),
                Err(e) => assert_eq!(e.kind(), ErrorKind::Serialization, "{name}: {e}"),
            }
        }
        let e = Ec2Request::from_json("AttachVolumes", json!({})).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnknownOperation);
        let r = Ec2Request::from_json(
            "CreateVolume",
            json!({
                "Size": 8,
                "Encrypted": true,
                "KmsKeyId": "alias/x",
                "TagSpecifications": [
                    {"ResourceType": "volume", "Tags": [{"Key": "k", "Value": "v"}]}
                ],
                "DryRun": true
            }),
        )
        .unwrap();
        match r {
            Ec2Request::CreateVolume(c) => {
                assert_eq!(c.size, Some(8));
                assert_eq!(c.encrypted, Some(true));
                assert_eq!(c.kms_key_id.as_deref(), Some("alias/x"));
                assert_eq!(c.tag_specifications[0].tags[0].key, "k");
                assert!(c.dry_run);
            }
            other => panic!("{other:?}"),
        }
        let e = Ec2Request::from_json("DeleteVolume", json!({"VolumeId": 7})).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Serialization);
    }

    #[test]
    fn snapshot_tags_refuse_other_resource_types() {
        let spec = |t: &str| TagSpecification {
            resource_type: t.into(),
            tags: vec![Tag {
                key: "k".into(),
                value: "v".into(),
            }],
        };
        assert_eq!(snapshot_tags(vec![spec("snapshot")]).unwrap().len(), 1);
        let e = snapshot_tags(vec![spec("snapshot"), spec("volume")]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidParameterValue);
    }
}

#[cfg(test)]
mod services_tests {
    use crate::clock::Clock;
    use crate::home::DataRoot;
    use crate::kms::access::Caller;
    use crate::service::{Ec2Hooks, RequestContext, Services, Source};
    use serde_json::json;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Requests read from EC2's member names run on one engine per region, opened
    /// once with the front end's hooks.
    #[test]
    fn services_run_ec2_requests_on_one_engine_per_region() {
        let dir = tempfile::tempdir().unwrap();
        let root = DataRoot::open(dir.path()).unwrap();
        let account = root.config().unwrap().account_id;
        let opened = Arc::new(AtomicUsize::new(0));
        let counted = opened.clone();
        let services =
            Services::new(root, Clock::manual(chrono::Utc::now())).with_ec2_hooks(move || {
                counted.fetch_add(1, Ordering::Relaxed);
                Ec2Hooks::default()
            });
        let ctx =
            |region: &str| RequestContext::new(Caller::account_root(&account), region, Source::Cli);
        let east = ctx("us-east-1");
        let run = |ctx: &RequestContext, name: &str, body| {
            services.ec2(ctx, super::Ec2Request::from_json(name, body).unwrap())
        };
        let v = run(&east, "CreateVolume", json!({"SizeBytes": 1 << 20})).unwrap();
        let id = v["VolumeId"].as_str().unwrap().to_string();
        assert_eq!(v["Encrypted"], false);
        let d = run(&east, "DescribeVolumes", json!({"VolumeIds": [id]})).unwrap();
        assert_eq!(d["Volumes"][0]["State"], "available");
        assert_eq!(
            run(
                &east,
                "DeleteVolume",
                json!({"VolumeId": id, "DryRun": true})
            )
            .unwrap_err()
            .kind(),
            crate::ErrorKind::Ec2DryRun
        );
        assert_eq!(
            run(&east, "DeleteVolume", json!({"VolumeId": id})).unwrap(),
            json!(null)
        );
        assert_eq!(opened.load(Ordering::Relaxed), 1);
        // Another region: its own engine, and none of the first one's volumes.
        let west = ctx("us-west-2");
        let d = run(&west, "DescribeVolumes", json!({})).unwrap();
        assert_eq!(d["Volumes"], json!([]));
        assert_eq!(opened.load(Ordering::Relaxed), 2);
    }
}
