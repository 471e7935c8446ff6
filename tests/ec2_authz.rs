//! EC2 as a real service: every operation authorized by IAM identity policies
//! with EC2's action names, resource ARNs and condition keys
//! (UnauthorizedOperation otherwise, DryRun included), and recorded in the
//! region's CloudTrail log (`ec2.amazonaws.com`), found again by LookupEvents.

mod common;

use common::sandbox::Sandbox;
use common::*;
use ebsim::ErrorKind as K;
use ebsim::ec2::Ec2;
use ebsim::ec2::authz::decode_authorization_message;
use ebsim::ec2::model::*;
use ebsim::iam::{EntityKind, Iam, NewEntity, Principal};
use ebsim::kms::access::Caller;
use ebsim::kms::audit::{LookupAttribute, LookupQuery, lookup};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const REGION: &str = "us-east-1";
const INSTANCE: &str = "i-0123456789abcdef0";

fn ec2(env: &Env) -> Ec2 {
    Ec2::new(&env.root, env.region(REGION)).unwrap()
}

/// IAM user `name` with an optional inline policy, as a caller.
fn user(env: &Env, name: &str, policy: Option<&str>) -> Caller {
    let root = Principal::root(ACCOUNT);
    let iam = Iam::open(&env.root).unwrap();
    iam.create(&root, &NewEntity::user(name), start()).unwrap();
    if let Some(p) = policy {
        iam.put_policy(&root, EntityKind::User, name, "inline", p)
            .unwrap();
    }
    let arn = format!("arn:aws:iam::{ACCOUNT}:user/{name}");
    let id = iam
        .get(ACCOUNT, EntityKind::User, name)
        .unwrap()
        .unwrap()
        .id;
    Caller {
        principal_id: Some(id),
        ..Caller::new(Principal::parse(&arn).unwrap())
    }
}

/// A policy allowing `actions` on every resource.
fn allow(actions: &[&str]) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]
    })
    .to_string()
}

fn tags(pairs: &[(&str, &str)]) -> Vec<Tag> {
    pairs
        .iter()
        .map(|(k, v)| Tag {
            key: k.to_string(),
            value: v.to_string(),
        })
        .collect()
}

fn create_req(bytes: u64, tag_pairs: &[(&str, &str)]) -> CreateVolumeRequest {
    CreateVolumeRequest {
        size_bytes: Some(bytes),
        tag_specifications: if tag_pairs.is_empty() {
            vec![]
        } else {
            vec![TagSpecification {
                resource_type: "volume".into(),
                tags: tags(tag_pairs),
            }]
        },
        ..Default::default()
    }
}

/// A small unencrypted volume made by the account root.
fn volume(ec2: &Ec2, env: &Env, tag_pairs: &[(&str, &str)]) -> String {
    ec2.create_volume(&env.me, create_req(MIB, tag_pairs))
        .unwrap()
        .volume_id
}

fn snapshot(ec2: &Ec2, env: &Env, vol: &str) -> String {
    ec2.create_snapshot(&env.me, vol, "", vec![])
        .unwrap()
        .snapshot_id
}

/// Asserts UnauthorizedOperation for `action` on `resource`; returns the message.
#[track_caller]
fn denied<T: std::fmt::Debug>(r: Result<T, ebsim::Error>, action: &str, resource: &str) -> String {
    let m = expect_err(r, K::UnauthorizedOperation);
    assert!(
        m.starts_with("You are not authorized to perform this operation. User: arn:aws:"),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            " is not authorized to perform: {action} on resource: {resource} "
        )),
        "{m}"
    );
    assert!(
        m.contains(". Encoded authorization failure message: "),
        "{m}"
    );
    m
}

