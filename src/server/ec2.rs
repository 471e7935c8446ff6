//! EC2 over the Query protocol, without HTTP: the router hands [`handle`] the
//! request's parameters (query string and form body, already read and
//! authenticated) and sends back the status and XML it returns.
//!
//! - `Action` names the operation (none: `MissingAction`; one ebsim does not
//!   serve over EC2's API: `InvalidAction`); `Version` must be EC2's API version
//!   [`VERSION`] (absent: `MissingParameter`; another: `InvalidParameterValue`).
//! - The other parameters are decoded by [`OPERATIONS`]' schemas, written from
//!   botocore's ec2 model (each member's wire name is its `queryName`, else its
//!   `locationName` capitalized; lists are `Name.N`), into EC2's member names,
//!   then run through the service layer's EC2 table
//!   ([`crate::service::ec2::Ec2Request`]).
//! - The response is EC2's XML ([`XMLNS`]), each member under its
//!   `locationName`; ebsim's own response members (a volume's `SizeBytes`, a
//!   snapshot's `BlockCount`) are not sent, as EC2 has no element for them.
//! - Errors are EC2's `<Response><Errors><Error>` document, with the status
//!   `server::status` gives the error's kind.
//!
//! ebsim's own RekeyVolume and Cleanup are served too, with schemas in EC2's
//! style (no model has them: `volumeId`, lists as `…Set` of `<item>`).
//!
//! AttachVolume attaches to a simulated instance (RunInstances, docs/EBS.md §8).
//! Not served here: the EBS direct API's ListChangedBlocks (REST-JSON, another
//! endpoint).

use super::query::{self, BOOLEAN, Flavour, INTEGER, Member, Output, STRING, Shape, TIMESTAMP};
use crate::error::{Error, ErrorKind, Result};
use crate::service::ec2::Ec2Request;
use crate::service::{RequestContext, Services};
use serde_json::Value;

/// The EC2 API version ebsim speaks.
pub const VERSION: &str = "2016-11-15";
/// Its XML namespace.
pub const XMLNS: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

/// Parameters of the protocol itself and of SigV4's presigned query strings,
/// which no operation takes (the router checks the signature ones).
pub const PROTOCOL_PARAMETERS: &[&str] = &[
    "Action",
    "Version",
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
    "X-Amz-Content-Sha256",
];

/// One EC2 operation served over the Query protocol.
#[derive(Debug)]
pub struct Operation {
    pub name: &'static str,
    /// Its request (a structure).
    pub input: &'static Shape,
    pub output: Output,
}

const fn list(of: &'static Shape) -> Shape {
    Shape::List { of, item: "item" }
}

const fn m(name: &'static str, wire: &'static str, shape: &'static Shape) -> Member {
    Member::new(name, wire, shape)
}

const fn req(name: &'static str, wire: &'static str, shape: &'static Shape) -> Member {
    Member::required(name, wire, shape)
}

const STRINGS: Shape = list(&STRING);
const DRY_RUN: Member = m("DryRun", "DryRun", &BOOLEAN);

// ---- request shapes ---------------------------------------------------------

const TAG_IN: Shape = Shape::Structure(&[m("Key", "Key", &STRING), m("Value", "Value", &STRING)]);
const TAGS_IN: Shape = list(&TAG_IN);
const TAG_SPECIFICATIONS_IN: Shape = list(&Shape::Structure(&[
    m("ResourceType", "ResourceType", &STRING),
    m("Tags", "Tag", &TAGS_IN),
]));
const FILTERS_IN: Shape = list(&Shape::Structure(&[
    m("Name", "Name", &STRING),
    m("Values", "Value", &STRINGS),
]));
const ONLY_DRY_RUN: Shape = Shape::Structure(&[DRY_RUN]);

