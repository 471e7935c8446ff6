//! EC2 over the Query protocol without an HTTP server: `server::ec2` decodes
//! what botocore's EC2Serializer sends for every operation, answers every
//! operation in XML that botocore's EC2QueryParser reads back as the service's
//! response (every element in the model; tests/ec2_query_botocore.py), matches
//! the golden transcript tests/golden_query/ec2.txt (`EBSIM_BLESS=1` rewrites
//! it), honours DryRun in every operation, and sends EC2's errors.

mod common;

use ebsim::ErrorKind;
use ebsim::clock::Clock;
use ebsim::home::DataRoot;
use ebsim::iam::Principal;
use ebsim::kms::access::Caller;
use ebsim::server::ec2 as wire;
use ebsim::server::query;
use ebsim::service::{RequestContext, Services, Source};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const REGION: &str = "us-east-1";
const REQUEST_ID: &str = "7e5a3a0e-0000-4000-8000-000000000001";

/// ebsim's own response members, which EC2's XML has no element for.
const EBSIM_MEMBERS: &[&str] = &[
    "SizeBytes",
    "BlockCount",
    "StateMessage",
    "FuseFile",
    "ProcessId",
    "NbdUri",
    "LoopDevice",
    "MountPoint",
];

struct World {
    _dir: tempfile::TempDir,
    services: Services,
    account: String,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let root = DataRoot::open(dir.path()).unwrap();
    let account = root.config().unwrap().account_id;
    let services = Services::new(root, Clock::manual(common::start()));
    World {
        _dir: dir,
        services,
        account,
    }
}

impl World {
    fn root(&self) -> Caller {
        Caller::account_root(&self.account)
    }

    /// A user with no policies: EC2 refuses it everything.
    fn nobody(&self) -> Caller {
        Caller::new(
            Principal::parse(&format!("arn:aws:iam::{}:user/nobody", self.account)).unwrap(),
        )
    }

    fn ctx(&self, caller: Caller) -> RequestContext {
        let mut ctx = RequestContext::new(caller, REGION, Source::Network("127.0.0.1:1".into()));
        ctx.request_id = REQUEST_ID.into();
        ctx
    }

    fn params(action: &str, members: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut p = vec![
            ("Action".to_string(), action.to_string()),
            ("Version".to_string(), wire::VERSION.to_string()),
        ];
        p.extend(members.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        p
    }

    /// Runs `action` as the account root: its XML and the service's response.
    fn call(&self, action: &str, members: &[(&str, &str)]) -> (String, Value) {
        let ctx = self.ctx(self.root());
        let params = Self::params(action, members);
        let (op, value) =
            wire::call(&self.services, &ctx, &params).unwrap_or_else(|e| panic!("{action}: {e}"));
        let encoded = wire::encode(op, REQUEST_ID, &value);
        for left in &encoded.left_out {
            let last = left.rsplit('.').next().unwrap();
            assert!(
                EBSIM_MEMBERS.contains(&last),
                "{action}: member {left} is not in the schema"
            );
        }
        // handle() answers the same (the engine's ids differ between two
        // calls, so only for reads).
        if action.starts_with("Describe") || action.starts_with("Get") {
            let r = wire::handle(&self.services, &ctx, &params);
            assert_eq!(r.status, 200, "{}", r.xml);
            assert_eq!(r.xml, encoded.xml);
        }
        (encoded.xml, value)
    }

    fn handle(&self, caller: Caller, action: &str, members: &[(&str, &str)]) -> wire::Response {
        wire::handle(
            &self.services,
            &self.ctx(caller),
            &Self::params(action, members),
        )
    }
}

/// The element `name`'s text in `xml` (first occurrence).
fn element<'a>(xml: &'a str, name: &str) -> &'a str {
    let open = format!("<{name}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{name}> in {xml}"))
        + open.len();
    let end = xml[start..].find(&format!("</{name}>")).unwrap() + start;
    &xml[start..end]
}

