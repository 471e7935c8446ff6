//! EC2's volume shapes with AWS's member names, and the record ebsim keeps per volume.

use crate::clock::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TagSpecification {
    pub resource_type: String,
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Filter {
    pub name: String,
    pub values: Vec<String>,
}

/// An attachment as ebsim records it: EC2's fields plus what detach needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    pub instance_id: String,
    pub device: String,
    pub attach_time: Timestamp,
    /// The process holding the attachment.
    pub pid: u32,
    /// The grant that let the volume service decrypt the data key (encrypted volumes).
    pub grant_id: Option<String>,
    pub key_arn: Option<String>,
    /// The FUSE mount serving the volume (`attach-volume --fuse DIR`).
    #[serde(default)]
    pub fuse_dir: Option<String>,
    /// `ebsim mount`: the loop device on the FUSE file and where its filesystem is mounted.
    #[serde(default)]
    pub loop_device: Option<String>,
    #[serde(default)]
    pub mounted_at: Option<String>,
    /// The NBD export (`attach-volume --nbd`): its URI, and its unix socket file.
    #[serde(default)]
    pub nbd_uri: Option<String>,
    #[serde(default)]
    pub nbd_socket: Option<String>,
}

/// One volume, as stored in `ec2.db`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub volume_id: String,
    pub size_bytes: u64,
    pub availability_zone: String,
    pub create_time: Timestamp,
    pub encrypted: bool,
    pub kms_key_arn: Option<String>,
    pub snapshot_id: Option<String>,
    /// `available` or `in-use` (`creating` and `deleting` never outlive a call).
    pub state: String,
    pub volume_type: String,
    pub iops: Option<u32>,
    pub throughput: Option<u32>,
    pub tags: Vec<Tag>,
    pub attachment: Option<AttachmentRecord>,
    /// EC2's DataEncryptionKeyId lineage of the volume's data key.
    #[serde(default)]
    pub data_key_id: Option<String>,
    /// Why the volume is in the `error` state (worked out when it is read, never
    /// stored: an attachment whose process died while the host still holds it).
    #[serde(default, skip_serializing)]
    pub state_message: Option<String>,
}

pub const GIB: u64 = 1 << 30;