const CREATE_VOLUME_IN: Shape = Shape::Structure(&[
    m("AvailabilityZone", "AvailabilityZone", &STRING),
    m("Size", "Size", &INTEGER),
    // ebsim: the exact size in bytes.
    m("SizeBytes", "SizeBytes", &INTEGER),
    m("Encrypted", "Encrypted", &BOOLEAN),
    m("KmsKeyId", "KmsKeyId", &STRING),
    m("SnapshotId", "SnapshotId", &STRING),
    m("VolumeType", "VolumeType", &STRING),
    m("Iops", "Iops", &INTEGER),
    m("Throughput", "Throughput", &INTEGER),
    m(
        "TagSpecifications",
        "TagSpecification",
        &TAG_SPECIFICATIONS_IN,
    ),
    // SDKs fill it in (an idempotency token); ebsim does not deduplicate by it.
    m("ClientToken", "ClientToken", &STRING),
    DRY_RUN,
]);
const DESCRIBE_VOLUMES_IN: Shape = Shape::Structure(&[
    m("VolumeIds", "VolumeId", &STRINGS),
    m("Filters", "Filter", &FILTERS_IN),
    m("MaxResults", "MaxResults", &INTEGER),
    m("NextToken", "NextToken", &STRING),
    DRY_RUN,
]);
const DELETE_VOLUME_IN: Shape = Shape::Structure(&[req("VolumeId", "VolumeId", &STRING), DRY_RUN]);
const MODIFY_VOLUME_IN: Shape = Shape::Structure(&[
    req("VolumeId", "VolumeId", &STRING),
    m("Size", "Size", &INTEGER),
    m("SizeBytes", "SizeBytes", &INTEGER),
    m("VolumeType", "VolumeType", &STRING),
    m("Iops", "Iops", &INTEGER),
    m("Throughput", "Throughput", &INTEGER),
    DRY_RUN,
]);
const MODIFY_DEFAULT_KEY_IN: Shape =
    Shape::Structure(&[req("KmsKeyId", "KmsKeyId", &STRING), DRY_RUN]);
const DETACH_VOLUME_IN: Shape = Shape::Structure(&[
    req("VolumeId", "VolumeId", &STRING),
    m("Force", "Force", &BOOLEAN),
    m("InstanceId", "InstanceId", &STRING),
    m("Device", "Device", &STRING),
    DRY_RUN,
]);
const CREATE_SNAPSHOT_IN: Shape = Shape::Structure(&[
    req("VolumeId", "VolumeId", &STRING),
    m("Description", "Description", &STRING),
    m(
        "TagSpecifications",
        "TagSpecification",
        &TAG_SPECIFICATIONS_IN,
    ),
    DRY_RUN,
]);
const DESCRIBE_SNAPSHOTS_IN: Shape = Shape::Structure(&[
    m("SnapshotIds", "SnapshotId", &STRINGS),
    m("Filters", "Filter", &FILTERS_IN),
    m("OwnerIds", "Owner", &STRINGS),
    DRY_RUN,
]);
const DELETE_SNAPSHOT_IN: Shape =
    Shape::Structure(&[req("SnapshotId", "SnapshotId", &STRING), DRY_RUN]);
const COPY_SNAPSHOT_IN: Shape = Shape::Structure(&[
    req("SourceRegion", "SourceRegion", &STRING),
    req("SourceSnapshotId", "SourceSnapshotId", &STRING),
    m("Encrypted", "Encrypted", &BOOLEAN),
    m("KmsKeyId", "KmsKeyId", &STRING),
    m("Description", "Description", &STRING),
    m(
        "TagSpecifications",
        "TagSpecification",
        &TAG_SPECIFICATIONS_IN,
    ),
    m("DestinationRegion", "DestinationRegion", &STRING),
    m("PresignedUrl", "PresignedUrl", &STRING),
    DRY_RUN,
]);
const CREATE_TAGS_IN: Shape = Shape::Structure(&[
    req("Resources", "ResourceId", &STRINGS),
    req("Tags", "Tag", &TAGS_IN),
    DRY_RUN,
]);
const DELETE_TAGS_IN: Shape = Shape::Structure(&[
    req("Resources", "ResourceId", &STRINGS),
    m("Tags", "Tag", &TAGS_IN),
    DRY_RUN,
]);
const DESCRIBE_TAGS_IN: Shape = Shape::Structure(&[
    m("Filters", "Filter", &FILTERS_IN),
    m("MaxResults", "MaxResults", &INTEGER),
    m("NextToken", "NextToken", &STRING),
    DRY_RUN,
]);
const DESCRIBE_ZONES_IN: Shape = Shape::Structure(&[
    m("ZoneNames", "ZoneName", &STRINGS),
    m("ZoneIds", "ZoneId", &STRINGS),
    m("AllAvailabilityZones", "AllAvailabilityZones", &BOOLEAN),
    m("Filters", "Filter", &FILTERS_IN),
    DRY_RUN,
]);
const DESCRIBE_REGIONS_IN: Shape = Shape::Structure(&[
    m("RegionNames", "RegionName", &STRINGS),
    m("AllRegions", "AllRegions", &BOOLEAN),
    m("Filters", "Filter", &FILTERS_IN),
    DRY_RUN,
]);