fn botocore() -> bool {
    Command::new("python3")
        .args(["-c", "import botocore"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ec2_query_botocore.py")
}

/// One response of every operation, in order: (operation, XML, JSON).
fn every_response(w: &World) -> Vec<(&'static str, String, Value)> {
    let mut out = Vec::new();
    let mut run = |action: &'static str, members: &[(&str, &str)]| -> Value {
        let (xml, value) = w.call(action, members);
        out.push((action, xml, value.clone()));
        value
    };
    let v = run(
        "CreateVolume",
        &[
            ("SizeBytes", "1048576"),
            ("Encrypted", "true"),
            ("VolumeType", "gp3"),
            ("TagSpecification.1.ResourceType", "volume"),
            ("TagSpecification.1.Tag.1.Key", "Name"),
            ("TagSpecification.1.Tag.1.Value", "db <main> & co"),
        ],
    );
    let vol = v["VolumeId"].as_str().unwrap().to_string();
    run("DescribeVolumes", &[("VolumeId.1", &vol)]);
    run(
        "ModifyVolume",
        &[("VolumeId", &vol), ("SizeBytes", "2097152")],
    );
    run(
        "RekeyVolume",
        &[("VolumeId", &vol), ("KmsKeyId", "alias/aws/ebs")],
    );
    run("EnableEbsEncryptionByDefault", &[]);
    run("DisableEbsEncryptionByDefault", &[]);
    run("GetEbsEncryptionByDefault", &[]);
    run("GetEbsDefaultKmsKeyId", &[]);
    run("ModifyEbsDefaultKmsKeyId", &[("KmsKeyId", "alias/aws/ebs")]);
    run("ResetEbsDefaultKmsKeyId", &[]);
    let s = run(
        "CreateSnapshot",
        &[
            ("VolumeId", &vol),
            ("Description", "nightly"),
            ("TagSpecification.1.ResourceType", "snapshot"),
            ("TagSpecification.1.Tag.1.Key", "k"),
            ("TagSpecification.1.Tag.1.Value", "v"),
        ],
    );
    let snap = s["SnapshotId"].as_str().unwrap().to_string();
    run(
        "DescribeSnapshots",
        &[("SnapshotId.1", &snap), ("Owner.1", "self")],
    );
    let c = run(
        "CopySnapshot",
        &[
            ("SourceRegion", REGION),
            ("SourceSnapshotId", &snap),
            ("Description", "copy"),
            ("DestinationRegion", REGION),
            (
                "PresignedUrl",
                "https://ec2.us-east-1.amazonaws.com/?Action=CopySnapshot",
            ),
        ],
    );
    let copy = c["SnapshotId"].as_str().unwrap().to_string();
    run(
        "CreateTags",
        &[
            ("ResourceId.1", &vol),
            ("ResourceId.2", &snap),
            ("Tag.1.Key", "team"),
            ("Tag.1.Value", "storage"),
        ],
    );
    run(
        "DescribeTags",
        &[("Filter.1.Name", "key"), ("Filter.1.Value.1", "team")],
    );
    run(
        "DeleteTags",
        &[("ResourceId.1", &vol), ("Tag.1.Key", "team")],
    );
    run("DescribeAvailabilityZones", &[]);
    run("DescribeRegions", &[]);
    run("DeleteSnapshot", &[("SnapshotId", &copy)]);
    run("DeleteVolume", &[("VolumeId", &vol)]);
    run("Cleanup", &[]);
    // DetachVolume needs an attachment process; its response is the service's
    // attachment, written by the same encoder.
    let detach = json!({
        "AttachTime": "2026-01-01T00:00:00.250000+00:00",
        "Device": "/dev/sdf",
        "InstanceId": "i-0123456789abcdef0",
        "State": "detached",
        "VolumeId": vol,
        "DeleteOnTermination": false,
        "FuseFile": "/mnt/x/vol",
        "ProcessId": 42
    });
    let op = wire::operation("DetachVolume").unwrap();
    out.push((
        "DetachVolume",
        wire::encode(op, REQUEST_ID, &detach).xml,
        detach,
    ));
    out
}

/// Ids, keys and the account in order of appearance, so the transcript is stable.
fn normalize(text: &str, account: &str) -> String {
    let text = text.replace(account, "111122223333");
    let patterns = [
        ("vol", regex_lite::Regex::new(r"vol-[0-9a-f]{17}").unwrap()),
        (
            "snap",
            regex_lite::Regex::new(r"snap-[0-9a-f]{17}").unwrap(),
        ),
        ("dek", regex_lite::Regex::new(r"dek-[0-9a-f]{17}").unwrap()),
        (
            "key",
            regex_lite::Regex::new(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
                .unwrap(),
        ),
    ];
    let mut out = text;
    for (label, re) in patterns {
        let mut seen: Vec<String> = Vec::new();
        for m in re.find_iter(&out.clone()) {
            if m.as_str() != REQUEST_ID && !seen.iter().any(|s| s == m.as_str()) {
                seen.push(m.as_str().to_string());
            }
        }
        for (i, s) in seen.iter().enumerate() {
            out = out.replace(s, &format!("{label}-{}", i + 1));
        }
    }
    out
}

#[test]
fn every_operation_matches_the_golden_transcript() {
    let w = world();
    let mut raw = String::new();
    for (op, xml, _) in every_response(&w) {
        raw.push_str(&format!("== {op}\n{xml}\n"));
    }
    let transcript = normalize(&raw, &w.account);
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden_query/ec2.txt");
    if std::env::var_os("EBSIM_BLESS").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &transcript).unwrap();
    }
    let want = std::fs::read_to_string(&golden)
        .unwrap_or_else(|e| panic!("{}: {e} (EBSIM_BLESS=1 writes it)", golden.display()));
    assert!(
        transcript == want,
        "the EC2 XML differs from {}:\n{transcript}",
        golden.display()
    );
}

