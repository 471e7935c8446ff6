//! The EBS direct APIs over `ebsim serve`, driven by boto3's `ebs` client
//! (tests/server_ebs.py) and the AWS CLI v2 (`aws ebs …`), and by `ebsim ebs …`.
//! A volume is written in this process (the engine's attach, as
//! tests/ec2_snapshots.rs does) and snapshotted with the CLI; the server reads its
//! blocks back, compares snapshots, writes a new snapshot block by block that
//! `ec2 create-volume --snapshot-id` restores, and refuses a user without
//! `ebs:GetSnapshotBlock`. A test whose client is missing is skipped
//! (common::skip).

#![allow(clippy::cast_possible_truncation)]

mod common;

use common::sandbox::Sandbox;
use common::server::{Server, client, key_of, run};
use ebsim::ec2::Ec2;
use std::path::Path;
use std::process::Command;

const BLOCK: usize = 512 * 1024;
const INSTANCE: &str = "i-0123456789abcdef0";

fn have_boto3() -> bool {
    common::server::have_python_module("boto3")
}

/// tests/server_ebs.py's mode with `args`: its last line, as JSON.
fn boto3(srv: &Server, key: &(String, String), args: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/server_ebs.py");
    let mut c = client("python3", srv, key);
    c.arg(script).args(args);
    let out = run(c);
    serde_json::from_str(out.lines().last().unwrap_or_default()).unwrap()
}

/// The sandbox's region as the library opens it (this process writes volumes).
fn engine(s: &Sandbox) -> (Ec2, ebsim::service::Caller) {
    let root = ebsim::home::DataRoot::open(s.home()).unwrap();
    let account = root.config().unwrap().account_id;
    let clock = ebsim::clock::Clock::system(chrono::TimeDelta::zero());
    let kms = ebsim::kms::Kms::open(&root, "us-east-1", clock).unwrap();
    (
        Ec2::new(&root, kms).unwrap(),
        ebsim::service::Caller::account_root(&account),
    )
}

fn write(s: &Sandbox, vol: &str, writes: &[(usize, Vec<u8>)]) {
    let (ec2, me) = engine(s);
    let a = ec2.attach(&me, vol, INSTANCE, "/dev/sdf").unwrap();
    for (at, data) in writes {
        a.image().write(*at as u64, data, false).unwrap();
    }
    a.detach(&ec2).unwrap();
}

/// The first `len` bytes of a volume (all of it if `len` is None).
fn read_all(s: &Sandbox, vol: &str, len: Option<usize>) -> Vec<u8> {
    let (ec2, me) = engine(s);
    let a = ec2.attach(&me, vol, INSTANCE, "/dev/sdf").unwrap();
    let mut buf = vec![0u8; len.unwrap_or(a.image().size() as usize)];
    a.image().read(0, &mut buf).unwrap();
    a.detach(&ec2).unwrap();
    buf
}

fn snapshot(s: &Sandbox, vol: &str) -> String {
    s.ok(&[
        "ec2",
        "create-snapshot",
        "--volume-id",
        vol,
        "--query",
        "SnapshotId",
        "--output",
        "text",
    ])
}