impl VolumeRecord {
    /// EC2's `Size`: GiB, rounded up (an ebsim `--size-bytes` volume below 1 GiB shows 1).
    pub fn size_gib(&self) -> u64 {
        self.size_bytes.div_ceil(GIB)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeAttachment {
    pub attach_time: crate::kms::api::Time,
    pub device: String,
    pub instance_id: String,
    pub state: String,
    pub volume_id: String,
    pub delete_on_termination: bool,
}

/// `Volume` in EC2's DescribeVolumes / CreateVolume responses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Volume {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Vec<VolumeAttachment>>,
    pub availability_zone: String,
    pub create_time: crate::kms::api::Time,
    pub encrypted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    pub size: u64,
    pub snapshot_id: String,
    pub state: String,
    pub volume_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iops: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    pub volume_type: String,
    pub multi_attach_enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throughput: Option<u32>,
    /// ebsim's own member: the exact size in bytes (`Size` is in GiB).
    pub size_bytes: u64,
    /// ebsim's own member: why the volume is in the `error` state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_message: Option<String>,
}

impl Volume {
    /// `with_attachments`: DescribeVolumes lists them (possibly empty); CreateVolume
    /// has no such member.
    pub fn from_record(r: &VolumeRecord, with_attachments: bool) -> Self {
        Volume {
            attachments: with_attachments.then(|| {
                r.attachment
                    .iter()
                    .map(|a| VolumeAttachment {
                        attach_time: crate::kms::api::Time(a.attach_time),
                        device: a.device.clone(),
                        instance_id: a.instance_id.clone(),
                        // AWS's attachment state for one that cannot be detached
                        // cleanly yet.
                        state: if r.state == "error" {
                            "busy".into()
                        } else {
                            "attached".into()
                        },
                        volume_id: r.volume_id.clone(),
                        delete_on_termination: false,
                    })
                    .collect()
            }),
            availability_zone: r.availability_zone.clone(),
            create_time: crate::kms::api::Time(r.create_time),
            encrypted: r.encrypted,
            kms_key_id: r.kms_key_arn.clone(),
            size: r.size_gib(),
            snapshot_id: r.snapshot_id.clone().unwrap_or_default(),
            state: r.state.clone(),
            volume_id: r.volume_id.clone(),
            iops: r.iops,
            tags: r.tags.clone(),
            volume_type: r.volume_type.clone(),
            multi_attach_enabled: false,
            throughput: r.throughput,
            size_bytes: r.size_bytes,
            state_message: r.state_message.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateVolumeRequest {
    pub availability_zone: Option<String>,
    /// GiB.
    pub size: Option<u64>,
    /// ebsim: the exact size in bytes (a multiple of 4096), for small test volumes.
    pub size_bytes: Option<u64>,
    pub encrypted: Option<bool>,
    pub kms_key_id: Option<String>,
    pub snapshot_id: Option<String>,
    pub volume_type: Option<String>,
    pub iops: Option<u32>,
    pub throughput: Option<u32>,
    pub tag_specifications: Vec<TagSpecification>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DescribeVolumesRequest {
    pub volume_ids: Vec<String>,
    pub filters: Vec<Filter>,
    pub max_results: Option<u32>,
    pub next_token: Option<String>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeVolumesResponse {
    pub volumes: Vec<Volume>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ModifyVolumeRequest {
    pub volume_id: String,
    /// GiB.
    pub size: Option<u64>,
    /// ebsim: the new exact size in bytes.
    pub size_bytes: Option<u64>,
    pub volume_type: Option<String>,
    pub iops: Option<u32>,
    pub throughput: Option<u32>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeModification {
    pub volume_id: String,
    pub modification_state: String,
    pub target_size: u64,
    pub target_iops: Option<u32>,
    pub target_volume_type: String,
    pub target_throughput: Option<u32>,
    pub original_size: u64,
    pub original_iops: Option<u32>,
    pub original_volume_type: String,
    pub original_throughput: Option<u32>,
    pub progress: u32,
    pub start_time: crate::kms::api::Time,
    pub end_time: crate::kms::api::Time,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ModifyVolumeResponse {
    pub volume_modification: VolumeModification,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EbsEncryptionByDefault {
    pub ebs_encryption_by_default: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sse_type: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EbsDefaultKmsKeyId {
    pub kms_key_id: String,
}

/// One snapshot, as stored in `ec2.db`: EC2's fields, the wrapped data key and the
/// manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub snapshot_id: String,
    /// The source volume (`vol-ffffffff` for a copy, as EC2 reports).
    pub volume_id: String,
    pub size_bytes: u64,
    pub start_time: Timestamp,
    pub description: String,
    pub encrypted: bool,
    pub kms_key_arn: Option<String>,
    /// The data key as KMS wrapped it, bound to `{"aws:ebs:id": key_context_id}`.
    pub wrapped_key: Option<Vec<u8>>,
    pub key_context_id: Option<String>,
    /// EC2's DataEncryptionKeyId: the same for every volume and snapshot that
    /// shares one data key.
    pub data_key_id: Option<String>,
    /// The snapshot this one was taken incrementally against.
    pub parent: Option<String>,
    pub tags: Vec<Tag>,
    /// Block index (offset / 512 KiB) → SHA-256 of the stored block; absent = zeros.
    pub blocks: std::collections::BTreeMap<u64, String>,
    /// `pending` while its blocks are written, `completed` once its manifest is
    /// committed, `error` when it was interrupted (records from before states were
    /// kept are completed).
    #[serde(default = "completed")]
    pub state: String,
    /// Why a snapshot is in the `error` state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_message: Option<String>,
    /// Percent of its blocks written (100 once completed).
    #[serde(default = "hundred")]
    pub progress: u32,
    /// A snapshot being written through the EBS direct APIs (StartSnapshot,
    /// PutSnapshotBlock, CompleteSnapshot) while it is `pending`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct: Option<DirectWrite>,
}

/// The state of a snapshot written block by block (src/ec2/direct.rs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectWrite {
    /// Past this time, a snapshot still `pending` goes to `error` (StartSnapshot's
    /// Timeout, in minutes, from its start).
    pub deadline: Timestamp,
    pub timeout_minutes: u32,
    /// StartSnapshot's ClientToken (idempotency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    /// StartSnapshot's SseType: `sse-ebs` (the AWS managed key), `sse-kms`, `none`.
    pub sse_type: String,
    /// Block index → base64 SHA-256 of the plaintext written (what
    /// CompleteSnapshot counts and checks its aggregated checksum against).
    pub written: std::collections::BTreeMap<u64, String>,
}

fn completed() -> String {
    "completed".into()
}

fn hundred() -> u32 {
    100
}

impl SnapshotRecord {
    pub fn is_completed(&self) -> bool {
        self.state == "completed"
    }
}

/// `Snapshot` in EC2's DescribeSnapshots / CreateSnapshot / CopySnapshot responses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Snapshot {
    pub description: String,
    pub encrypted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    pub owner_id: String,
    pub progress: String,
    pub snapshot_id: String,
    pub start_time: crate::kms::api::Time,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_message: Option<String>,
    pub volume_id: String,
    pub volume_size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_encryption_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    pub storage_tier: String,
    /// ebsim's own members: the exact size, and how many 512 KiB blocks it stores.
    pub size_bytes: u64,
    pub block_count: u64,
}

impl Snapshot {
    pub fn from_record(r: &SnapshotRecord, owner: &str) -> Self {
        Snapshot {
            description: r.description.clone(),
            encrypted: r.encrypted,
            kms_key_id: r.kms_key_arn.clone(),
            owner_id: owner.into(),
            progress: format!("{}%", r.progress),
            snapshot_id: r.snapshot_id.clone(),
            start_time: crate::kms::api::Time(r.start_time),
            state: r.state.clone(),
            state_message: r.state_message.clone(),
            volume_id: r.volume_id.clone(),
            volume_size: r.size_bytes.div_ceil(GIB),
            data_encryption_key_id: r.data_key_id.clone(),
            tags: r.tags.clone(),
            storage_tier: "standard".into(),
            size_bytes: r.size_bytes,
            block_count: r.blocks.len() as u64,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeSnapshotsResponse {
    pub snapshots: Vec<Snapshot>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChangedBlock {
    pub block_index: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_block_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub second_block_token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListChangedBlocksResponse {
    pub changed_blocks: Vec<ChangedBlock>,
    pub expiry_time: crate::kms::api::Time,
    pub volume_size: u64,
    pub block_size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

// ---- the EBS direct APIs (src/ec2/direct.rs) --------------------------------

/// Where a page of ListSnapshotBlocks / ListChangedBlocks starts, and its size.
#[derive(Debug, Clone, Default)]
pub struct BlockPage {
    pub next_token: Option<String>,
    pub max_results: Option<u64>,
    pub starting_block_index: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Block {
    pub block_index: u64,
    pub block_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListSnapshotBlocksResponse {
    pub blocks: Vec<Block>,
    pub expiry_time: crate::kms::api::Time,
    pub volume_size: u64,
    pub block_size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// GetSnapshotBlock's answer: the block's plaintext (always 512 KiB) and its
/// base64 SHA-256.
pub struct SnapshotBlock {
    pub data: zeroize::Zeroizing<Vec<u8>>,
    pub checksum: String,
}

/// StartSnapshot's request, in the EBS model's member names.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct StartSnapshotRequest {
    pub volume_size: u64,
    pub parent_snapshot_id: Option<String>,
    pub tags: Vec<Tag>,
    pub description: Option<String>,
    pub client_token: Option<String>,
    pub encrypted: Option<bool>,
    pub kms_key_arn: Option<String>,
    pub timeout: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StartSnapshotResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub snapshot_id: String,
    pub owner_id: String,
    pub status: String,
    pub start_time: crate::kms::api::Time,
    pub volume_size: u64,
    pub block_size: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_snapshot_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_key_arn: Option<String>,
    pub sse_type: String,
}

/// PutSnapshotBlock's request: the block and the headers that describe it.
#[derive(Debug, Clone, Default)]
pub struct PutSnapshotBlockRequest {
    pub snapshot_id: String,
    pub block_index: u64,
    pub block_data: zeroize::Zeroizing<Vec<u8>>,
    pub data_length: u64,
    pub progress: Option<u32>,
    pub checksum: String,
    pub checksum_algorithm: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutSnapshotBlockResponse {
    pub checksum: String,
    pub checksum_algorithm: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CompleteSnapshotRequest {
    pub snapshot_id: String,
    pub changed_blocks_count: u64,
    pub checksum: Option<String>,
    pub checksum_algorithm: Option<String>,
    pub checksum_aggregation_method: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CompleteSnapshotResponse {
    pub status: String,
}

/// A tag as CreateTags and DeleteTags take it: CreateTags' missing value is
/// `""`; DeleteTags removes the key whatever its value when none is given, and
/// only if it matches when one is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TagRef {
    pub key: String,
    pub value: Option<String>,
}

/// One tag of one resource (DescribeTags).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TagDescription {
    pub key: String,
    pub resource_id: String,
    /// `volume` or `snapshot`.
    pub resource_type: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DescribeTagsRequest {
    /// `key`, `value`, `resource-id`, `resource-type`, `tag:<key>`.
    pub filters: Vec<Filter>,
    pub max_results: Option<u32>,
    pub next_token: Option<String>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeTagsResponse {
    pub tags: Vec<TagDescription>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DescribeAvailabilityZonesRequest {
    pub zone_names: Vec<String>,
    pub zone_ids: Vec<String>,
    /// Accepted: every zone ebsim has is opted in.
    pub all_availability_zones: Option<bool>,
    /// `zone-name`, `zone-id`, `region-name`, `state`, `zone-type`, `group-name`,
    /// `opt-in-status`.
    pub filters: Vec<Filter>,
    pub dry_run: bool,
}

/// `AvailabilityZone` in DescribeAvailabilityZones' response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AvailabilityZone {
    pub opt_in_status: String,
    pub region_name: String,
    pub zone_name: String,
    pub zone_id: String,
    pub group_name: String,
    pub network_border_group: String,
    pub zone_type: String,
    pub state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeAvailabilityZonesResponse {
    pub availability_zones: Vec<AvailabilityZone>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DescribeRegionsRequest {
    pub region_names: Vec<String>,
    /// Accepted: every region ebsim has is opted in.
    pub all_regions: Option<bool>,
    /// `region-name`, `endpoint`, `opt-in-status`.
    pub filters: Vec<Filter>,
    pub dry_run: bool,
}

/// `Region` in DescribeRegions' response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Region {
    pub endpoint: String,
    pub region_name: String,
    pub opt_in_status: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeRegionsResponse {
    pub regions: Vec<Region>,
}

// ---- simulated instances (src/ec2/instances.rs) -----------------------------

/// One simulated instance, as stored in `ec2.db`: no VM runs behind it; its
/// devices are the NBD exports (and FUSE files) of the volumes attached to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub instance_id: String,
    pub reservation_id: String,
    pub image_id: String,
    pub instance_type: String,
    pub availability_zone: String,
    pub launch_time: Timestamp,
    /// Its place in the RunInstances call that made it (`AmiLaunchIndex`).
    pub launch_index: u32,
    /// `running` or `terminated` (`pending` and `shutting-down` never outlive a
    /// call).
    pub state: String,
    pub state_transition_reason: String,
    pub tags: Vec<Tag>,
    pub client_token: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Placement {
    pub availability_zone: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RunInstancesRequest {
    pub image_id: Option<String>,
    pub instance_type: Option<String>,
    pub min_count: Option<u32>,
    pub max_count: Option<u32>,
    pub placement: Option<Placement>,
    pub tag_specifications: Vec<TagSpecification>,
    pub client_token: Option<String>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DescribeInstancesRequest {
    pub instance_ids: Vec<String>,
    pub filters: Vec<Filter>,
    pub max_results: Option<u32>,
    pub next_token: Option<String>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TerminateInstancesRequest {
    pub instance_ids: Vec<String>,
    pub dry_run: bool,
}

/// `InstanceState`: EC2's state code (low byte) and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InstanceState {
    pub code: u32,
    pub name: String,
}

impl InstanceState {
    pub fn of(name: &str) -> Self {
        let code = match name {
            "pending" => 0,
            "running" => 16,
            "shutting-down" => 32,
            "terminated" => 48,
            "stopping" => 64,
            _ => 80,
        };
        InstanceState {
            code,
            name: name.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InstancePlacement {
    pub availability_zone: String,
    pub tenancy: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EbsInstanceBlockDevice {
    pub attach_time: crate::kms::api::Time,
    pub delete_on_termination: bool,
    pub status: String,
    pub volume_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InstanceBlockDeviceMapping {
    pub device_name: String,
    pub ebs: EbsInstanceBlockDevice,
}

/// `Instance` in EC2's RunInstances / DescribeInstances responses (the members a
/// simulated instance has: no network, no root volume).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Instance {
    pub ami_launch_index: u32,
    pub image_id: String,
    pub instance_id: String,
    pub instance_type: String,
    pub launch_time: crate::kms::api::Time,
    pub placement: InstancePlacement,
    pub state: InstanceState,
    pub state_transition_reason: String,
    pub architecture: String,
    pub block_device_mappings: Vec<InstanceBlockDeviceMapping>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    pub hypervisor: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    pub virtualization_type: String,
}

/// `Reservation`: the instances of one RunInstances call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Reservation {
    pub reservation_id: String,
    pub owner_id: String,
    pub groups: Vec<serde_json::Value>,
    pub instances: Vec<Instance>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeInstancesResponse {
    pub reservations: Vec<Reservation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// `InstanceStateChange`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InstanceStateChange {
    pub current_state: InstanceState,
    pub instance_id: String,
    pub previous_state: InstanceState,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TerminateInstancesResponse {
    pub terminating_instances: Vec<InstanceStateChange>,
}