#[test]
fn botocore_reads_every_response_as_the_service_said_it() {
    if !botocore() {
        common::skip("python3 with botocore is not installed");
        return;
    }
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    for (op, xml, value) in every_response(&w) {
        if wire::EBSIM_OPERATIONS.contains(&op) {
            continue;
        }
        std::fs::write(dir.path().join(format!("{op}.xml")), xml).unwrap();
        std::fs::write(dir.path().join(format!("{op}.json")), value.to_string()).unwrap();
    }
    // And the error documents.
    let errors = [
        (
            "missing-action",
            w.handle(w.root(), "", &[]),
            "MissingAction",
        ),
        (
            "not-found",
            w.handle(
                w.root(),
                "DeleteVolume",
                &[("VolumeId", "vol-0123456789abcdef0")],
            ),
            "InvalidVolume.NotFound",
        ),
        (
            "unauthorized",
            w.handle(w.nobody(), "DescribeVolumes", &[]),
            "UnauthorizedOperation",
        ),
    ];
    for (name, r, code) in errors {
        std::fs::write(dir.path().join(format!("error-{name}.xml")), &r.xml).unwrap();
        std::fs::write(dir.path().join(format!("error-{name}.code")), code).unwrap();
    }
    let out = Command::new("python3")
        .arg(script())
        .arg("responses")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "botocore disagrees:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Members of botocore's ec2 model that ebsim does not take (UnknownParameter):
/// features ebsim does not simulate (Outposts, multi-attach, operators,
/// initialization rates, zone ids, snapshot sharing and pagination,
/// Local Zones).
const NOT_TAKEN: &[&str] = &[
    "CopySnapshot.CompletionDurationMinutes",
    "CopySnapshot.DestinationAvailabilityZone",
    "CopySnapshot.DestinationOutpostArn",
    "CreateSnapshot.Location",
    "CreateSnapshot.OutpostArn",
    "CreateVolume.AvailabilityZoneId",
    "CreateVolume.MultiAttachEnabled",
    "CreateVolume.Operator",
    "CreateVolume.OutpostArn",
    "CreateVolume.VolumeInitializationRate",
    "DescribeSnapshots.MaxResults",
    "DescribeSnapshots.NextToken",
    "DescribeSnapshots.RestorableByUserIds",
    "DescribeVolumes.IncludeManagedResources",
    "ModifyVolume.MultiAttachEnabled",
    // Simulated instances have no VM, network, storage options or templates
    // (docs/EBS.md §8); RunInstances' Placement takes AvailabilityZone alone
    // (the sample sets every Placement member).
    "AttachVolume.EbsCardIndex",
    "DescribeInstances.IncludeManagedResources",
    "RunInstances.AdditionalInfo",
    "RunInstances.BlockDeviceMappings",
    "RunInstances.CapacityReservationSpecification",
    "RunInstances.CpuOptions",
    "RunInstances.CreditSpecification",
    "RunInstances.DisableApiStop",
    "RunInstances.DisableApiTermination",
    "RunInstances.EbsOptimized",
    "RunInstances.ElasticGpuSpecification",
    "RunInstances.ElasticInferenceAccelerators",
    "RunInstances.EnablePrimaryIpv6",
    "RunInstances.EnclaveOptions",
    "RunInstances.HibernationOptions",
    "RunInstances.IamInstanceProfile",
    "RunInstances.InstanceInitiatedShutdownBehavior",
    "RunInstances.InstanceMarketOptions",
    "RunInstances.Ipv6AddressCount",
    "RunInstances.Ipv6Addresses",
    "RunInstances.KernelId",
    "RunInstances.KeyName",
    "RunInstances.LaunchTemplate",
    "RunInstances.LicenseSpecifications",
    "RunInstances.MaintenanceOptions",
    "RunInstances.MetadataOptions",
    "RunInstances.Monitoring",
    "RunInstances.NetworkInterfaces",
    "RunInstances.NetworkPerformanceOptions",
    "RunInstances.Operator",
    "RunInstances.Placement",
    "RunInstances.PrivateDnsNameOptions",
    "RunInstances.PrivateIpAddress",
    "RunInstances.RamdiskId",
    "RunInstances.SecondaryInterfaces",
    "RunInstances.SecurityGroupIds",
    "RunInstances.SecurityGroups",
    "RunInstances.SubnetId",
    "RunInstances.UserData",
    "TerminateInstances.Force",
    "TerminateInstances.SkipOsShutdown",
];

#[test]
fn the_decoder_reads_what_botocore_serializes() {
    if !botocore() {
        common::skip("python3 with botocore is not installed");
        return;
    }
    let ops: Vec<&str> = wire::OPERATIONS.iter().map(|o| o.name).collect();
    let out = Command::new("python3")
        .arg(script())
        .arg("requests")
        .args(&ops)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut refused: BTreeSet<String> = BTreeSet::new();
    let mut not_in_model: BTreeSet<&str> = BTreeSet::new();
    let mut decoded: BTreeMap<&str, usize> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let case: Value = serde_json::from_str(line).unwrap();
        let op = case["op"].as_str().unwrap();
        if case["not_in_model"] == true {
            not_in_model.insert(ops.iter().find(|o| **o == op).unwrap());
            continue;
        }
        let member = case["member"].as_str();
        let params = query::parse_form(case["body"].as_str().unwrap().as_bytes()).unwrap();
        match wire::decode(&params) {
            Ok((o, v)) => {
                assert_eq!(o.name, op);
                assert_eq!(v, case["params"], "{op} {member:?}: {}", case["body"]);
                // And the service's table reads it.
                ebsim::service::ec2::Ec2Request::from_json(op, v)
                    .unwrap_or_else(|e| panic!("{op} {member:?}: {e}"));
                *decoded
                    .entry(ops.iter().find(|o| **o == op).unwrap())
                    .or_default() += 1;
            }
            Err(e) if e.kind() == ErrorKind::UnknownParameter => {
                if let Some(m) = member {
                    refused.insert(format!("{op}.{m}"));
                }
            }
            Err(e) => panic!("{op} {member:?}: {e}\n{}", case["body"]),
        }
    }
    let want: BTreeSet<String> = NOT_TAKEN.iter().map(|s| s.to_string()).collect();
    assert_eq!(refused, want);
    assert_eq!(
        not_in_model,
        wire::EBSIM_OPERATIONS
            .iter()
            .copied()
            .collect::<BTreeSet<_>>()
    );
    for op in ops.iter().filter(|o| !wire::EBSIM_OPERATIONS.contains(o)) {
        assert!(
            decoded.get(op).is_some_and(|n| *n > 0),
            "{op}: nothing decoded"
        );
    }
}

