//! The real AWS CLI (v1 from pip, v2 from Debian) and boto3 against `ebsim
//! serve`, signing with a real access key (SigV4 verified). What it shows: the
//! clients' own serializers and parsers work with ebsim's EC2 Query protocol end
//! to end — the volume, snapshot and copy lifecycle, copy-snapshot's presigned
//! URL, tags, zones, regions, encryption by default, simulated instances and
//! AttachVolume to them, DryRun and errors, boto3's waiters and paginators.

mod common;

use common::sandbox::Sandbox;
use std::path::Path;
use std::process::{Command, Output};

/// `ebsim serve` on a sandbox's data root, with the account root's access key,
/// and a HOME of its own for the AWS CLI.
struct Server {
    // Dropped first: the server stops before its data root goes.
    _srv: common::server::Server,
    _sandbox: Sandbox,
    url: String,
    home: tempfile::TempDir,
    key: (String, String),
}

fn server() -> Server {
    let sandbox = Sandbox::new();
    let key = common::server::root_key(&sandbox);
    let srv = common::server::Server::start(&sandbox, &[]);
    Server {
        url: srv.endpoint(),
        _srv: srv,
        _sandbox: sandbox,
        home: tempfile::tempdir().unwrap(),
        key,
    }
}

impl Server {
    fn aws(&self, cli: &Path, region: &str, args: &[&str]) -> Output {
        Command::new(cli)
            .args([
                "--endpoint-url",
                &self.url,
                "--region",
                region,
                "--output",
                "json",
            ])
            .args(args)
            .env("HOME", self.home.path())
            .env("AWS_ACCESS_KEY_ID", &self.key.0)
            .env("AWS_SECRET_ACCESS_KEY", &self.key.1)
            .env("AWS_CONFIG_FILE", self.home.path().join("config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.home.path().join("credentials"),
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_PAGER", "")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_DEFAULT_REGION")
            .output()
            .unwrap()
    }

    /// Runs the CLI, which must succeed; its JSON output.
    fn ok(&self, cli: &Path, region: &str, args: &[&str]) -> serde_json::Value {
        let o = self.aws(cli, region, args);
        assert!(
            o.status.success(),
            "{} {args:?}: {}",
            cli.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        if o.stdout.iter().all(u8::is_ascii_whitespace) {
            return serde_json::Value::Null;
        }
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&o.stdout)))
    }

    /// Runs the CLI, which must fail with AWS's error `code`.
    fn fails(&self, cli: &Path, region: &str, args: &[&str], code: &str) {
        let o = self.aws(cli, region, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(
            err.contains(&format!("({code})")),
            "{args:?}: expected {code}: {err}"
        );
    }
}

/// `aws --version`'s major version (`aws-cli/2.9.19 …` → 2), if it runs.
fn major_version(cli: &Path) -> Option<char> {
    let o = Command::new(cli).arg("--version").output().ok()?;
    if !o.status.success() {
        return None;
    }
    // Old v1 releases print it on stderr.
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    text.strip_prefix("aws-cli/")?.chars().next()
}

/// One AWS CLI of each major version found: pip's, Debian's, PATH's.
fn clis() -> Vec<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let candidates = ["/root/.pyenv/shims/aws", "/usr/bin/aws"]
        .iter()
        .map(std::path::PathBuf::from)
        .chain(std::env::split_paths(&path).map(|d| d.join("aws")));
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for c in candidates {
        if let Some(major) = major_version(&c)
            && !seen.contains(&major)
        {
            seen.push(major);
            out.push(c);
        }
    }
    out
}