// ---- response shapes --------------------------------------------------------

const TAG_SET: Shape = list(&Shape::Structure(&[
    m("Key", "key", &STRING),
    m("Value", "value", &STRING),
]));
const ATTACHMENT_MEMBERS: &[Member] = &[
    m("AttachTime", "attachTime", &TIMESTAMP),
    m("Device", "device", &STRING),
    m("InstanceId", "instanceId", &STRING),
    m("State", "status", &STRING),
    m("VolumeId", "volumeId", &STRING),
    m("DeleteOnTermination", "deleteOnTermination", &BOOLEAN),
];
const VOLUME_MEMBERS: &[Member] = &[
    m("VolumeId", "volumeId", &STRING),
    m("Size", "size", &INTEGER),
    m("SnapshotId", "snapshotId", &STRING),
    m("AvailabilityZone", "availabilityZone", &STRING),
    m("State", "status", &STRING),
    m("CreateTime", "createTime", &TIMESTAMP),
    m(
        "Attachments",
        "attachmentSet",
        &list(&Shape::Structure(ATTACHMENT_MEMBERS)),
    ),
    m("Encrypted", "encrypted", &BOOLEAN),
    m("KmsKeyId", "kmsKeyId", &STRING),
    m("Iops", "iops", &INTEGER),
    m("Tags", "tagSet", &TAG_SET),
    m("VolumeType", "volumeType", &STRING),
    m("MultiAttachEnabled", "multiAttachEnabled", &BOOLEAN),
    m("Throughput", "throughput", &INTEGER),
];
const VOLUME: Shape = Shape::Structure(VOLUME_MEMBERS);
const DESCRIBE_VOLUMES_OUT: Shape = Shape::Structure(&[
    m("Volumes", "volumeSet", &list(&VOLUME)),
    m("NextToken", "nextToken", &STRING),
]);
const MODIFY_VOLUME_OUT: Shape = Shape::Structure(&[m(
    "VolumeModification",
    "volumeModification",
    &Shape::Structure(&[
        m("VolumeId", "volumeId", &STRING),
        m("ModificationState", "modificationState", &STRING),
        m("TargetSize", "targetSize", &INTEGER),
        m("TargetIops", "targetIops", &INTEGER),
        m("TargetVolumeType", "targetVolumeType", &STRING),
        m("TargetThroughput", "targetThroughput", &INTEGER),
        m("OriginalSize", "originalSize", &INTEGER),
        m("OriginalIops", "originalIops", &INTEGER),
        m("OriginalVolumeType", "originalVolumeType", &STRING),
        m("OriginalThroughput", "originalThroughput", &INTEGER),
        m("Progress", "progress", &INTEGER),
        m("StartTime", "startTime", &TIMESTAMP),
        m("EndTime", "endTime", &TIMESTAMP),
    ]),
)]);
const SET_BY_DEFAULT_OUT: Shape = Shape::Structure(&[m(
    "EbsEncryptionByDefault",
    "ebsEncryptionByDefault",
    &BOOLEAN,
)]);
const GET_BY_DEFAULT_OUT: Shape = Shape::Structure(&[
    m("EbsEncryptionByDefault", "ebsEncryptionByDefault", &BOOLEAN),
    m("SseType", "sseType", &STRING),
]);
const KMS_KEY_ID_OUT: Shape = Shape::Structure(&[m("KmsKeyId", "kmsKeyId", &STRING)]);
const ATTACHMENT_OUT: Shape = Shape::Structure(ATTACHMENT_MEMBERS);
const SNAPSHOT_MEMBERS: &[Member] = &[
    m("SnapshotId", "snapshotId", &STRING),
    m("VolumeId", "volumeId", &STRING),
    m("State", "status", &STRING),
    m("StateMessage", "statusMessage", &STRING),
    m("StartTime", "startTime", &TIMESTAMP),
    m("Progress", "progress", &STRING),
    m("OwnerId", "ownerId", &STRING),
    m("Description", "description", &STRING),
    m("VolumeSize", "volumeSize", &INTEGER),
    m("Encrypted", "encrypted", &BOOLEAN),
    m("KmsKeyId", "kmsKeyId", &STRING),
    m("DataEncryptionKeyId", "dataEncryptionKeyId", &STRING),
    m("Tags", "tagSet", &TAG_SET),
    m("StorageTier", "storageTier", &STRING),
];
const SNAPSHOT: Shape = Shape::Structure(SNAPSHOT_MEMBERS);
const DESCRIBE_SNAPSHOTS_OUT: Shape =
    Shape::Structure(&[m("Snapshots", "snapshotSet", &list(&SNAPSHOT))]);