#[test]
fn every_operation_honours_dry_run() {
    let w = world();
    let (_, v) = w.call("CreateVolume", &[("SizeBytes", "1048576")]);
    let attached_id = v["VolumeId"].as_str().unwrap().to_string();
    let (_, v) = w.call(
        "CreateVolume",
        &[
            ("SizeBytes", "1048576"),
            ("Encrypted", "true"),
            ("TagSpecification.1.ResourceType", "volume"),
            ("TagSpecification.1.Tag.1.Key", "a"),
            ("TagSpecification.1.Tag.1.Value", "b"),
        ],
    );
    let vol = v["VolumeId"].as_str().unwrap().to_string();
    let (_, s) = w.call("CreateSnapshot", &[("VolumeId", &vol)]);
    let snap = s["SnapshotId"].as_str().unwrap().to_string();
    // An attachment held by this process, for DetachVolume.
    let engine = w.services.ec2_engine(REGION).unwrap();
    let _attachment = engine
        .attach(&w.root(), &attached_id, "i-0123456789abcdef0", "/dev/sdf")
        .unwrap();
    let (_, r) = w.call(
        "RunInstances",
        &[
            ("ImageId", "ami-12345678"),
            ("MinCount", "1"),
            ("MaxCount", "1"),
        ],
    );
    let instance = r["Instances"][0]["InstanceId"]
        .as_str()
        .unwrap()
        .to_string();
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "RunInstances",
            vec![
                ("ImageId", "ami-12345678"),
                ("MinCount", "1"),
                ("MaxCount", "1"),
            ],
        ),
        ("DescribeInstances", vec![]),
        ("TerminateInstances", vec![("InstanceId.1", &instance)]),
        (
            "AttachVolume",
            vec![
                ("VolumeId", &vol),
                ("InstanceId", &instance),
                ("Device", "/dev/sdf"),
            ],
        ),
        ("CreateVolume", vec![("SizeBytes", "1048576")]),
        ("DescribeVolumes", vec![]),
        ("DeleteVolume", vec![("VolumeId", &vol)]),
        (
            "ModifyVolume",
            vec![("VolumeId", &vol), ("SizeBytes", "2097152")],
        ),
        ("EnableEbsEncryptionByDefault", vec![]),
        ("DisableEbsEncryptionByDefault", vec![]),
        ("GetEbsEncryptionByDefault", vec![]),
        ("GetEbsDefaultKmsKeyId", vec![]),
        (
            "ModifyEbsDefaultKmsKeyId",
            vec![("KmsKeyId", "alias/aws/ebs")],
        ),
        ("ResetEbsDefaultKmsKeyId", vec![]),
        ("DetachVolume", vec![("VolumeId", &attached_id)]),
        ("CreateSnapshot", vec![("VolumeId", &vol)]),
        ("DescribeSnapshots", vec![]),
        ("DeleteSnapshot", vec![("SnapshotId", &snap)]),
        (
            "CopySnapshot",
            vec![("SourceRegion", REGION), ("SourceSnapshotId", &snap)],
        ),
        (
            "CreateTags",
            vec![
                ("ResourceId.1", &vol),
                ("Tag.1.Key", "k"),
                ("Tag.1.Value", "v"),
            ],
        ),
        ("DeleteTags", vec![("ResourceId.1", &vol)]),
        ("DescribeTags", vec![]),
        ("DescribeAvailabilityZones", vec![]),
        ("DescribeRegions", vec![]),
        (
            "RekeyVolume",
            vec![("VolumeId", &vol), ("KmsKeyId", "alias/aws/ebs")],
        ),
        ("Cleanup", vec![]),
    ];
    let covered: BTreeSet<&str> = cases.iter().map(|(op, _)| *op).collect();
    let all: BTreeSet<&str> = wire::OPERATIONS.iter().map(|o| o.name).collect();
    assert_eq!(covered, all, "a DryRun case for every operation");
    let before = w.call("DescribeVolumes", &[]).1;
    let snapshots_before = w.call("DescribeSnapshots", &[]).1;
    for (op, members) in &cases {
        let mut members = members.clone();
        members.push(("DryRun", "true"));
        let r = w.handle(w.root(), op, &members);
        assert_eq!(r.status, 412, "{op}: {}", r.xml);
        assert_eq!(element(&r.xml, "Code"), "DryRunOperation", "{op}");
        assert_eq!(
            element(&r.xml, "Message"),
            "Request would have succeeded, but DryRun flag is set.",
            "{op}"
        );
        assert_eq!(element(&r.xml, "RequestID"), REQUEST_ID);
        let r = w.handle(w.nobody(), op, &members);
        assert_eq!(r.status, 403, "{op}: {}", r.xml);
        assert_eq!(element(&r.xml, "Code"), "UnauthorizedOperation", "{op}");
    }
    // Nothing changed.
    assert_eq!(w.call("DescribeVolumes", &[]).1, before);
    assert_eq!(w.call("DescribeSnapshots", &[]).1, snapshots_before);
    let (_, d) = w.call("GetEbsEncryptionByDefault", &[]);
    assert_eq!(d["EbsEncryptionByDefault"], false);
    let (_, d) = w.call("DescribeInstances", &[]);
    let instances = &d["Reservations"][0]["Instances"];
    assert_eq!(instances.as_array().unwrap().len(), 1, "{d}");
    assert_eq!(instances[0]["State"]["Name"], "running");
    assert_eq!(instances[0]["BlockDeviceMappings"], serde_json::json!([]));
}