fn records(env: &Env) -> Vec<Value> {
    std::fs::read_to_string(env.kms.audit_log_path())
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ec2_records(env: &Env, name: &str) -> Vec<Value> {
    records(env)
        .into_iter()
        .filter(|r| r["eventSource"] == "ec2.amazonaws.com" && r["eventName"] == name)
        .collect()
}

fn lookup_by(env: &Env, key: &str, value: &str) -> Vec<Value> {
    let out = lookup(
        env.kms.audit_log_path(),
        &LookupQuery {
            attributes: vec![LookupAttribute {
                attribute_key: key.into(),
                attribute_value: value.into(),
            }],
            ..Default::default()
        },
    )
    .unwrap();
    out["Events"].as_array().unwrap().clone()
}

/// Runs `op` as a user without policies (UnauthorizedOperation naming `action`),
/// then as one allowed `action` and `extra` on every resource (success).
fn check(env: &Env, action: &str, extra: &[&str], op: impl Fn(&Caller) -> ebsim::Result<()>) {
    let name = action.replace(':', "-");
    let nobody = user(env, &format!("no-{name}"), None);
    let e = op(&nobody).unwrap_err();
    // The EBS direct APIs refuse in their own words (AccessDeniedException).
    let refused = if action.starts_with("ebs:") {
        K::AccessDenied
    } else {
        K::UnauthorizedOperation
    };
    assert_eq!(e.kind(), refused, "{action}: {e}");
    assert!(
        e.message().contains(&format!(
            "is not authorized to perform: {action} on resource: "
        )),
        "{action}: {e}"
    );
    let mut actions = vec![action];
    actions.extend(extra);
    let allowed = user(env, &format!("can-{name}"), Some(&allow(&actions)));
    op(&allowed).unwrap_or_else(|e| panic!("{action} allowed: {e}"));
}

#[test]
fn every_operation_needs_its_action_and_the_account_root_needs_none() {
    let env = Env::new();
    let ec2 = ec2(&env);
    let key = env.create_key();
    let other_key = env.create_key();
    let del = volume(&ec2, &env, &[]);
    let grow = volume(&ec2, &env, &[]);
    let source = volume(&ec2, &env, &[]);
    let s1 = snapshot(&ec2, &env, &source);
    let s2 = snapshot(&ec2, &env, &source);
    let s_del = snapshot(&ec2, &env, &source);
    let rekey = ec2
        .create_volume(
            &env.me,
            CreateVolumeRequest {
                encrypted: Some(true),
                kms_key_id: Some(key.key_id.clone()),
                ..create_req(MIB, &[])
            },
        )
        .unwrap()
        .volume_id;

    check(&env, "ec2:CreateVolume", &[], |who| {
        ec2.create_volume(who, create_req(MIB, &[])).map(drop)
    });
    check(&env, "ec2:DescribeVolumes", &[], |who| {
        ec2.describe_volumes(who, Default::default()).map(drop)
    });
    check(&env, "ec2:DeleteVolume", &[], |who| {
        ec2.delete_volume(who, &del, false)
    });
    check(&env, "ec2:ModifyVolume", &[], |who| {
        ec2.modify_volume(
            who,
            ModifyVolumeRequest {
                volume_id: grow.clone(),
                size_bytes: Some(2 * MIB),
                ..Default::default()
            },
        )
        .map(drop)
    });
    check(&env, "ec2:CreateSnapshot", &[], |who| {
        ec2.create_snapshot(who, &source, "", vec![]).map(drop)
    });
    check(&env, "ec2:DescribeSnapshots", &[], |who| {
        ec2.describe_snapshots(who, &[], &[]).map(drop)
    });
    check(&env, "ec2:DeleteSnapshot", &[], |who| {
        ec2.delete_snapshot(who, &s_del)
    });
    check(&env, "ec2:CopySnapshot", &[], |who| {
        ec2.copy_snapshot(who, REGION, &s1, None, None, None, vec![])
            .map(drop)
    });
    check(&env, "ebs:ListChangedBlocks", &[], |who| {
        ec2.list_changed_blocks(who, &s1, &s2).map(drop)
    });
    // The other EBS direct APIs (tests/server_ebs.rs reads blocks through them).
    check(&env, "ebs:ListSnapshotBlocks", &[], |who| {
        ec2.list_snapshot_blocks(who, &s1, &BlockPage::default())
            .map(drop)
    });
    let start = |who: &Caller| {
        ec2.start_snapshot(
            who,
            StartSnapshotRequest {
                volume_size: 1,
                ..Default::default()
            },
        )
    };
    check(&env, "ebs:StartSnapshot", &[], |who| start(who).map(drop));
    let direct = start(&env.me).unwrap().snapshot_id;
    let block = vec![7u8; 512 * 1024];
    check(&env, "ebs:PutSnapshotBlock", &[], |who| {
        ec2.put_snapshot_block(
            who,
            PutSnapshotBlockRequest {
                snapshot_id: direct.clone(),
                block_index: 0,
                data_length: block.len() as u64,
                block_data: zeroize::Zeroizing::new(block.clone()),
                progress: None,
                checksum: ebsim::service::ebs::checksum(&block),
                checksum_algorithm: "SHA256".into(),
            },
        )
        .map(drop)
    });
    check(&env, "ebs:CompleteSnapshot", &[], |who| {
        ec2.complete_snapshot(
            who,
            CompleteSnapshotRequest {
                snapshot_id: direct.clone(),
                changed_blocks_count: 1,
                ..Default::default()
            },
        )
        .map(drop)
    });
    check(&env, "ec2:EnableEbsEncryptionByDefault", &[], |who| {
        ec2.set_ebs_encryption_by_default(who, true).map(drop)
    });
    check(&env, "ec2:DisableEbsEncryptionByDefault", &[], |who| {
        ec2.set_ebs_encryption_by_default(who, false).map(drop)
    });
    check(&env, "ec2:GetEbsEncryptionByDefault", &[], |who| {
        ec2.get_ebs_encryption_by_default(who).map(drop)
    });
    check(&env, "ec2:GetEbsDefaultKmsKeyId", &[], |who| {
        ec2.get_ebs_default_kms_key_id(who).map(drop)
    });
    // The key is looked up through EC2 as the caller: kms:DescribeKey too.
    check(
        &env,
        "ec2:ModifyEbsDefaultKmsKeyId",
        &["kms:DescribeKey"],
        |who| {
            ec2.modify_ebs_default_kms_key_id(who, &key.key_id)
                .map(drop)
        },
    );
    check(&env, "ec2:ResetEbsDefaultKmsKeyId", &[], |who| {
        ec2.reset_ebs_default_kms_key_id(who).map(drop)
    });
    // ebsim's own operations have actions of their own.
    check(&env, "ec2:RekeyVolume", &["kms:*"], |who| {
        ec2.rekey_volume(who, &rekey, &other_key.key_id, &|_, _| {})
            .map(drop)
    });
    check(&env, "ec2:Cleanup", &[], |who| ec2.cleanup(who).map(drop));

    // Every refusal is in the log, as CloudTrail records EC2's errors.
    let refused: Vec<Value> = records(&env)
        .into_iter()
        .filter(|r| {
            r["errorCode"] == "Client.UnauthorizedOperation"
                || r["errorCode"] == "AccessDeniedException"
        })
        .collect();
    assert_eq!(refused.len(), 21);
    for r in &refused {
        assert_eq!(r["responseElements"], Value::Null);
        assert!(
            r["userIdentity"]["arn"]
                .as_str()
                .unwrap()
                .contains(":user/no-"),
            "{r}"
        );
    }
    let ebs: Vec<&Value> = refused
        .iter()
        .filter(|r| r["eventSource"] == "ebs.amazonaws.com")
        .collect();
    assert_eq!(ebs.len(), 5, "the EBS direct APIs' refusals");
    // In the EBS direct APIs' words, without EC2's `Client.` prefix.
    assert!(
        ebs.iter()
            .all(|r| r["errorCode"] == "AccessDeniedException")
    );

    // Principals of another account are refused, even its root.
    let stranger = Caller::account_root("444455556666");
    denied(
        ec2.describe_volumes(&stranger, Default::default()),
        "ec2:DescribeVolumes",
        "*",
    );
}

#[test]
fn condition_keys_of_the_volume_being_created() {
    let env = Env::new();
    let ec2 = ec2(&env);
    let new_volume = "arn:aws:ec2:us-east-1:111122223333:volume/*";

    // ec2:Encrypted: the outcome counts, so encryption by default satisfies it.
    let enc = user(
        &env,
        "encrypted-only",
        Some(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:CreateVolume","Resource":"*","Condition":{"Bool":{"ec2:Encrypted":"true"}}}]}"#,
        ),
    );
    denied(
        ec2.create_volume(&enc, create_req(MIB, &[])),
        "ec2:CreateVolume",
        new_volume,
    );
    let v = ec2
        .create_volume(
            &enc,
            CreateVolumeRequest {
                encrypted: Some(true),
                ..create_req(MIB, &[])
            },
        )
        .unwrap();
    assert!(v.encrypted);
    ec2.set_ebs_encryption_by_default(&env.me, true).unwrap();
    assert!(
        ec2.create_volume(&enc, create_req(MIB, &[]))
            .unwrap()
            .encrypted
    );
    ec2.set_ebs_encryption_by_default(&env.me, false).unwrap();
    let plain = user(
        &env,
        "unencrypted-only",
        Some(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:CreateVolume","Resource":"*","Condition":{"Bool":{"ec2:Encrypted":"false"}}}]}"#,
        ),
    );
    ec2.create_volume(&plain, create_req(MIB, &[])).unwrap();
    denied(
        ec2.create_volume(
            &plain,
            CreateVolumeRequest {
                encrypted: Some(true),
                ..create_req(MIB, &[])
            },
        ),
        "ec2:CreateVolume",
        new_volume,
    );

    // ec2:VolumeSize (GiB) and ec2:VolumeType.
    let small = user(
        &env,
        "small-gp3",
        Some(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:CreateVolume","Resource":"*","Condition":{"NumericLessThanEquals":{"ec2:VolumeSize":"4"},"StringEquals":{"ec2:VolumeType":"gp3"}}}]}"#,
        ),
    );
    let gib = |g: u64, t: &str| CreateVolumeRequest {
        size: Some(g),
        volume_type: Some(t.into()),
        ..Default::default()
    };
    assert_eq!(ec2.create_volume(&small, gib(4, "gp3")).unwrap().size, 4);
    let m = denied(
        ec2.create_volume(&small, gib(5, "gp3")),
        "ec2:CreateVolume",
        new_volume,
    );
    assert!(m.contains("because no identity-based policy allows the ec2:CreateVolume action"));
    denied(
        ec2.create_volume(&small, gib(1, "gp2")),
        "ec2:CreateVolume",
        new_volume,
    );

    // ec2:KmsKeyId: the key as the request names it.
    let key = env.create_key();
    let one_key = user(
        &env,
        "one-key",
        Some(&format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"ec2:CreateVolume","Resource":"*","Condition":{{"StringEquals":{{"ec2:KmsKeyId":"{}"}}}}}},{{"Effect":"Allow","Action":"kms:*","Resource":"*"}}]}}"#,
            key.arn
        )),
    );
    let with_key = |k: &str| CreateVolumeRequest {
        encrypted: Some(true),
        kms_key_id: Some(k.into()),
        ..create_req(MIB, &[])
    };
    ec2.create_volume(&one_key, with_key(&key.arn)).unwrap();
    denied(
        ec2.create_volume(&one_key, with_key(&env.create_key().arn)),
        "ec2:CreateVolume",
        new_volume,
    );

    // aws:RequestTag/…: the tags must be given, with that value; tagging on
    // create is also ec2:CreateTags with ec2:CreateAction.
    let tagged_only = r#"{"Effect":"Allow","Action":"ec2:CreateVolume","Resource":"*","Condition":{"StringEquals":{"aws:RequestTag/team":"storage"}}}"#;
    let tag_on_create = r#"{"Effect":"Allow","Action":"ec2:CreateTags","Resource":"arn:aws:ec2:*:*:volume/*","Condition":{"StringEquals":{"ec2:CreateAction":"CreateVolume"}}}"#;
    let no_tagging = user(
        &env,
        "team-no-tags",
        Some(&format!(
            r#"{{"Version":"2012-10-17","Statement":[{tagged_only}]}}"#
        )),
    );
    denied(
        ec2.create_volume(&no_tagging, create_req(MIB, &[("team", "storage")])),
        "ec2:CreateTags",
        new_volume,
    );
    let team = user(
        &env,
        "team",
        Some(&format!(
            r#"{{"Version":"2012-10-17","Statement":[{tagged_only},{tag_on_create}]}}"#
        )),
    );
    let v = ec2
        .create_volume(&team, create_req(MIB, &[("team", "storage")]))
        .unwrap();
    assert_eq!(v.tags, tags(&[("team", "storage")]));
    denied(
        ec2.create_volume(&team, create_req(MIB, &[("team", "web")])),
        "ec2:CreateVolume",
        new_volume,
    );
    denied(
        ec2.create_volume(&team, create_req(MIB, &[])),
        "ec2:CreateVolume",
        new_volume,
    );

    // aws:TagKeys with ForAllValues:StringEquals: only these keys (or none).
    let keys = user(
        &env,
        "known-keys",
        Some(&format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"ec2:CreateVolume","Resource":"*","Condition":{{"ForAllValues:StringEquals":{{"aws:TagKeys":["team","Name"]}}}}}},{tag_on_create}]}}"#
        )),
    );
    ec2.create_volume(&keys, create_req(MIB, &[("team", "a"), ("Name", "db")]))
        .unwrap();
    ec2.create_volume(&keys, create_req(MIB, &[])).unwrap();
    denied(
        ec2.create_volume(&keys, create_req(MIB, &[("team", "a"), ("cost", "1")])),
        "ec2:CreateVolume",
        new_volume,
    );

    // The global keys work as in every policy.
    let from_here = user(
        &env,
        "from-here",
        Some(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:CreateVolume","Resource":"*","Condition":{"StringEquals":{"aws:SourceIp":"127.0.0.1","aws:RequestedRegion":"us-east-1","aws:PrincipalArn":"arn:aws:iam::111122223333:user/from-here"}}}]}"#,
        ),
    );
    ec2.create_volume(&from_here, create_req(MIB, &[])).unwrap();

    // Nothing denied was created.
    let all = ec2.describe_volumes(&env.me, Default::default()).unwrap();
    assert_eq!(all.volumes.len(), 9);
}