fn pattern(seed: u8) -> Vec<u8> {
    (0..BLOCK)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// An encrypted 8 MiB volume under a customer key, written in blocks 0 and 3,
/// snapshotted; then block 3 rewritten and block 5 written, snapshotted again.
/// Returns (key ARN, volume, first snapshot, second snapshot).
fn setup(s: &Sandbox) -> (String, String, String, String) {
    let key = s.ok(&[
        "kms",
        "create-key",
        "--query",
        "KeyMetadata.Arn",
        "--output",
        "text",
    ]);
    let vol = s.ok(&[
        "ec2",
        "create-volume",
        "--size-bytes",
        "8388608",
        "--encrypted",
        "--kms-key-id",
        &key,
        "--query",
        "VolumeId",
        "--output",
        "text",
    ]);
    write(
        s,
        &vol,
        &[
            (0, pattern(1)),
            (3 * BLOCK + 4096, pattern(2)[..8192].to_vec()),
        ],
    );
    let first = snapshot(s, &vol);
    write(s, &vol, &[(3 * BLOCK, pattern(3)), (5 * BLOCK, pattern(4))]);
    let second = snapshot(s, &vol);
    (key, vol, first, second)
}

#[test]
fn boto3_reads_compares_writes_and_is_refused_snapshot_blocks() {
    if !have_boto3() {
        return common::skip("boto3 is not installed (pip install boto3)");
    }
    let s = Sandbox::new();
    let (key_arn, vol, first, second) = setup(&s);
    let bytes_now = read_all(&s, &vol, None);
    let root_key = key_of(&s.ok(&["iam", "create-access-key"]));
    let srv = Server::start(&s, &[]);

    // Every block of the second snapshot: the volume's bytes, checksums checked.
    let out = s.path("blocks");
    let r = boto3(&srv, &root_key, &["read", &second, out.to_str().unwrap()]);
    assert_eq!(r["blocks"], serde_json::json!([0, 3, 5]));
    for i in [0usize, 3, 5] {
        let got = std::fs::read(out.join(i.to_string())).unwrap();
        assert!(
            got == bytes_now[i * BLOCK..(i + 1) * BLOCK],
            "block {i} differs from the volume's bytes"
        );
    }

    // Changed blocks: 3 changed, 5 is new; without a first snapshot, every block.
    let r = boto3(&srv, &root_key, &["changed", &first, &second]);
    assert_eq!(
        r["changed"],
        serde_json::json!([[3, true, true], [5, false, true]])
    );
    assert_eq!(r["all_of_second"], serde_json::json!([0, 3, 5]));

    // A snapshot written block by block, then restored by EC2.
    let r = boto3(&srv, &root_key, &["write", &key_arn, out.to_str().unwrap()]);
    let direct = r["snapshot"].as_str().unwrap().to_string();
    let restored = s.ok(&[
        "ec2",
        "create-volume",
        "--snapshot-id",
        &direct,
        "--query",
        "VolumeId",
        "--output",
        "text",
    ]);
    let d = s.ok(&[
        "ec2",
        "describe-snapshots",
        "--snapshot-ids",
        &direct,
        "--query",
        "Snapshots[0].[State,Encrypted,KmsKeyId,VolumeSize]",
        "--output",
        "text",
    ]);
    assert_eq!(
        d.split_whitespace().collect::<Vec<_>>(),
        ["completed", "True", key_arn.as_str(), "1"]
    );
    let back = read_all(&s, &restored, Some(8 * BLOCK));
    for i in [0usize, 7] {
        let want = std::fs::read(out.join(format!("w{i}"))).unwrap();
        assert!(back[i * BLOCK..(i + 1) * BLOCK] == want[..], "block {i}");
    }
    assert!(back[BLOCK..7 * BLOCK].iter().all(|&b| b == 0));
    assert!(
        back[3 * BLOCK..4 * BLOCK].iter().all(|&b| b == 0),
        "the refused block was kept"
    );

    // A user allowed to list blocks but not to read them.
    s.ok(&["iam", "create-user", "--user-name", "lister"]);
    s.ok(&[
        "iam",
        "put-user-policy",
        "--user-name",
        "lister",
        "--policy-name",
        "list",
        "--policy-document",
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":["ebs:ListSnapshotBlocks","kms:*"],"Resource":"*"}}"#,
    ]);
    let lister = key_of(&s.ok(&["iam", "create-access-key", "--user-name", "lister"]));
    let r = boto3(&srv, &lister, &["denied", &second]);
    assert_eq!(r["denied"], true);

    // CloudTrail: the block calls are data events from ebs.amazonaws.com, the
    // writes' start and completion management events.
    let log = std::fs::read_to_string(s.home().join("regions/us-east-1/cloudtrail.jsonl")).unwrap();
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["eventSource"] == "ebs.amazonaws.com")
        .collect();
    let named = |n: &str| events.iter().filter(|e| e["eventName"] == n).count();
    assert!(named("GetSnapshotBlock") >= 4, "{events:?}");
    assert!(named("PutSnapshotBlock") >= 3);
    // One started; the lister's attempt refused.
    assert_eq!(named("StartSnapshot"), 2);
    assert_eq!(
        events
            .iter()
            .filter(|e| e["eventName"] == "StartSnapshot" && e["errorCode"].is_null())
            .count(),
        1
    );
    assert!(named("CompleteSnapshot") >= 2);
    let denied = events
        .iter()
        .find(|e| e["eventName"] == "GetSnapshotBlock" && e["errorCode"] == "AccessDeniedException")
        .expect("the refused read is recorded");
    assert!(
        denied["userIdentity"]["arn"]
            .as_str()
            .unwrap()
            .ends_with("user/lister"),
        "{denied}"
    );
    let lookup = s.ok(&[
        "cloudtrail",
        "lookup-events",
        "--lookup-attributes",
        "AttributeKey=EventName,AttributeValue=StartSnapshot",
    ]);
    assert!(lookup.contains("ebs.amazonaws.com"), "{lookup}");
}