#[test]
fn tags_zones_and_regions_over_the_wire() {
    let w = world();
    let (_, v) = w.call("CreateVolume", &[("SizeBytes", "1048576")]);
    let vol = v["VolumeId"].as_str().unwrap().to_string();
    let (_, s) = w.call("CreateSnapshot", &[("VolumeId", &vol)]);
    let snap = s["SnapshotId"].as_str().unwrap().to_string();
    w.call(
        "CreateTags",
        &[
            ("ResourceId.1", &vol),
            ("ResourceId.2", &snap),
            ("Tag.1.Key", "env"),
            ("Tag.1.Value", "prod"),
            ("Tag.2.Key", "empty"),
        ],
    );
    // Overwrite, then read back through the describes.
    w.call(
        "CreateTags",
        &[
            ("ResourceId.1", &vol),
            ("Tag.1.Key", "env"),
            ("Tag.1.Value", "test"),
        ],
    );
    let (_, d) = w.call(
        "DescribeVolumes",
        &[("Filter.1.Name", "tag:env"), ("Filter.1.Value.1", "test")],
    );
    assert_eq!(d["Volumes"][0]["VolumeId"], vol.as_str());
    let (_, t) = w.call("DescribeTags", &[]);
    assert_eq!(
        t["Tags"],
        json!([
            {"Key": "empty", "ResourceId": snap, "ResourceType": "snapshot", "Value": ""},
            {"Key": "env", "ResourceId": snap, "ResourceType": "snapshot", "Value": "prod"},
            {"Key": "empty", "ResourceId": vol, "ResourceType": "volume", "Value": ""},
            {"Key": "env", "ResourceId": vol, "ResourceType": "volume", "Value": "test"},
        ])
    );
    // Pages of five need six tags: add two more to the volume.
    w.call(
        "CreateTags",
        &[
            ("ResourceId.1", &vol),
            ("Tag.1.Key", "x"),
            ("Tag.2.Key", "y"),
        ],
    );
    let (_, p1) = w.call("DescribeTags", &[("MaxResults", "5")]);
    assert_eq!(p1["Tags"].as_array().unwrap().len(), 5);
    let token = p1["NextToken"].as_str().unwrap().to_string();
    let (_, p2) = w.call(
        "DescribeTags",
        &[("MaxResults", "5"), ("NextToken", &token)],
    );
    assert_eq!(p2["Tags"].as_array().unwrap().len(), 1);
    assert!(p2.get("NextToken").is_none());
    // DeleteTags: a value that does not match keeps the tag; no value removes it.
    w.call(
        "DeleteTags",
        &[
            ("ResourceId.1", &snap),
            ("Tag.1.Key", "env"),
            ("Tag.1.Value", "other"),
        ],
    );
    w.call(
        "DeleteTags",
        &[("ResourceId.1", &snap), ("Tag.1.Key", "empty")],
    );
    let (_, t) = w.call(
        "DescribeTags",
        &[
            ("Filter.1.Name", "resource-id"),
            ("Filter.1.Value.1", &snap),
        ],
    );
    assert_eq!(
        t["Tags"],
        json!([{"Key": "env", "ResourceId": snap, "ResourceType": "snapshot", "Value": "prod"}])
    );
    // No tags named: all of them go.
    w.call("DeleteTags", &[("ResourceId.1", &vol)]);
    let (_, d) = w.call("DescribeVolumes", &[("VolumeId.1", &vol)]);
    assert!(d["Volumes"][0].get("Tags").is_none(), "{d}");
    // Errors: AWS's codes.
    let code = |r: wire::Response| element(&r.xml, "Code").to_string();
    assert_eq!(
        code(w.handle(
            w.root(),
            "CreateTags",
            &[("ResourceId.1", "i-0123456789abcdef0"), ("Tag.1.Key", "k")]
        )),
        "InvalidID"
    );
    assert_eq!(
        code(w.handle(
            w.root(),
            "CreateTags",
            &[("ResourceId.1", &vol), ("Tag.1.Key", "aws:x")]
        )),
        "InvalidParameterValue"
    );
    assert_eq!(
        code(w.handle(
            w.root(),
            "CreateTags",
            &[
                ("ResourceId.1", "vol-0123456789abcdef0"),
                ("Tag.1.Key", "k")
            ]
        )),
        "InvalidVolume.NotFound"
    );
    let many: Vec<(String, String)> = (1..=51)
        .map(|i| (format!("Tag.{i}.Key"), format!("k{i}")))
        .collect();
    let mut members: Vec<(&str, &str)> = vec![("ResourceId.1", &vol)];
    members.extend(many.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    assert_eq!(
        code(w.handle(w.root(), "CreateTags", &members)),
        "TagLimitExceeded"
    );
    assert_eq!(
        code(w.handle(
            w.nobody(),
            "CreateTags",
            &[("ResourceId.1", &vol), ("Tag.1.Key", "k")]
        )),
        "UnauthorizedOperation"
    );
    // Zones and regions.
    let (_, z) = w.call("DescribeAvailabilityZones", &[]);
    let names: Vec<&str> = z["AvailabilityZones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["ZoneName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["us-east-1a", "us-east-1b", "us-east-1c"]);
    let (_, z) = w.call(
        "DescribeAvailabilityZones",
        &[
            ("Filter.1.Name", "zone-id"),
            ("Filter.1.Value.1", "use1-az2"),
        ],
    );
    assert_eq!(z["AvailabilityZones"][0]["ZoneName"], "us-east-1b");
    // Volumes go in the zones listed, and only there.
    let (_, v) = w.call(
        "CreateVolume",
        &[("SizeBytes", "1048576"), ("AvailabilityZone", "us-east-1c")],
    );
    assert_eq!(v["AvailabilityZone"], "us-east-1c");
    assert_eq!(
        code(w.handle(
            w.root(),
            "CreateVolume",
            &[("SizeBytes", "1048576"), ("AvailabilityZone", "us-east-1d")]
        )),
        "InvalidZone.NotFound"
    );
    assert_eq!(
        code(w.handle(
            w.root(),
            "DescribeAvailabilityZones",
            &[("ZoneName.1", "us-east-1z")]
        )),
        "InvalidParameterValue"
    );
    // The copy into us-west-2 gives the data root a second region.
    let west = {
        let mut ctx = w.ctx(w.root());
        ctx.region = "us-west-2".into();
        ctx
    };
    let params = World::params(
        "CopySnapshot",
        &[("SourceRegion", REGION), ("SourceSnapshotId", &snap)],
    );
    let r = wire::handle(&w.services, &west, &params);
    assert_eq!(r.status, 200, "{}", r.xml);
    let (_, regions) = w.call("DescribeRegions", &[]);
    assert_eq!(
        regions["Regions"],
        json!([
            {"Endpoint": "ec2.us-east-1.amazonaws.com", "RegionName": "us-east-1", "OptInStatus": "opt-in-not-required"},
            {"Endpoint": "ec2.us-west-2.amazonaws.com", "RegionName": "us-west-2", "OptInStatus": "opt-in-not-required"},
        ])
    );
    // DestinationRegion must be where the request went.
    let params = World::params(
        "CopySnapshot",
        &[
            ("SourceRegion", REGION),
            ("SourceSnapshotId", &snap),
            ("DestinationRegion", "eu-west-1"),
        ],
    );
    assert_eq!(
        code(wire::handle(&w.services, &west, &params)),
        "InvalidParameterValue"
    );
    // Every call is in CloudTrail, refusals too.
    let events = |name: &str| {
        let req = ebsim::service::cloudtrail::CloudTrailRequest::from_json(
            "LookupEvents",
            json!({"LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": name}]}),
        )
        .unwrap();
        let out = w.services.cloudtrail(&w.ctx(w.root()), req).unwrap();
        out["Events"].as_array().unwrap().clone()
    };
    for name in [
        "CreateTags",
        "DeleteTags",
        "DescribeTags",
        "DescribeAvailabilityZones",
        "DescribeRegions",
    ] {
        let e = events(name);
        assert!(!e.is_empty(), "{name}: no record");
        assert!(
            e.iter().all(|e| e["EventSource"] == "ec2.amazonaws.com"),
            "{e:?}"
        );
    }
    let created = events("CreateTags");
    for code in [
        "Client.UnauthorizedOperation",
        "Client.TagLimitExceeded",
        "Client.InvalidID",
    ] {
        assert!(
            created
                .iter()
                .any(|e| e["CloudTrailEvent"].as_str().unwrap().contains(code)),
            "no CreateTags record with {code}"
        );
    }
}