#[test]
fn resource_tags_decide_delete_and_attach_and_an_explicit_deny_wins() {
    let env = Env::new();
    let ec2 = ec2(&env);
    let ours = volume(&ec2, &env, &[("team", "storage")]);
    let theirs = volume(&ec2, &env, &[("team", "web")]);
    let untagged = volume(&ec2, &env, &[]);
    let team = user(
        &env,
        "storage-team",
        Some(
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":["ec2:DeleteVolume","ec2:AttachVolume","ec2:DetachVolume"],"Resource":"arn:aws:ec2:*:*:volume/*","Condition":{"StringEquals":{"ec2:ResourceTag/team":"storage"}}},
                {"Effect":"Allow","Action":["ec2:AttachVolume","ec2:DetachVolume"],"Resource":"arn:aws:ec2:*:*:instance/*"}]}"#,
        ),
    );
    let arn = |v: &str| format!("arn:aws:ec2:us-east-1:111122223333:volume/{v}");
    denied(
        ec2.attach(&team, &theirs, INSTANCE, "/dev/sdf"),
        "ec2:AttachVolume",
        &arn(&theirs),
    );
    denied(
        ec2.attach(&team, &untagged, INSTANCE, "/dev/sdf"),
        "ec2:AttachVolume",
        &arn(&untagged),
    );
    let a = ec2.attach(&team, &ours, INSTANCE, "/dev/sdf").unwrap();
    // Attached (by the team): not deletable, but the refusal to delete theirs is
    // about permission, checked first.
    denied(
        ec2.delete_volume(&team, &theirs, false),
        "ec2:DeleteVolume",
        &arn(&theirs),
    );
    expect_err(ec2.delete_volume(&team, &ours, false), K::VolumeInUse);
    let gone = ec2
        .detach_volume(&team, &ours, false, |rec| {
            assert_eq!(rec.instance_id, INSTANCE);
            a.detach(&ec2)
        })
        .unwrap();
    assert_eq!(gone.device, "/dev/sdf");
    ec2.delete_volume(&team, &ours, false).unwrap();

    // Allow ec2:* with a Deny of DeleteVolume: the Deny wins, and the encoded
    // message says so.
    let careful = user(
        &env,
        "careful",
        Some(
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":"ec2:*","Resource":"*"},
                {"Sid":"NoDeletes","Effect":"Deny","Action":"ec2:DeleteVolume","Resource":"*"}]}"#,
        ),
    );
    ec2.describe_volumes(&careful, Default::default()).unwrap();
    let m = denied(
        ec2.delete_volume(&careful, &theirs, false),
        "ec2:DeleteVolume",
        &arn(&theirs),
    );
    assert!(
        m.contains(" with an explicit deny in an identity-based policy. Encoded"),
        "{m}"
    );
    let decoded = decode_authorization_message(&m).unwrap();
    assert_eq!(decoded["allowed"], false);
    assert_eq!(decoded["explicitDeny"], true);
    assert_eq!(
        decoded["matchedStatements"]["items"][0]["statementId"],
        "NoDeletes"
    );
    assert_eq!(decoded["context"]["action"], "ec2:DeleteVolume");
    assert_eq!(decoded["context"]["resource"], arn(&theirs).as_str());
    assert_eq!(
        decoded["context"]["principal"]["arn"],
        "arn:aws:iam::111122223333:user/careful"
    );
    let conditions = decoded["context"]["conditions"]["items"]
        .as_array()
        .unwrap();
    let value = |k: &str| {
        conditions
            .iter()
            .find(|c| c["key"] == k)
            .map(|c| c["values"]["items"][0]["value"].clone())
    };
    assert_eq!(value("ec2:ResourceTag/team"), Some("web".into()));
    assert_eq!(value("ec2:VolumeID"), Some(theirs.as_str().into()));
    assert_eq!(value("ec2:Encrypted"), Some("false".into()));
    assert_eq!(
        ec2.describe_volumes(
            &env.me,
            DescribeVolumesRequest {
                volume_ids: vec![theirs.clone()],
                ..Default::default()
            }
        )
        .unwrap()
        .volumes
        .len(),
        1
    );
}

#[test]
fn resources_are_arns_of_the_region_and_snapshots_name_no_account() {
    let env = Env::new();
    let ec2 = ec2(&env);
    let vol = volume(&ec2, &env, &[]);
    let snap = snapshot(&ec2, &env, &vol);
    let scoped = |name: &str, action: &str, resources: &[&str]| {
        user(
            &env,
            name,
            Some(
                &serde_json::json!({"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":action,"Resource":resources}]})
                    .to_string(),
            ),
        )
    };
    let east = scoped(
        "east",
        "ec2:CreateVolume",
        &["arn:aws:ec2:us-east-1:111122223333:volume/*"],
    );
    ec2.create_volume(&east, create_req(MIB, &[])).unwrap();
    let west = scoped(
        "west",
        "ec2:CreateVolume",
        &["arn:aws:ec2:us-west-2:111122223333:volume/*"],
    );
    denied(
        ec2.create_volume(&west, create_req(MIB, &[])),
        "ec2:CreateVolume",
        "arn:aws:ec2:us-east-1:111122223333:volume/*",
    );
    // A volume being created has no id yet: a policy naming ids does not allow it.
    let by_id = scoped(
        "by-id",
        "ec2:CreateVolume",
        &["arn:aws:ec2:us-east-1:111122223333:volume/vol-*"],
    );
    denied(
        ec2.create_volume(&by_id, create_req(MIB, &[])),
        "ec2:CreateVolume",
        "arn:aws:ec2:us-east-1:111122223333:volume/*",
    );

    // CreateSnapshot: the volume and the new snapshot, which has no account.
    let volume_only = scoped(
        "volume-only",
        "ec2:CreateSnapshot",
        &["arn:aws:ec2:*:*:volume/*"],
    );
    denied(
        ec2.create_snapshot(&volume_only, &vol, "", vec![]),
        "ec2:CreateSnapshot",
        "arn:aws:ec2:us-east-1::snapshot/*",
    );
    let both = scoped(
        "both",
        "ec2:CreateSnapshot",
        &[
            &format!("arn:aws:ec2:us-east-1:111122223333:volume/{vol}"),
            "arn:aws:ec2:us-east-1::snapshot/*",
        ],
    );
    let s = ec2.create_snapshot(&both, &vol, "", vec![]).unwrap();

    // CopySnapshot: the source snapshot and the copy.
    let source_only = scoped(
        "source-only",
        "ec2:CopySnapshot",
        &[&format!("arn:aws:ec2:us-east-1::snapshot/{snap}")],
    );
    denied(
        ec2.copy_snapshot(&source_only, REGION, &snap, None, None, None, vec![]),
        "ec2:CopySnapshot",
        "arn:aws:ec2:us-east-1::snapshot/*",
    );
    let copier = scoped(
        "copier",
        "ec2:CopySnapshot",
        &["arn:aws:ec2:us-east-1::snapshot/*"],
    );
    ec2.copy_snapshot(&copier, REGION, &snap, None, None, None, vec![])
        .unwrap();

    // DeleteSnapshot on one snapshot's ARN.
    let one = scoped(
        "delete-one",
        "ec2:DeleteSnapshot",
        &[&format!("arn:aws:ec2:*::snapshot/{}", s.snapshot_id)],
    );
    denied(
        ec2.delete_snapshot(&one, &snap),
        "ec2:DeleteSnapshot",
        &format!("arn:aws:ec2:us-east-1::snapshot/{snap}"),
    );
    ec2.delete_snapshot(&one, &s.snapshot_id).unwrap();

    // A role session is authorized by its role's policies.
    let root = Principal::root(ACCOUNT);
    let iam = Iam::open(&env.root).unwrap();
    let trust = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"sts:AssumeRole"}}"#;
    iam.create(&root, &NewEntity::role("Reader", trust), start())
        .unwrap();
    iam.put_policy(
        &root,
        EntityKind::Role,
        "Reader",
        "read",
        &allow(&["ec2:Describe*"]),
    )
    .unwrap();
    let session = Caller::new(
        Principal::parse("arn:aws:sts::111122223333:assumed-role/Reader/job-1").unwrap(),
    );
    ec2.describe_snapshots(&session, &[], &[]).unwrap();
    denied(
        ec2.delete_volume(&session, &vol, false),
        "ec2:DeleteVolume",
        &format!("arn:aws:ec2:us-east-1:111122223333:volume/{vol}"),
    );
}

#[test]
fn dry_run_answers_dry_run_operation_when_allowed_and_unauthorized_when_not() {
    let env = Env::new();
    let ec2 = ec2(&env);
    let vol = volume(&ec2, &env, &[]);
    let allowed = user(
        &env,
        "allowed",
        Some(&allow(&[
            "ec2:CreateVolume",
            "ec2:DeleteVolume",
            "ec2:ModifyVolume",
        ])),
    );
    let nobody = user(&env, "nobody", None);
    let dry_create = CreateVolumeRequest {
        dry_run: true,
        ..create_req(MIB, &[])
    };
    let dry_delete = |who: &Caller| ec2.delete_volume(who, &vol, true);
    let dry_modify = |who: &Caller| {
        ec2.modify_volume(
            who,
            ModifyVolumeRequest {
                volume_id: vol.clone(),
                size_bytes: Some(2 * MIB),
                dry_run: true,
                ..Default::default()
            },
        )
    };
    expect_err(
        ec2.create_volume(&allowed, dry_create.clone()),
        K::Ec2DryRun,
    );
    expect_err(dry_delete(&allowed), K::Ec2DryRun);
    expect_err(dry_modify(&allowed), K::Ec2DryRun);
    expect_err(
        ec2.create_volume(&nobody, dry_create),
        K::UnauthorizedOperation,
    );
    expect_err(dry_delete(&nobody), K::UnauthorizedOperation);
    expect_err(dry_modify(&nobody), K::UnauthorizedOperation);
    // Nothing happened, and each call is in the log with EC2's error codes.
    let v = &ec2
        .describe_volumes(&env.me, Default::default())
        .unwrap()
        .volumes;
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].size_bytes, MIB);
    for name in ["CreateVolume", "DeleteVolume", "ModifyVolume"] {
        let codes: Vec<Value> = ec2_records(&env, name)
            .iter()
            .filter(|r| r["userIdentity"]["type"] == "IAMUser")
            .map(|r| r["errorCode"].clone())
            .collect();
        assert_eq!(
            codes,
            vec![
                Value::from("Client.DryRunOperation"),
                Value::from("Client.UnauthorizedOperation")
            ],
            "{name}"
        );
    }
    let rec = ec2_records(&env, "DeleteVolume");
    assert_eq!(rec[0]["requestParameters"]["dryRun"], true);
    assert_eq!(rec[0]["requestParameters"]["volumeId"], vol.as_str());
}

#[test]
fn ec2_events_are_found_by_event_source_and_resource_name() {
    let env = Env::new();
    let ec2 = ec2(&env);
    let vol = volume(&ec2, &env, &[("team", "storage")]);
    let other = volume(&ec2, &env, &[]);
    let snap = snapshot(&ec2, &env, &vol);
    let snap2 = snapshot(&ec2, &env, &vol);
    let a = ec2.attach(&env.me, &vol, INSTANCE, "/dev/sdf").unwrap();
    ec2.detach_volume(&env.me, &vol, false, |_| a.detach(&ec2))
        .unwrap();
    let nobody = user(&env, "nobody", None);
    expect_err(
        ec2.delete_volume(&nobody, &vol, false),
        K::UnauthorizedOperation,
    );
    ec2.describe_volumes(&env.me, Default::default()).unwrap();
    ec2.list_changed_blocks(&env.me, &snap, &snap2).unwrap();

    // EventSource: EC2's events only, newest first, with EC2's fields.
    let events = lookup_by(&env, "EventSource", "ec2.amazonaws.com");
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["EventName"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "DescribeVolumes",
            "DeleteVolume",
            "DetachVolume",
            "AttachVolume",
            "CreateSnapshot",
            "CreateSnapshot",
            "CreateVolume",
            "CreateVolume"
        ]
    );
    let record = |e: &Value| -> Value {
        serde_json::from_str(e["CloudTrailEvent"].as_str().unwrap()).unwrap()
    };
    let describe = record(&events[0]);
    assert_eq!(describe["readOnly"], true);
    assert_eq!(describe["responseElements"], Value::Null);
    assert_eq!(events[0]["ReadOnly"], "true");

    // ResourceName: the volume's id (as CloudTrail lists EC2 resources) or ARN.
    let by_id = lookup_by(&env, "ResourceName", &vol);
    let names: Vec<&str> = by_id
        .iter()
        .map(|e| e["EventName"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "DeleteVolume",
            "DetachVolume",
            "AttachVolume",
            "CreateSnapshot",
            "CreateSnapshot",
            "CreateVolume"
        ]
    );
    let arn = format!("arn:aws:ec2:us-east-1:111122223333:volume/{vol}");
    assert_eq!(lookup_by(&env, "ResourceName", &arn).len(), by_id.len());
    assert!(
        by_id[0]["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["ResourceType"] == "AWS::EC2::Volume" && r["ResourceName"] == vol.as_str())
    );
    assert_eq!(lookup_by(&env, "ResourceName", &other).len(), 1);
    assert_eq!(
        lookup_by(&env, "ResourceType", "AWS::EC2::Snapshot").len(),
        2
    );

    // The refused DeleteVolume: who, what, and the error.
    let refused = record(&by_id[0]);
    assert_eq!(refused["userIdentity"]["userName"], "nobody");
    assert_eq!(refused["errorCode"], "Client.UnauthorizedOperation");
    assert!(
        refused["errorMessage"]
            .as_str()
            .unwrap()
            .starts_with("You are not authorized to perform this operation.")
    );
    assert_eq!(refused["requestParameters"]["volumeId"], vol.as_str());

    // EC2's shapes: CreateVolume, AttachVolume, DetachVolume, CreateSnapshot.
    let create = &ec2_records(&env, "CreateVolume")[0];
    let resp = &create["responseElements"];
    assert_eq!(resp["requestId"], create["requestID"]);
    assert_eq!(resp["volumeId"], vol.as_str());
    assert_eq!(resp["size"], "1");
    assert_eq!(resp["zone"], "us-east-1a");
    assert_eq!(resp["encrypted"], false);
    assert_eq!(resp["tagSet"]["items"][0]["key"], "team");
    assert_eq!(
        create["requestParameters"]["tagSpecificationSet"]["items"][0]["resourceType"],
        "volume"
    );
    assert_eq!(create["requestParameters"]["sizeBytes"], MIB);
    let attach = &ec2_records(&env, "AttachVolume")[0];
    assert_eq!(attach["requestParameters"]["instanceId"], INSTANCE);
    assert_eq!(attach["responseElements"]["device"], "/dev/sdf");
    assert!(attach["responseElements"]["attachTime"].is_i64());
    let resources: Vec<&str> = attach["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(resources, ["AWS::EC2::Volume", "AWS::EC2::Instance"]);
    assert_eq!(
        ec2_records(&env, "DetachVolume")[0]["responseElements"]["status"],
        "detached"
    );
    let snap_rec = &ec2_records(&env, "CreateSnapshot")[0];
    assert_eq!(snap_rec["responseElements"]["snapshotId"], snap.as_str());
    assert_eq!(snap_rec["resources"][1]["accountId"], ACCOUNT);

    // ListChangedBlocks is an EBS direct API data event: in the log, not in
    // LookupEvents (CloudTrail's Event history has management events only).
    let lcb: Vec<Value> = records(&env)
        .into_iter()
        .filter(|r| r["eventName"] == "ListChangedBlocks")
        .collect();
    assert_eq!(lcb.len(), 1);
    assert_eq!(lcb[0]["eventSource"], "ebs.amazonaws.com");
    assert_eq!(lcb[0]["eventCategory"], "Data");
    assert_eq!(lcb[0]["managementEvent"], false);
    assert!(lookup_by(&env, "EventName", "ListChangedBlocks").is_empty());
}

#[test]
fn kms_calls_through_ec2_name_the_caller_and_the_instance_decrypts_as_its_session() {
    let env = Env::new();
    let ec2 = ec2(&env);
    let key = env.create_key();
    let ops = user(
        &env,
        "ops",
        Some(&allow(&[
            "ec2:CreateVolume",
            "ec2:AttachVolume",
            "ec2:DetachVolume",
            "kms:DescribeKey",
            "kms:GenerateDataKeyWithoutPlaintext",
            "kms:Decrypt",
            "kms:CreateGrant",
        ])),
    );
    let vol = ec2
        .create_volume(
            &ops,
            CreateVolumeRequest {
                encrypted: Some(true),
                kms_key_id: Some(key.key_id.clone()),
                ..create_req(MIB, &[])
            },
        )
        .unwrap()
        .volume_id;
    let a = ec2.attach(&ops, &vol, INSTANCE, "/dev/sdf").unwrap();
    ec2.detach_volume(&ops, &vol, false, |_| a.detach(&ec2))
        .unwrap();
    let kms: Vec<Value> = records(&env)
        .into_iter()
        .filter(|r| r["eventSource"] == "kms.amazonaws.com")
        .collect();
    let by =
        |name: &str| -> Vec<&Value> { kms.iter().filter(|r| r["eventName"] == name).collect() };
    // The caller's calls through EC2.
    for r in by("GenerateDataKeyWithoutPlaintext")
        .into_iter()
        .chain(by("CreateGrant"))
    {
        assert_eq!(
            r["userIdentity"]["arn"],
            "arn:aws:iam::111122223333:user/ops"
        );
        assert_eq!(r["userIdentity"]["invokedBy"], "ec2.amazonaws.com");
        assert_eq!(r["userAgent"], "AWS Internal");
    }
    // The instance's Decrypt at attach and its RetireGrant at detach: the
    // infrastructure's session for the instance; the grantee stays the
    // principal EBS grants to.
    let session = format!("arn:aws:sts::{ACCOUNT}:assumed-role/aws:ec2-infrastructure/{INSTANCE}");
    let decrypts = by("Decrypt");
    let infra: Vec<&&Value> = decrypts
        .iter()
        .filter(|r| r["userIdentity"]["type"] == "AssumedRole")
        .collect();
    assert_eq!(infra.len(), 1);
    assert_eq!(infra[0]["userIdentity"]["arn"], session.as_str());
    assert_eq!(
        infra[0]["userIdentity"]["principalId"],
        format!("{ACCOUNT}:aws:ec2-infrastructure:{INSTANCE}")
    );
    assert_eq!(
        infra[0]["requestParameters"]["encryptionContext"]["aws:ebs:id"],
        vol.as_str()
    );
    assert_eq!(
        by("CreateGrant")[0]["requestParameters"]["granteePrincipal"],
        format!("{ACCOUNT}:aws:ec2-infrastructure:{INSTANCE}")
    );
    assert_eq!(
        by("RetireGrant")[0]["userIdentity"]["arn"],
        session.as_str()
    );
    // The session shows in LookupEvents under its session name.
    assert!(
        lookup_by(&env, "Username", INSTANCE)
            .iter()
            .any(|e| e["EventName"] == "Decrypt")
    );
}

/// The command line: the caller (`--principal`) reaches every operation; the
/// attachment process authorizes AttachVolume; DetachVolume and CreateSnapshot of
/// an attached volume are authorized by the command before it asks that process,
/// and recorded once.
#[test]
fn the_cli_authorizes_attach_detach_and_snapshots_of_attached_volumes() {
    let s = Sandbox::new();
    let vol = s.volume(false, MIB);
    s.ok(&["iam", "create-user", "--user-name", "attacher"]);
    s.ok(&["iam", "create-user", "--user-name", "viewer"]);
    let attacher = "arn:aws:iam::111122223333:user/attacher";
    let viewer = "arn:aws:iam::111122223333:user/viewer";
    s.ok(&[
        "iam",
        "put-user-policy",
        "--user-name",
        "viewer",
        "--policy-name",
        "p",
        "--policy-document",
        &allow(&["ec2:Describe*"]),
    ]);
    let sock = s.path("sock").join("v.sock");
    let nbd = format!("unix:{}", sock.display());
    let attach = |who: &str| {
        s.ebsim(&[
            "--principal",
            who,
            "ec2",
            "attach-volume",
            "--volume-id",
            &vol,
            "--nbd",
            &nbd,
        ])
    };
    let o = attach(attacher);
    assert_eq!(o.code, 254, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stderr
            .contains("An error occurred (UnauthorizedOperation) when calling the AttachVolume operation: You are not authorized to perform this operation. User: arn:aws:iam::111122223333:user/attacher is not authorized to perform: ec2:AttachVolume on resource: arn:aws:ec2:us-east-1:111122223333:instance/i-"),
        "{}",
        o.stderr
    );
    assert_eq!(s.state(&vol), "available");
    s.ok(&[
        "iam",
        "put-user-policy",
        "--user-name",
        "attacher",
        "--policy-name",
        "p",
        "--policy-document",
        &allow(&["ec2:AttachVolume", "ec2:DetachVolume", "ec2:CreateSnapshot"]),
    ]);
    let o = attach(attacher);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(s.state(&vol), "in-use");

    // A snapshot of the attached volume: taken by the attachment process,
    // authorized and recorded here.
    let snap = |who: &str| {
        s.ebsim(&[
            "--principal",
            who,
            "ec2",
            "create-snapshot",
            "--volume-id",
            &vol,
        ])
    };
    let o = snap(viewer);
    assert_eq!(o.code, 254, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("ec2:CreateSnapshot on resource: arn:aws:ec2:us-east-1:111122223333:volume/")
    );
    let o = snap(attacher);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let taken: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(taken["VolumeId"], vol.as_str());

    // Detach: refused for the viewer while the volume stays attached.
    let detach = |who: &str| {
        s.ebsim(&[
            "--principal",
            who,
            "ec2",
            "detach-volume",
            "--volume-id",
            &vol,
        ])
    };
    let o = detach(viewer);
    assert_eq!(o.code, 254, "{}", o.stderr);
    assert!(
        o.stderr.contains(
            "ec2:DetachVolume on resource: arn:aws:ec2:us-east-1:111122223333:instance/i-"
        )
    );
    assert_eq!(s.state(&vol), "in-use");
    let o = detach(attacher);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(s.state(&vol), "available");

    // One record per call, from whichever process made it.
    let log = s.home().join("regions/us-east-1/cloudtrail.jsonl");
    let recs: Vec<Value> = std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &Value| r["eventSource"] == "ec2.amazonaws.com")
        .collect();
    let outcome = |name: &str| -> Vec<(String, String)> {
        recs.iter()
            .filter(|r| r["eventName"] == name)
            .map(|r| {
                (
                    r["userIdentity"]["userName"]
                        .as_str()
                        .unwrap_or("root")
                        .to_string(),
                    r["errorCode"].as_str().unwrap_or("ok").to_string(),
                )
            })
            .collect()
    };
    let pair = |u: &str, c: &str| (u.to_string(), c.to_string());
    assert_eq!(
        outcome("AttachVolume"),
        [
            pair("attacher", "Client.UnauthorizedOperation"),
            pair("attacher", "ok")
        ]
    );
    assert_eq!(
        outcome("CreateSnapshot"),
        [
            pair("viewer", "Client.UnauthorizedOperation"),
            pair("attacher", "ok")
        ]
    );
    assert_eq!(
        outcome("DetachVolume"),
        [
            pair("viewer", "Client.UnauthorizedOperation"),
            pair("attacher", "ok")
        ]
    );
    // `cloudtrail lookup-events` finds them by source and by volume.
    let out = s.ok(&[
        "cloudtrail",
        "lookup-events",
        "--lookup-attributes",
        &format!("AttributeKey=ResourceName,AttributeValue={vol}"),
        "--query",
        "Events[].EventName",
        "--output",
        "text",
    ]);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        [
            "DetachVolume",
            "DetachVolume",
            "CreateSnapshot",
            "CreateSnapshot",
            "AttachVolume",
            "AttachVolume",
            "CreateVolume"
        ]
    );
}