#[test]
fn the_aws_cli_runs_the_ec2_lifecycle() {
    let clis = clis();
    if clis.is_empty() {
        common::skip("no aws CLI installed (pip install awscli, apt-get install awscli)");
        return;
    }
    for cli in &clis {
        let s = server();
        let cli = cli.as_path();
        let east = "us-east-1";
        let v = s.ok(
            cli,
            east,
            &[
                "ec2",
                "create-volume",
                "--availability-zone",
                "us-east-1a",
                "--size",
                "1",
                "--encrypted",
                "--tag-specifications",
                "ResourceType=volume,Tags=[{Key=Name,Value=db}]",
            ],
        );
        let vol = v["VolumeId"].as_str().unwrap().to_string();
        assert_eq!(v["Encrypted"], true);
        assert_eq!(v["AvailabilityZone"], "us-east-1a");
        let d = s.ok(
            cli,
            east,
            &["ec2", "describe-volumes", "--volume-ids", &vol],
        );
        assert_eq!(d["Volumes"][0]["State"], "available");
        assert_eq!(d["Volumes"][0]["Tags"][0]["Value"], "db");
        assert!(
            d["Volumes"][0]["CreateTime"]
                .as_str()
                .unwrap()
                .starts_with("20"),
            "{d}"
        );
        let d = s.ok(
            cli,
            east,
            &[
                "ec2",
                "describe-volumes",
                "--filters",
                "Name=tag:Name,Values=db",
            ],
        );
        assert_eq!(d["Volumes"].as_array().unwrap().len(), 1);
        s.ok(
            cli,
            east,
            &["ec2", "wait", "volume-available", "--volume-ids", &vol],
        );
        let snap = s.ok(
            cli,
            east,
            &[
                "ec2",
                "create-snapshot",
                "--volume-id",
                &vol,
                "--description",
                "nightly",
            ],
        )["SnapshotId"]
            .as_str()
            .unwrap()
            .to_string();
        s.ok(
            cli,
            east,
            &["ec2", "wait", "snapshot-completed", "--snapshot-ids", &snap],
        );
        let d = s.ok(
            cli,
            east,
            &["ec2", "describe-snapshots", "--snapshot-ids", &snap],
        );
        assert_eq!(d["Snapshots"][0]["Description"], "nightly");
        assert_eq!(d["Snapshots"][0]["State"], "completed");
        // A copy into another region: the CLI presigns CopySnapshot for the source.
        let copy = s.ok(
            cli,
            "us-west-2",
            &[
                "ec2",
                "copy-snapshot",
                "--source-region",
                east,
                "--source-snapshot-id",
                &snap,
                "--encrypted",
            ],
        )["SnapshotId"]
            .as_str()
            .unwrap()
            .to_string();
        let d = s.ok(
            cli,
            "us-west-2",
            &["ec2", "describe-snapshots", "--snapshot-ids", &copy],
        );
        assert!(
            d["Snapshots"][0]["KmsKeyId"]
                .as_str()
                .unwrap()
                .starts_with("arn:aws:kms:us-west-2:"),
            "{d}"
        );
        // Tags.
        s.ok(
            cli,
            east,
            &[
                "ec2",
                "create-tags",
                "--resources",
                &vol,
                &snap,
                "--tags",
                "Key=env,Value=prod",
            ],
        );
        let t = s.ok(
            cli,
            east,
            &["ec2", "describe-tags", "--filters", "Name=key,Values=env"],
        );
        assert_eq!(t["Tags"].as_array().unwrap().len(), 2, "{t}");
        s.ok(
            cli,
            east,
            &[
                "ec2",
                "delete-tags",
                "--resources",
                &snap,
                "--tags",
                "Key=env",
            ],
        );
        let t = s.ok(cli, east, &["ec2", "describe-tags"]);
        assert_eq!(t["Tags"].as_array().unwrap().len(), 2, "{t}");
        // Zones, regions, encryption by default.
        let z = s.ok(cli, east, &["ec2", "describe-availability-zones"]);
        assert_eq!(z["AvailabilityZones"][2]["ZoneName"], "us-east-1c");
        let r = s.ok(cli, east, &["ec2", "describe-regions"]);
        let names: Vec<&str> = r["Regions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["RegionName"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["us-east-1", "us-west-2"]);
        let e = s.ok(cli, east, &["ec2", "enable-ebs-encryption-by-default"]);
        assert_eq!(e["EbsEncryptionByDefault"], true);
        let k = s.ok(cli, east, &["ec2", "get-ebs-default-kms-key-id"]);
        assert_eq!(k["KmsKeyId"], "alias/aws/ebs");
        // (Older models, the Debian CLI's, require the zone.)
        let v2 = s.ok(
            cli,
            east,
            &[
                "ec2",
                "create-volume",
                "--size",
                "1",
                "--availability-zone",
                "us-east-1b",
            ],
        );
        assert_eq!(v2["Encrypted"], true);
        let m = s.ok(
            cli,
            east,
            &["ec2", "modify-volume", "--volume-id", &vol, "--size", "2"],
        );
        assert_eq!(m["VolumeModification"]["TargetSize"], 2);
        // DryRun and errors.
        s.fails(
            cli,
            east,
            &["ec2", "delete-volume", "--volume-id", &vol, "--dry-run"],
            "DryRunOperation",
        );
        s.fails(
            cli,
            east,
            &[
                "ec2",
                "describe-volumes",
                "--volume-ids",
                "vol-0123456789abcdef0",
            ],
            "InvalidVolume.NotFound",
        );
        s.fails(
            cli,
            east,
            &[
                "ec2",
                "create-volume",
                "--size",
                "1",
                "--availability-zone",
                "us-east-1q",
            ],
            "InvalidZone.NotFound",
        );
        s.ok(
            cli,
            "us-west-2",
            &["ec2", "delete-snapshot", "--snapshot-id", &copy],
        );
        s.ok(
            cli,
            east,
            &["ec2", "delete-snapshot", "--snapshot-id", &snap],
        );
        s.ok(cli, east, &["ec2", "delete-volume", "--volume-id", &vol]);
        let d = s.ok(cli, east, &["ec2", "describe-volumes"]);
        assert_eq!(d["Volumes"].as_array().unwrap().len(), 1);

        // A simulated instance, a volume attached to it, and its end.
        let r = s.ok(
            cli,
            east,
            &[
                "ec2",
                "run-instances",
                "--image-id",
                "ami-12345678",
                "--count",
                "1",
            ],
        );
        let inst = r["Instances"][0]["InstanceId"]
            .as_str()
            .unwrap()
            .to_string();
        s.ok(
            cli,
            east,
            &["ec2", "wait", "instance-running", "--instance-ids", &inst],
        );
        let v = s.ok(
            cli,
            east,
            &[
                "ec2",
                "create-volume",
                "--availability-zone",
                "us-east-1a",
                "--size",
                "1",
            ],
        );
        let data = v["VolumeId"].as_str().unwrap().to_string();
        let a = s.ok(
            cli,
            east,
            &[
                "ec2",
                "attach-volume",
                "--volume-id",
                &data,
                "--instance-id",
                &inst,
                "--device",
                "/dev/sdf",
            ],
        );
        assert_eq!(a["State"], "attached");
        s.ok(
            cli,
            east,
            &["ec2", "wait", "volume-in-use", "--volume-ids", &data],
        );
        let d = s.ok(
            cli,
            east,
            &["ec2", "describe-instances", "--instance-ids", &inst],
        );
        let mapping = &d["Reservations"][0]["Instances"][0]["BlockDeviceMappings"][0];
        assert_eq!(mapping["DeviceName"], "/dev/sdf");
        assert_eq!(mapping["Ebs"]["VolumeId"], data.as_str());
        s.fails(
            cli,
            east,
            &["ec2", "delete-volume", "--volume-id", &data],
            "VolumeInUse",
        );
        s.ok(
            cli,
            east,
            &["ec2", "terminate-instances", "--instance-ids", &inst],
        );
        s.ok(
            cli,
            east,
            &[
                "ec2",
                "wait",
                "instance-terminated",
                "--instance-ids",
                &inst,
            ],
        );
        s.ok(
            cli,
            east,
            &["ec2", "wait", "volume-available", "--volume-ids", &data],
        );
        s.ok(cli, east, &["ec2", "delete-volume", "--volume-id", &data]);
    }
}

#[test]
fn boto3_waiters_and_paginators_read_ebsim() {
    let has_boto3 = Command::new("python3")
        .args(["-c", "import boto3"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_boto3 {
        common::skip("python3 with boto3 is not installed");
        return;
    }
    let s = server();
    let script = r#"
import sys, boto3
ec2 = boto3.client("ec2", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3])
ids = [ec2.create_volume(Size=1, TagSpecifications=[{"ResourceType": "volume",
       "Tags": [{"Key": "n", "Value": str(i)}]}])["VolumeId"] for i in range(7)]
ec2.get_waiter("volume_available").wait(VolumeIds=ids)
pages = list(ec2.get_paginator("describe_volumes").paginate(PaginationConfig={"PageSize": 5}))
assert [len(p["Volumes"]) for p in pages] == [5, 2], [len(p["Volumes"]) for p in pages]
tags = [t for p in ec2.get_paginator("describe_tags").paginate(PaginationConfig={"PageSize": 5}) for t in p["Tags"]]
assert sorted(t["Value"] for t in tags) == [str(i) for i in range(7)], tags
try:
    ec2.delete_volume(VolumeId=ids[0], DryRun=True)
    raise SystemExit("DryRun succeeded")
except ec2.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "DryRunOperation", e.response
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 412, e.response
# A copy's PresignedUrl must verify: botocore's own is taken, a forged or
# tampered one is refused.
snap = ec2.create_snapshot(VolumeId=ids[1])["SnapshotId"]
west = boto3.client("ec2", endpoint_url=sys.argv[1], region_name="us-west-2",
                    aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3])
copy = west.copy_snapshot(SourceRegion="us-east-1", SourceSnapshotId=snap)["SnapshotId"]
west.delete_snapshot(SnapshotId=copy)
for url in [sys.argv[1] + "/?Action=CopySnapshot&SourceRegion=us-east-1&SourceSnapshotId=" + snap,
            "not a url"]:
    try:
        west.copy_snapshot(SourceRegion="us-east-1", SourceSnapshotId=snap, PresignedUrl=url)
        raise SystemExit("a forged PresignedUrl was taken: " + url)
    except west.exceptions.ClientError as e:
        assert e.response["Error"]["Code"] == "InvalidParameterValue", e.response
        assert "PresignedUrl" in e.response["Error"]["Message"], e.response
ec2.delete_snapshot(SnapshotId=snap)
for i in ids:
    ec2.delete_volume(VolumeId=i)
ec2.get_waiter("volume_deleted").wait(VolumeIds=ids[:1])
print("ok")
"#;
    let o = Command::new("python3")
        .args(["-c", script, &s.url, &s.key.0, &s.key.1])
        .env("HOME", s.home.path())
        .env("AWS_CONFIG_FILE", s.home.path().join("config"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("ok"),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