#[test]
fn protocol_errors_are_ec2s() {
    let w = world();
    let r = wire::handle(&w.services, &w.ctx(w.root()), &[]);
    assert_eq!((r.status, element(&r.xml, "Code")), (400, "MissingAction"));
    let r = w.handle(w.root(), "RunScheduledInstances", &[]);
    assert_eq!(element(&r.xml, "Code"), "InvalidAction");
    assert!(element(&r.xml, "Message").contains("RunScheduledInstances"));
    let p = vec![
        ("Action".to_string(), "DescribeVolumes".to_string()),
        ("Version".to_string(), "2014-06-15".to_string()),
    ];
    let r = wire::handle(&w.services, &w.ctx(w.root()), &p);
    assert_eq!(element(&r.xml, "Code"), "InvalidParameterValue");
    let r = w.handle(w.root(), "DescribeVolumes", &[("Bogus", "1")]);
    assert_eq!(element(&r.xml, "Code"), "UnknownParameter");
    let r = w.handle(w.root(), "CreateVolume", &[("Size", "-3")]);
    assert_eq!(
        (r.status, element(&r.xml, "Code")),
        (400, "InvalidParameterValue")
    );
    let r = w.handle(w.root(), "DeleteVolume", &[]);
    assert_eq!(element(&r.xml, "Code"), "MissingParameter");
    let r = w.handle(
        w.root(),
        "DeleteVolume",
        &[("VolumeId", "vol-0123456789abcdef0")],
    );
    assert_eq!(
        (r.status, element(&r.xml, "Code")),
        (400, "InvalidVolume.NotFound")
    );
    assert_eq!(
        element(&r.xml, "Message"),
        "The volume &apos;vol-0123456789abcdef0&apos; does not exist."
    );
    assert!(
        r.xml
            .starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error>")
    );
    let r = w.handle(w.nobody(), "DescribeVolumes", &[]);
    assert_eq!(
        (r.status, element(&r.xml, "Code")),
        (403, "UnauthorizedOperation")
    );
}