const COPY_SNAPSHOT_OUT: Shape = Shape::Structure(&[
    m("SnapshotId", "snapshotId", &STRING),
    m("Tags", "tagSet", &TAG_SET),
]);
const DESCRIBE_TAGS_OUT: Shape = Shape::Structure(&[
    m(
        "Tags",
        "tagSet",
        &list(&Shape::Structure(&[
            m("Key", "key", &STRING),
            m("ResourceId", "resourceId", &STRING),
            m("ResourceType", "resourceType", &STRING),
            m("Value", "value", &STRING),
        ])),
    ),
    m("NextToken", "nextToken", &STRING),
]);
const DESCRIBE_ZONES_OUT: Shape = Shape::Structure(&[m(
    "AvailabilityZones",
    "availabilityZoneInfo",
    &list(&Shape::Structure(&[
        m("OptInStatus", "optInStatus", &STRING),
        m("RegionName", "regionName", &STRING),
        m("ZoneName", "zoneName", &STRING),
        m("ZoneId", "zoneId", &STRING),
        m("GroupName", "groupName", &STRING),
        m("NetworkBorderGroup", "networkBorderGroup", &STRING),
        m("ZoneType", "zoneType", &STRING),
        m("State", "zoneState", &STRING),
    ])),
)]);
const DESCRIBE_REGIONS_OUT: Shape = Shape::Structure(&[m(
    "Regions",
    "regionInfo",
    &list(&Shape::Structure(&[
        m("Endpoint", "regionEndpoint", &STRING),
        m("RegionName", "regionName", &STRING),
        m("OptInStatus", "optInStatus", &STRING),
    ])),
)]);

// Simulated instances (docs/EBS.md §8) and AttachVolume to one of them.
const ATTACH_VOLUME_IN: Shape = Shape::Structure(&[
    req("Device", "Device", &STRING),
    req("InstanceId", "InstanceId", &STRING),
    req("VolumeId", "VolumeId", &STRING),
    DRY_RUN,
]);
const RUN_INSTANCES_IN: Shape = Shape::Structure(&[
    // Optional in the model (a launch template may name it); ebsim has no
    // templates, and the engine asks for it.
    m("ImageId", "ImageId", &STRING),
    m("InstanceType", "InstanceType", &STRING),
    req("MaxCount", "MaxCount", &INTEGER),
    req("MinCount", "MinCount", &INTEGER),
    m(
        "Placement",
        "Placement",
        &Shape::Structure(&[m("AvailabilityZone", "AvailabilityZone", &STRING)]),
    ),
    m(
        "TagSpecifications",
        "TagSpecification",
        &TAG_SPECIFICATIONS_IN,
    ),
    m("ClientToken", "ClientToken", &STRING),
    DRY_RUN,
]);
const DESCRIBE_INSTANCES_IN: Shape = Shape::Structure(&[
    m("InstanceIds", "InstanceId", &STRINGS),
    m("Filters", "Filter", &FILTERS_IN),
    m("MaxResults", "MaxResults", &INTEGER),
    m("NextToken", "NextToken", &STRING),
    DRY_RUN,
]);
const TERMINATE_INSTANCES_IN: Shape =
    Shape::Structure(&[m("InstanceIds", "InstanceId", &STRINGS), DRY_RUN]);
const INSTANCE_STATE: Shape =
    Shape::Structure(&[m("Code", "code", &INTEGER), m("Name", "name", &STRING)]);