#[test]
fn aws_cli_v2_lists_snapshot_blocks() {
    let v2 = Command::new("/usr/bin/aws")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| String::from_utf8_lossy(&o.stdout).starts_with("aws-cli/2"));
    if v2.is_none() {
        return common::skip("the AWS CLI v2 (/usr/bin/aws, apt awscli) is not installed");
    }
    let s = Sandbox::new();
    let (_, _, _, second) = setup(&s);
    let key = key_of(&s.ok(&["iam", "create-access-key"]));
    let srv = Server::start(&s, &[]);
    let mut c = client("/usr/bin/aws", &srv, &key);
    c.args([
        "--endpoint-url",
        &srv.endpoint(),
        "ebs",
        "list-snapshot-blocks",
        "--snapshot-id",
        &second,
        "--query",
        "Blocks[].BlockIndex",
        "--output",
        "text",
    ]);
    let out = run(c);
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["0", "3", "5"]);
    let dir = s.path("v2");
    // get-snapshot-block writes the block to its OUTFILE: block 5 is pattern 4.
    let mut c = client("/usr/bin/aws", &srv, &key);
    c.args([
        "--endpoint-url",
        &srv.endpoint(),
        "ebs",
        "list-snapshot-blocks",
        "--snapshot-id",
        &second,
        "--starting-block-index",
        "5",
        "--query",
        "Blocks[0].BlockToken",
        "--output",
        "text",
    ]);
    let token = run(c).trim().to_string();
    let mut c = client("/usr/bin/aws", &srv, &key);
    c.args([
        "--endpoint-url",
        &srv.endpoint(),
        "ebs",
        "get-snapshot-block",
        "--snapshot-id",
        &second,
        "--block-index",
        "5",
        "--block-token",
        &token,
        "block5",
        "--query",
        "DataLength",
        "--output",
        "text",
    ]);
    c.current_dir(&dir);
    assert_eq!(run(c).trim(), "524288");
    assert!(std::fs::read(dir.join("block5")).unwrap() == pattern(4));
    // A snapshot written with start-snapshot, put-snapshot-block (signed with
    // UNSIGNED-PAYLOAD) and complete-snapshot.
    let aws = |args: &[&str]| {
        let mut c = client("/usr/bin/aws", &srv, &key);
        c.args(["--endpoint-url", &srv.endpoint(), "ebs"])
            .args(args)
            .args(["--output", "text"])
            .current_dir(&dir);
        run(c).trim().to_string()
    };
    let snap = aws(&[
        "start-snapshot",
        "--volume-size",
        "1",
        "--query",
        "SnapshotId",
    ]);
    let sum = {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(pattern(4)))
    };
    let got = aws(&[
        "put-snapshot-block",
        "--snapshot-id",
        &snap,
        "--block-index",
        "2",
        "--block-data",
        "block5",
        "--data-length",
        "524288",
        "--checksum",
        &sum,
        "--checksum-algorithm",
        "SHA256",
        "--query",
        "Checksum",
    ]);
    assert_eq!(got, sum);
    let done = aws(&[
        "complete-snapshot",
        "--snapshot-id",
        &snap,
        "--changed-blocks-count",
        "1",
        "--query",
        "Status",
    ]);
    assert_eq!(done, "completed");
    let mut c = client("/usr/bin/aws", &srv, &key);
    c.args([
        "--endpoint-url",
        &srv.endpoint(),
        "ebs",
        "list-snapshot-blocks",
        "--snapshot-id",
        "snap-00000000000000000",
    ]);
    let o = c.current_dir(&dir).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("(ResourceNotFoundException) when calling the ListSnapshotBlocks operation"),
        "{err}"
    );
}