fn well_formed(xml: &str) {
    let mut r = quick_xml::Reader::from_str(xml);
    r.config_mut().check_end_names = true;
    loop {
        match r.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("not well-formed ({e}): {xml}"),
        }
    }
}

/// Pieces EC2 Query bodies are made of, so random bodies reach deep into the
/// schemas (the fuzz target `ec2_query` explores raw bytes).
const PIECES: &[&str] = &[
    "Action=",
    "DescribeVolumes",
    "CreateTags",
    "CreateVolume",
    "CopySnapshot",
    "&Version=2016-11-15",
    "&",
    "=",
    ".",
    "1",
    "2",
    "0",
    "99",
    "-7",
    "Filter",
    "Name",
    "Value",
    "Tag",
    "Key",
    "TagSpecification",
    "ResourceId",
    "VolumeId",
    "Size",
    "DryRun",
    "true",
    "%",
    "%3C",
    "%26",
    "%C3%28",
    "+",
    "\u{1}",
    "<",
    "]]>",
    "é",
    "",
    "ResourceType",
];

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// Any body: parsed, decoded under its own and every operation's schema,
    /// read by the service table; what decodes is written back as well-formed
    /// XML. Never a panic.
    #[test]
    fn the_codec_takes_any_body(picks in proptest::collection::vec(0..PIECES.len(), 0..40)) {
        let body: String = picks.iter().map(|&i| PIECES[i]).collect();
        if let Ok(params) = query::parse_form(body.as_bytes()) {
            if let Ok((op, json)) = wire::decode(&params) {
                let _ = ebsim::service::ec2::Ec2Request::from_json(op.name, json.clone());
                well_formed(&wire::encode(op, "r", &json).xml);
            }
            for op in wire::OPERATIONS {
                if let Ok(json) = query::decode(&params, op.input, query::Flavour::Ec2) {
                    well_formed(&wire::encode(op, "r", &json).xml);
                }
            }
            for (k, v) in &params {
                well_formed(&query::ec2_error(k, v, v));
            }
        }
    }
}