const INSTANCE: Shape = Shape::Structure(&[
    m("InstanceId", "instanceId", &STRING),
    m("ImageId", "imageId", &STRING),
    m("State", "instanceState", &INSTANCE_STATE),
    m("StateTransitionReason", "reason", &STRING),
    m("AmiLaunchIndex", "amiLaunchIndex", &INTEGER),
    m("InstanceType", "instanceType", &STRING),
    m("LaunchTime", "launchTime", &TIMESTAMP),
    m(
        "Placement",
        "placement",
        &Shape::Structure(&[
            m("AvailabilityZone", "availabilityZone", &STRING),
            m("Tenancy", "tenancy", &STRING),
        ]),
    ),
    m("Architecture", "architecture", &STRING),
    m(
        "BlockDeviceMappings",
        "blockDeviceMapping",
        &list(&Shape::Structure(&[
            m("DeviceName", "deviceName", &STRING),
            m(
                "Ebs",
                "ebs",
                &Shape::Structure(&[
                    m("AttachTime", "attachTime", &TIMESTAMP),
                    m("DeleteOnTermination", "deleteOnTermination", &BOOLEAN),
                    m("Status", "status", &STRING),
                    m("VolumeId", "volumeId", &STRING),
                ]),
            ),
        ])),
    ),
    m("ClientToken", "clientToken", &STRING),
    m("Hypervisor", "hypervisor", &STRING),
    m("Tags", "tagSet", &TAG_SET),
    m("VirtualizationType", "virtualizationType", &STRING),
]);
const RESERVATION: Shape = Shape::Structure(&[
    m("ReservationId", "reservationId", &STRING),
    m("OwnerId", "ownerId", &STRING),
    m("Groups", "groupSet", &list(&Shape::Structure(&[]))),
    m("Instances", "instancesSet", &list(&INSTANCE)),
]);
const DESCRIBE_INSTANCES_OUT: Shape = Shape::Structure(&[
    m("Reservations", "reservationSet", &list(&RESERVATION)),
    m("NextToken", "nextToken", &STRING),
]);
const TERMINATE_INSTANCES_OUT: Shape = Shape::Structure(&[m(
    "TerminatingInstances",
    "instancesSet",
    &list(&Shape::Structure(&[
        m("InstanceId", "instanceId", &STRING),
        m("CurrentState", "currentState", &INSTANCE_STATE),
        m("PreviousState", "previousState", &INSTANCE_STATE),
    ])),
)]);

// ebsim's own operations.
const REKEY_VOLUME_IN: Shape = Shape::Structure(&[
    req("VolumeId", "VolumeId", &STRING),
    req("KmsKeyId", "KmsKeyId", &STRING),
    DRY_RUN,
]);
const CLEANUP_OUT: Shape = Shape::Structure(&[
    m("AbandonedOperations", "abandonedOperationSet", &STRINGS),
    m("RemovedFiles", "removedFileSet", &STRINGS),
    m("RestoredImages", "restoredImageSet", &STRINGS),
    m("CollectedBlocks", "collectedBlocks", &INTEGER),
    m("CollectedBytes", "collectedBytes", &INTEGER),
    m("BlockCollection", "blockCollection", &STRING),
    m("UnrecordedImages", "unrecordedImageSet", &STRINGS),
]);

/// The operations of [`OPERATIONS`] that are ebsim's own (no AWS model has them).
pub const EBSIM_OPERATIONS: &[&str] = &["RekeyVolume", "Cleanup"];

const fn op(name: &'static str, input: &'static Shape, output: Output) -> Operation {
    Operation {
        name,
        input,
        output,
    }
}