/// The same operations through `ebsim ebs …`: write a snapshot, read it back.
#[test]
fn ebsim_cli_writes_and_reads_a_snapshot_block_by_block() {
    let s = Sandbox::new();
    let dir = s.path("cli");
    let data = pattern(9);
    let file = dir.join("block");
    std::fs::write(&file, &data).unwrap();
    let sum = {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&data))
    };
    let start = || {
        s.ok(&[
            "ebs",
            "start-snapshot",
            "--volume-size",
            "1",
            "--encrypted",
            "--client-token",
            "once",
            "--query",
            "SnapshotId",
            "--output",
            "text",
        ])
    };
    let snap = start();
    assert_eq!(start(), snap, "the same ClientToken, the same snapshot");
    let bad = s.ebsim(&[
        "ebs",
        "put-snapshot-block",
        "--snapshot-id",
        &snap,
        "--block-index",
        "2",
        "--block-data",
        &format!("fileb://{}", file.display()),
        "--data-length",
        "524288",
        "--checksum",
        "AAAA",
        "--checksum-algorithm",
        "SHA256",
    ]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("ValidationException"), "{}", bad.stderr);
    s.ok(&[
        "ebs",
        "put-snapshot-block",
        "--snapshot-id",
        &snap,
        "--block-index",
        "2",
        "--block-data",
        &format!("fileb://{}", file.display()),
        "--data-length",
        "524288",
        "--checksum",
        &sum,
        "--checksum-algorithm",
        "SHA256",
    ]);
    let done = s.ok(&[
        "ebs",
        "complete-snapshot",
        "--snapshot-id",
        &snap,
        "--changed-blocks-count",
        "1",
        "--query",
        "Status",
        "--output",
        "text",
    ]);
    assert_eq!(done, "completed");
    let token = s.ok(&[
        "ebs",
        "list-snapshot-blocks",
        "--snapshot-id",
        &snap,
        "--query",
        "Blocks[0].BlockToken",
        "--output",
        "text",
    ]);
    let out = dir.join("out");
    let got = s.ok(&[
        "ebs",
        "get-snapshot-block",
        "--snapshot-id",
        &snap,
        "--block-index",
        "2",
        "--block-token",
        &token,
        out.to_str().unwrap(),
        "--query",
        "Checksum",
        "--output",
        "text",
    ]);
    assert_eq!(got, sum);
    assert!(std::fs::read(&out).unwrap() == data);
    // Encrypted by default under the AWS managed key; stored as ciphertext.
    let d = s.ok(&[
        "ec2",
        "describe-snapshots",
        "--snapshot-ids",
        &snap,
        "--query",
        "Snapshots[0].Encrypted",
        "--output",
        "text",
    ]);
    assert_eq!(d, "True");
    let stored = common::all_files(&s.home().join("regions/us-east-1/snapshots"));
    assert!(!stored.is_empty());
    assert!(
        stored
            .iter()
            .all(|(_, b)| !common::contains(b, &data[..4096]))
    );
}