/// Runs the helper script with `stdin`; its stdout.
fn helper(args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("python3")
        .arg(script())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The plain Query flavour (IAM, STS) against botocore's QuerySerializer and
/// QueryParser, with schemas written here from their models: `Name.member.N`
/// lists in, `<Result>` wrapped members and `<member>` list items out.
#[test]
fn the_plain_query_flavour_matches_botocore() {
    use query::{BOOLEAN, Flavour, INTEGER, Member, STRING, Shape, TIMESTAMP};
    if !botocore() {
        common::skip("python3 with botocore is not installed");
        return;
    }
    const TAGS: Shape = Shape::List {
        of: &Shape::Structure(&[
            Member::new("Key", "Key", &STRING),
            Member::new("Value", "Value", &STRING),
        ]),
        item: "member",
    };
    const ASSUME_ROLE: Shape = Shape::Structure(&[
        Member::required("RoleArn", "RoleArn", &STRING),
        Member::required("RoleSessionName", "RoleSessionName", &STRING),
        Member::new(
            "PolicyArns",
            "PolicyArns",
            &Shape::List {
                of: &Shape::Structure(&[Member::new("arn", "arn", &STRING)]),
                item: "member",
            },
        ),
        Member::new("DurationSeconds", "DurationSeconds", &INTEGER),
        Member::new("Tags", "Tags", &TAGS),
        Member::new(
            "TransitiveTagKeys",
            "TransitiveTagKeys",
            &Shape::List {
                of: &STRING,
                item: "member",
            },
        ),
    ]);
    let params = json!({
        "RoleArn": "arn:aws:iam::111122223333:role/r",
        "RoleSessionName": "s1",
        "PolicyArns": [{"arn": "arn:aws:iam::aws:policy/A1"}, {"arn": "arn:aws:iam::aws:policy/A2"}],
        "DurationSeconds": 900,
        "Tags": [{"Key": "k", "Value": "v"}, {"Key": "k2", "Value": "v 2"}],
        "TransitiveTagKeys": ["k"]
    });
    let body = helper(&["serialize", "sts", "AssumeRole"], &params.to_string());
    let mut form = query::parse_form(body.trim().as_bytes()).unwrap();
    form.retain(|(k, _)| k != "Action" && k != "Version");
    assert_eq!(
        query::decode(&form, &ASSUME_ROLE, Flavour::Query).unwrap(),
        params
    );
    // Responses: a list of structures with a timestamp, a boolean.
    const LIST_USERS: Shape = Shape::Structure(&[
        Member::new(
            "Users",
            "Users",
            &Shape::List {
                of: &Shape::Structure(&[
                    Member::new("Path", "Path", &STRING),
                    Member::new("UserName", "UserName", &STRING),
                    Member::new("UserId", "UserId", &STRING),
                    Member::new("Arn", "Arn", &STRING),
                    Member::new("CreateDate", "CreateDate", &TIMESTAMP),
                    Member::new("Tags", "Tags", &TAGS),
                ]),
                item: "member",
            },
        ),
        Member::new("IsTruncated", "IsTruncated", &BOOLEAN),
    ]);
    let users = json!({
        "Users": [
            {"Path": "/", "UserName": "alice", "UserId": "AIDAEXAMPLE1", "Arn": "arn:aws:iam::111122223333:user/alice",
             "CreateDate": "2026-01-01T00:00:00.250000+00:00", "Tags": [{"Key": "team", "Value": "a&b"}]},
            {"Path": "/x/", "UserName": "bob", "UserId": "AIDAEXAMPLE2", "Arn": "arn:aws:iam::111122223333:user/x/bob",
             "CreateDate": "2026-01-02T00:00:00+00:00"}
        ],
        "IsTruncated": false
    });
    let xml = query::query_response(
        "ListUsers",
        "https://iam.amazonaws.com/doc/2010-05-08/",
        "rid-1",
        Some(&LIST_USERS),
        &users,
    );
    assert!(xml.left_out.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.xml");
    std::fs::write(&file, &xml.xml).unwrap();
    let parsed: Value = serde_json::from_str(&helper(
        &["parse", "iam", "ListUsers", file.to_str().unwrap()],
        "",
    ))
    .unwrap();
    assert_eq!(parsed["ResponseMetadata"]["RequestId"], "rid-1");
    assert_eq!(parsed["IsTruncated"], false);
    assert_eq!(parsed["Users"][0]["UserName"], "alice");
    assert_eq!(parsed["Users"][0]["Tags"][0]["Value"], "a&b");
    assert_eq!(
        parsed["Users"][0]["CreateDate"],
        "2026-01-01T00:00:00.250000+00:00"
    );
    assert_eq!(parsed["Users"][1]["Path"], "/x/");
    assert!(parsed["Users"][1].get("Tags").is_none());
}