/// Every EC2 operation served over the Query protocol.
pub const OPERATIONS: &[Operation] = &[
    op("CreateVolume", &CREATE_VOLUME_IN, Output::Shape(&VOLUME)),
    op(
        "DescribeVolumes",
        &DESCRIBE_VOLUMES_IN,
        Output::Shape(&DESCRIBE_VOLUMES_OUT),
    ),
    op("DeleteVolume", &DELETE_VOLUME_IN, Output::Return),
    op(
        "ModifyVolume",
        &MODIFY_VOLUME_IN,
        Output::Shape(&MODIFY_VOLUME_OUT),
    ),
    op(
        "EnableEbsEncryptionByDefault",
        &ONLY_DRY_RUN,
        Output::Shape(&SET_BY_DEFAULT_OUT),
    ),
    op(
        "DisableEbsEncryptionByDefault",
        &ONLY_DRY_RUN,
        Output::Shape(&SET_BY_DEFAULT_OUT),
    ),
    op(
        "GetEbsEncryptionByDefault",
        &ONLY_DRY_RUN,
        Output::Shape(&GET_BY_DEFAULT_OUT),
    ),
    op(
        "GetEbsDefaultKmsKeyId",
        &ONLY_DRY_RUN,
        Output::Shape(&KMS_KEY_ID_OUT),
    ),
    op(
        "ModifyEbsDefaultKmsKeyId",
        &MODIFY_DEFAULT_KEY_IN,
        Output::Shape(&KMS_KEY_ID_OUT),
    ),
    op(
        "ResetEbsDefaultKmsKeyId",
        &ONLY_DRY_RUN,
        Output::Shape(&KMS_KEY_ID_OUT),
    ),
    op(
        "AttachVolume",
        &ATTACH_VOLUME_IN,
        Output::Shape(&ATTACHMENT_OUT),
    ),
    op(
        "DetachVolume",
        &DETACH_VOLUME_IN,
        Output::Shape(&ATTACHMENT_OUT),
    ),
    op(
        "RunInstances",
        &RUN_INSTANCES_IN,
        Output::Shape(&RESERVATION),
    ),
    op(
        "DescribeInstances",
        &DESCRIBE_INSTANCES_IN,
        Output::Shape(&DESCRIBE_INSTANCES_OUT),
    ),
    op(
        "TerminateInstances",
        &TERMINATE_INSTANCES_IN,
        Output::Shape(&TERMINATE_INSTANCES_OUT),
    ),
    op(
        "CreateSnapshot",
        &CREATE_SNAPSHOT_IN,
        Output::Shape(&SNAPSHOT),
    ),
    op(
        "DescribeSnapshots",
        &DESCRIBE_SNAPSHOTS_IN,
        Output::Shape(&DESCRIBE_SNAPSHOTS_OUT),
    ),
    op("DeleteSnapshot", &DELETE_SNAPSHOT_IN, Output::Return),
    op(
        "CopySnapshot",
        &COPY_SNAPSHOT_IN,
        Output::Shape(&COPY_SNAPSHOT_OUT),
    ),
    op("CreateTags", &CREATE_TAGS_IN, Output::Return),
    op("DeleteTags", &DELETE_TAGS_IN, Output::Return),
    op(
        "DescribeTags",
        &DESCRIBE_TAGS_IN,
        Output::Shape(&DESCRIBE_TAGS_OUT),
    ),
    op(
        "DescribeAvailabilityZones",
        &DESCRIBE_ZONES_IN,
        Output::Shape(&DESCRIBE_ZONES_OUT),
    ),
    op(
        "DescribeRegions",
        &DESCRIBE_REGIONS_IN,
        Output::Shape(&DESCRIBE_REGIONS_OUT),
    ),
    op("RekeyVolume", &REKEY_VOLUME_IN, Output::Shape(&VOLUME)),
    op("Cleanup", &ONLY_DRY_RUN, Output::Shape(&CLEANUP_OUT)),
];

/// The operation named `name`.
pub fn operation(name: &str) -> Option<&'static Operation> {
    OPERATIONS.iter().find(|o| o.name == name)
}

/// Reads a request: its operation, and its members as JSON in EC2's member
/// names (what [`Ec2Request::from_json`] takes). No engine is touched.
pub fn decode(params: &[(String, String)]) -> Result<(&'static Operation, Value)> {
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let action = get("Action").filter(|a| !a.is_empty()).ok_or_else(|| {
        Error::new(
            ErrorKind::MissingAction,
            "The request must contain the parameter Action",
        )
    })?;
    let op = operation(action).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidAction,
            format!("The action {action} is not valid for this web service."),
        )
    })?;
    match get("Version") {
        None => {
            return Err(Error::new(
                ErrorKind::MissingParameter,
                "The request must contain the parameter Version",
            ));
        }
        Some(v) if v != VERSION => {
            return Err(Error::new(
                ErrorKind::InvalidParameterValue,
                format!(
                    "Value ({v}) for parameter Version is invalid. ebsim speaks EC2 API version {VERSION}."
                ),
            ));
        }
        Some(_) => {}
    }
    let members: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| !PROTOCOL_PARAMETERS.contains(&k.as_str()))
        .cloned()
        .collect();
    let json = query::decode(&members, op.input, Flavour::Ec2)?;
    Ok((op, json))
}