/// A snapshot not completed within its Timeout is set to `error` by the next EBS
/// direct call, its blocks collected; a completed one keeps its blocks.
#[test]
fn an_uncompleted_snapshot_past_its_timeout_is_settled_and_leaves_no_blocks() {
    use ebsim::ec2::model::{PutSnapshotBlockRequest, StartSnapshotRequest};
    let s = Sandbox::new();
    s.ok(&["ec2", "describe-volumes"]);
    let root = ebsim::home::DataRoot::open(s.home()).unwrap();
    let account = root.config().unwrap().account_id;
    let mut clock = ebsim::clock::Clock::manual(chrono::Utc::now());
    let kms = ebsim::kms::Kms::open(&root, "us-east-1", clock.clone()).unwrap();
    let ec2 = Ec2::new(&root, kms).unwrap();
    let me = ebsim::service::Caller::account_root(&account);
    let start = |timeout| {
        ec2.start_snapshot(
            &me,
            StartSnapshotRequest {
                volume_size: 1,
                encrypted: Some(true),
                timeout: Some(timeout),
                ..Default::default()
            },
        )
        .unwrap()
        .snapshot_id
    };
    let put = |id: &str, index: u64, seed: u8| {
        let data = pattern(seed);
        let checksum = ebsim::service::ebs::checksum(&data);
        ec2.put_snapshot_block(
            &me,
            PutSnapshotBlockRequest {
                snapshot_id: id.to_string(),
                block_index: index,
                data_length: data.len() as u64,
                block_data: zeroize::Zeroizing::new(data),
                progress: None,
                checksum,
                checksum_algorithm: "SHA256".into(),
            },
        )
    };
    let blocks_dir = s.home().join("regions/us-east-1/snapshots/blocks");
    let stored = || {
        common::all_files(&blocks_dir)
            .iter()
            .filter(|(p, _)| p.extension().is_some_and(|x| x == "blk"))
            .count()
    };
    let short = start(10);
    let long = start(120);
    put(&short, 0, 1).unwrap();
    put(&short, 1, 2).unwrap();
    put(&long, 0, 3).unwrap();
    assert_eq!(stored(), 3);

    clock.advance(chrono::TimeDelta::minutes(11));
    // The next call settles the short one; its blocks go, the long one's stay.
    let e = put(&short, 2, 4).unwrap_err();
    assert_eq!(e.code(), "ValidationException", "{e}");
    let d = ec2
        .describe_snapshots(&me, std::slice::from_ref(&short), &[])
        .unwrap();
    let snap = &d.snapshots[0];
    assert_eq!(snap.state, "error");
    assert!(
        snap.state_message
            .as_deref()
            .is_some_and(|m| m.contains("timeout of 10 minutes")),
        "{snap:?}"
    );
    assert_eq!(stored(), 1, "only the long snapshot's block is left");

    // The long one completes, and stays whole through a later collection.
    let done = ec2
        .complete_snapshot(
            &me,
            ebsim::ec2::model::CompleteSnapshotRequest {
                snapshot_id: long.clone(),
                changed_blocks_count: 1,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(done.status, "completed");
    ec2.collect_blocks().unwrap();
    assert_eq!(stored(), 1);
    // Nothing is left to settle: a second pass changes nothing.
    clock.advance(chrono::TimeDelta::minutes(200));
    ec2.describe_snapshots(&me, &[], &[]).unwrap();
    ec2.collect_blocks().unwrap();
    assert_eq!(stored(), 1);
}

/// A PutSnapshotBlock killed between storing its block and naming it leaves the
/// block to the next process that opens the region, which collects it; the
/// snapshot is still pending and takes the block again.
#[test]
fn a_put_killed_before_its_commit_leaves_no_block_behind() {
    let s = Sandbox::new();
    let dir = s.path("crash");
    let data = pattern(7);
    let file = dir.join("block");
    std::fs::write(&file, &data).unwrap();
    let sum = {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&data))
    };
    let snap = s.ok(&[
        "ebs",
        "start-snapshot",
        "--volume-size",
        "1",
        "--query",
        "SnapshotId",
        "--output",
        "text",
    ]);
    let blockfile = format!("fileb://{}", file.display());
    let put: Vec<&str> = vec![
        "ebs",
        "put-snapshot-block",
        "--snapshot-id",
        &snap,
        "--block-index",
        "1",
        "--block-data",
        &blockfile,
        "--data-length",
        "524288",
        "--checksum",
        &sum,
        "--checksum-algorithm",
        "SHA256",
    ];
    let blocks_dir = s.home().join("regions/us-east-1/snapshots/blocks");
    let stored = || {
        common::all_files(&blocks_dir)
            .iter()
            .filter(|(p, _)| p.extension().is_some_and(|x| x == "blk"))
            .count()
    };
    let killed = Command::new(env!("CARGO_BIN_EXE_ebsim"))
        .args(&put)
        .env("EBSIM_HOME", s.home())
        .env("EBSIM_FAULT", "put-block:after-store")
        .env_remove("EBSIM_NOW")
        .output()
        .unwrap();
    assert!(killed.status.code().is_none(), "not killed: {killed:?}");
    assert_eq!(stored(), 1, "the block was stored before the kill");
    // The next command collects it; the snapshot is still pending.
    let state = s.ok(&[
        "ec2",
        "describe-snapshots",
        "--snapshot-ids",
        &snap,
        "--query",
        "Snapshots[0].State",
        "--output",
        "text",
    ]);
    assert_eq!(state, "pending");
    assert_eq!(stored(), 0, "the unnamed block is collected");
    s.ok(&put);
    assert_eq!(stored(), 1);
    let done = s.ok(&[
        "ebs",
        "complete-snapshot",
        "--snapshot-id",
        &snap,
        "--changed-blocks-count",
        "1",
        "--query",
        "Status",
        "--output",
        "text",
    ]);
    assert_eq!(done, "completed");
    assert_eq!(stored(), 1);
}