/// An EC2 Query response: its HTTP status and XML body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub xml: String,
}

/// Runs one EC2 Query request for `ctx` and answers it: 200 with the
/// operation's XML, or the error's status with EC2's error document. The
/// request id in the XML is `ctx.request_id`.
pub fn handle(services: &Services, ctx: &RequestContext, params: &[(String, String)]) -> Response {
    match run(services, ctx, params) {
        Ok(xml) => Response { status: 200, xml },
        Err(e) => error_response(&e, &ctx.request_id),
    }
}

/// EC2's error document for `e`.
pub fn error_response(e: &Error, request_id: &str) -> Response {
    Response {
        status: super::status::status(e.kind()),
        xml: query::ec2_error(e.code(), e.message(), request_id),
    }
}

/// Decodes and runs one request: its operation and the service's response in
/// EC2's member names (what [`encode`] writes as XML).
pub fn call(
    services: &Services,
    ctx: &RequestContext,
    params: &[(String, String)],
) -> Result<(&'static Operation, Value)> {
    let (op, json) = decode(params)?;
    let request = Ec2Request::from_json(op.name, json).map_err(|e| match e.kind() {
        // A value the schema let through but the request cannot hold (a
        // negative size): EC2 calls that an invalid value.
        ErrorKind::Serialization => Error::new(ErrorKind::InvalidParameterValue, e.message()),
        _ => e,
    })?;
    Ok((op, services.ec2(ctx, request)?))
}

fn run(services: &Services, ctx: &RequestContext, params: &[(String, String)]) -> Result<String> {
    let (op, value) = call(services, ctx, params)?;
    Ok(encode(op, &ctx.request_id, &value).xml)
}

/// `value` (the service's response) as `op`'s XML.
pub fn encode(op: &Operation, request_id: &str, value: &Value) -> query::Encoded {
    query::ec2_response(op.name, XMLNS, request_id, op.output, value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(s: &str) -> Vec<(String, String)> {
        query::parse_form(s.as_bytes()).unwrap()
    }

    #[test]
    fn every_operation_is_in_the_service_table() {
        for op in OPERATIONS {
            assert!(
                crate::service::ec2::OPERATIONS.contains(&op.name),
                "{}",
                op.name
            );
            assert!(matches!(op.input, Shape::Structure(_)), "{}", op.name);
            // Every operation honours DryRun.
            let Shape::Structure(members) = op.input else {
                unreachable!()
            };
            assert!(members.iter().any(|m| m.name == "DryRun"), "{}", op.name);
        }
    }

    #[test]
    fn action_and_version_are_checked() {
        let kind = |s: &str| decode(&params(s)).unwrap_err().kind();
        assert_eq!(kind("Version=2016-11-15"), ErrorKind::MissingAction);
        assert_eq!(kind("Action=&Version=2016-11-15"), ErrorKind::MissingAction);
        assert_eq!(
            kind("Action=RunScheduledInstances&Version=2016-11-15"),
            ErrorKind::InvalidAction
        );
        assert_eq!(kind("Action=DescribeVolumes"), ErrorKind::MissingParameter);
        assert_eq!(
            kind("Action=DescribeVolumes&Version=2014-01-01"),
            ErrorKind::InvalidParameterValue
        );
        assert_eq!(
            kind("Action=DeleteVolume&Version=2016-11-15"),
            ErrorKind::MissingParameter
        );
        assert_eq!(
            kind("Action=DeleteVolume&Version=2016-11-15&VolumeId=v&Bogus=1"),
            ErrorKind::UnknownParameter
        );
        let (op, v) = decode(&params(
            "Action=CreateVolume&Version=2016-11-15&Size=8&Encrypted=true&TagSpecification.1.ResourceType=volume&TagSpecification.1.Tag.1.Key=Name&TagSpecification.1.Tag.1.Value=db&X-Amz-Date=20260101T000000Z",
        ))
        .unwrap();
        assert_eq!(op.name, "CreateVolume");
        assert_eq!(
            v,
            json!({"Size": 8, "Encrypted": true, "TagSpecifications": [
                {"ResourceType": "volume", "Tags": [{"Key": "Name", "Value": "db"}]}
            ]})
        );
    }
}
