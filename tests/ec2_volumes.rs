//! EC2 volumes over KMS: create / describe / delete / modify, encryption by
//! default, attach and detach with CreateGrant + Decrypt (shared/reference/kms-ebs.md §2).

mod common;

use common::*;
use ebsim::ErrorKind;
use ebsim::ec2::Ec2;
use ebsim::ec2::model::Tag;
use ebsim::ec2::model::*;
use ebsim::kms::api::*;

fn ec2(env: &Env) -> Ec2 {
    Ec2::new(&env.root, env.region("us-east-1")).unwrap()
}

fn create(ec2: &Ec2, env: &Env, encrypted: bool, key: Option<&str>) -> ebsim::Result<Volume> {
    ec2.create_volume(
        &env.me,
        CreateVolumeRequest {
            size_bytes: Some(4 << 20),
            encrypted: Some(encrypted),
            kms_key_id: key.map(str::to_string),
            ..Default::default()
        },
    )
}

fn events(env: &Env, name: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(env.kms.audit_log_path())
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["eventName"] == name)
        .collect()
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn create_describe_and_delete_follow_ec2() {
    let env = Env::new();
    let ec2 = ec2(&env);
    let plain = create(&ec2, &env, false, None).unwrap();
    assert!(!plain.encrypted && plain.kms_key_id.is_none());
    assert_eq!((plain.size, plain.size_bytes), (1, 4 << 20));
    assert_eq!(plain.availability_zone, "us-east-1a");
    assert_eq!(plain.volume_type, "gp3");
    assert_eq!((plain.iops, plain.throughput), (Some(3000), Some(125)));
    assert!(
        plain.attachments.is_none(),
        "CreateVolume has no Attachments member"
    );
    assert_eq!(plain.volume_id.len(), 21);

    let key = env.create_key();
    let enc = ec2
        .create_volume(
            &env.me,
            CreateVolumeRequest {
                size: Some(2),
                encrypted: Some(true),
                kms_key_id: Some(key.key_id.clone()),
                tag_specifications: vec![TagSpecification {
                    resource_type: "volume".into(),
                    tags: vec![Tag {
                        key: "Name".into(),
                        value: "data".into(),
                    }],
                }],
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(enc.kms_key_id.as_deref(), Some(key.arn.as_str()));
    assert_eq!((enc.size, enc.size_bytes), (2, 2 << 30));
    // The image is sparse: a 2 GiB volume takes almost no space.
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(ec2.image_path(&enc.volume_id)).unwrap();
    assert!(meta.blocks() * 512 < (1 << 20));
    assert_eq!(meta.mode() & 0o777, 0o600);

    // The data key came from GenerateDataKeyWithoutPlaintext via EC2, 64 bytes, with
    // the volume's encryption context.
    let generated = events(&env, "GenerateDataKeyWithoutPlaintext");
    let last = generated.last().unwrap();
    assert_eq!(last["requestParameters"]["numberOfBytes"], 64);
    assert_eq!(
        last["requestParameters"]["encryptionContext"]["aws:ebs:id"],
        enc.volume_id.as_str()
    );
    assert_eq!(last["userAgent"], "AWS Internal");

    let all = ec2
        .describe_volumes(&env.me, DescribeVolumesRequest::default())
        .unwrap();
    assert_eq!(all.volumes.len(), 2);
    assert!(all.volumes.iter().all(|v| v.attachments == Some(vec![])));
    let f = |name: &str, v: &str| DescribeVolumesRequest {
        filters: vec![Filter {
            name: name.into(),
            values: vec![v.into()],
        }],
        ..Default::default()
    };
    let ids = |r: DescribeVolumesResponse| {
        r.volumes
            .into_iter()
            .map(|v| v.volume_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(ec2
            .describe_volumes(&env.me, f("encrypted", "true"))
            .unwrap()),
        vec![enc.volume_id.clone()]
    );
    assert_eq!(
        ids(ec2.describe_volumes(&env.me, f("tag:Name", "d*")).unwrap()),
        vec![enc.volume_id.clone()]
    );
    assert_eq!(
        ids(ec2
            .describe_volumes(&env.me, f("status", "available"))
            .unwrap())
        .len(),
        2
    );
    assert!(
        ids(ec2
            .describe_volumes(&env.me, f("status", "in-use"))
            .unwrap())
        .is_empty()
    );
    let e = ec2
        .describe_volumes(&env.me, f("colour", "blue"))
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        ("InvalidParameterValue", "The filter 'colour' is invalid")
    );

    // Paging.
    let page = ec2
        .describe_volumes(
            &env.me,
            DescribeVolumesRequest {
                max_results: Some(5),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(page.next_token.is_none());

    ec2.delete_volume(&env.me, &plain.volume_id, false).unwrap();
    assert!(!ec2.image_path(&plain.volume_id).exists());
    let e = ec2
        .delete_volume(&env.me, &plain.volume_id, false)
        .unwrap_err();
    assert_eq!(e.code(), "InvalidVolume.NotFound");
    assert_eq!(
        e.message(),
        format!("The volume '{}' does not exist.", plain.volume_id)
    );
    let e = ec2
        .describe_volumes(
            &env.me,
            DescribeVolumesRequest {
                volume_ids: vec!["vol-12".into()],
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(e.code(), "InvalidVolumeID.Malformed");
    let e = ec2
        .delete_volume(&env.me, &enc.volume_id, true)
        .unwrap_err();
    assert_eq!(e.code(), "DryRunOperation");
    assert!(ec2.image_path(&enc.volume_id).exists());
}

#[test]
fn bad_parameters_are_refused_with_ec2_codes_and_leave_nothing() {
    let env = Env::new();
    let ec2 = ec2(&env);
    let key = env.create_key();
    let cases: Vec<(CreateVolumeRequest, &str)> = vec![
        (
            CreateVolumeRequest {
                size: Some(1),
                kms_key_id: Some(key.key_id.clone()),
                ..Default::default()
            },
            "InvalidParameterCombination",
        ),
        (
            CreateVolumeRequest {
                ..Default::default()
            },
            "MissingParameter",
        ),
        (
            CreateVolumeRequest {
                size: Some(1),
                size_bytes: Some(4096),
                ..Default::default()
            },
            "InvalidParameterCombination",
        ),
        (
            CreateVolumeRequest {
                size_bytes: Some(1000),
                ..Default::default()
            },
            "InvalidParameterValue",
        ),
        (
            CreateVolumeRequest {
                size: Some(0),
                ..Default::default()
            },
            "InvalidParameterValue",
        ),
        (
            CreateVolumeRequest {
                size: Some(1),
                availability_zone: Some("us-west-2a".into()),
                ..Default::default()
            },
            "InvalidZone.NotFound",
        ),
        (
            CreateVolumeRequest {
                size: Some(1),
                snapshot_id: Some("snap-0123456789abcdef0".into()),
                ..Default::default()
            },
            "InvalidSnapshot.NotFound",
        ),
        (
            CreateVolumeRequest {
                size: Some(1),
                volume_type: Some("io2".into()),
                ..Default::default()
            },
            "MissingParameter",
        ),
        (
            CreateVolumeRequest {
                size: Some(1),
                volume_type: Some("floppy".into()),
                ..Default::default()
            },
            "InvalidParameterValue",
        ),
        (
            CreateVolumeRequest {
                size: Some(1),
                encrypted: Some(true),
                kms_key_id: Some(
                    "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
                        .into(),
                ),
                ..Default::default()
            },
            "InvalidParameterValue",
        ),
        (
            CreateVolumeRequest {
                size: Some(1),
                encrypted: Some(true),
                kms_key_id: Some("alias/nope".into()),
                ..Default::default()
            },
            "NotFoundException",
        ),
        (
            CreateVolumeRequest {
                size: Some(1),
                dry_run: true,
                ..Default::default()
            },
            "DryRunOperation",
        ),
    ];
    for (req, code) in cases {
        let e = ec2.create_volume(&env.me, req.clone()).unwrap_err();
        assert_eq!(e.code(), code, "{req:?}: {e}");
    }
    assert!(
        ec2.describe_volumes(&env.me, Default::default())
            .unwrap()
            .volumes
            .is_empty()
    );
    let dir = ec2
        .image_path("vol-00000000000000000")
        .parent()
        .unwrap()
        .to_path_buf();
    assert_eq!(
        std::fs::read_dir(dir).unwrap().count(),
        0,
        "no file left behind"
    );
}

#[test]
fn an_unusable_key_fails_creation_at_once_with_the_kms_error() {
    let env = Env::new();
    let ec2 = ec2(&env);
    let key = env.create_key();
    env.kms
        .disable_key(
            &env.me,
            KeyIdRequest {
                key_id: key.key_id.clone(),
            },
        )
        .unwrap();
    let e = create(&ec2, &env, true, Some(&key.key_id)).unwrap_err();
    assert_eq!(e.code(), "DisabledException");
    assert!(e.message().contains(&key.arn), "{e}");
    let k2 = env.create_key();
    env.kms
        .schedule_key_deletion(
            &env.me,
            ScheduleKeyDeletionRequest {
                key_id: k2.key_id.clone(),
                pending_window_in_days: Some(7),
            },
        )
        .unwrap();
    let e = create(&ec2, &env, true, Some(&k2.key_id)).unwrap_err();
    assert_eq!(e.code(), "KMSInvalidStateException");
    assert!(
        ec2.describe_volumes(&env.me, Default::default())
            .unwrap()
            .volumes
            .is_empty()
    );
}

#[test]
fn encryption_by_default_uses_the_regions_default_key() {
    let env = Env::new();
    let ec2 = ec2(&env);
    assert!(
        !ec2.get_ebs_encryption_by_default(&env.me)
            .unwrap()
            .ebs_encryption_by_default
    );
    assert_eq!(
        ec2.get_ebs_default_kms_key_id(&env.me).unwrap().kms_key_id,
        "alias/aws/ebs"
    );
    let v = create(&ec2, &env, false, None).unwrap();
    assert!(!v.encrypted);

    ec2.set_ebs_encryption_by_default(&env.me, true).unwrap();
    let v = create(&ec2, &env, false, None).unwrap();
    assert!(
        v.encrypted,
        "encryption by default cannot be turned off per volume"
    );
    let managed = env
        .kms
        .describe_key(
            &env.me,
            DescribeKeyRequest {
                key_id: "alias/aws/ebs".into(),
                grant_tokens: vec![],
            },
        )
        .unwrap();
    assert_eq!(
        v.kms_key_id.as_deref(),
        Some(managed.key_metadata.arn.as_str())
    );
    assert_eq!(managed.key_metadata.key_manager, "AWS");

    let mine = env.create_key();
    let set = ec2
        .modify_ebs_default_kms_key_id(&env.me, &mine.key_id)
        .unwrap();
    assert_eq!(set.kms_key_id, mine.arn);
    assert_eq!(
        ec2.get_ebs_default_kms_key_id(&env.me).unwrap().kms_key_id,
        mine.arn
    );
    let v = create(&ec2, &env, false, None).unwrap();
    assert_eq!(v.kms_key_id.as_deref(), Some(mine.arn.as_str()));
    // KmsKeyId without Encrypted is accepted while encryption by default is on.
    let v = create(&ec2, &env, false, Some(&managed.key_metadata.key_id)).unwrap();
    assert_eq!(
        v.kms_key_id.as_deref(),
        Some(managed.key_metadata.arn.as_str())
    );

    // Settings are per region.
    let west = Ec2::new(&env.root, env.region("us-west-2")).unwrap();
    assert!(
        !west
            .get_ebs_encryption_by_default(&env.me)
            .unwrap()
            .ebs_encryption_by_default
    );
    assert_eq!(
        west.get_ebs_default_kms_key_id(&env.me).unwrap().kms_key_id,
        "alias/aws/ebs"
    );
    let e = west
        .modify_ebs_default_kms_key_id(&env.me, &mine.arn)
        .unwrap_err();
    assert_eq!(e.code(), "InvalidParameterValue");

    let reset = ec2.reset_ebs_default_kms_key_id(&env.me).unwrap();
    assert_eq!(reset.kms_key_id, managed.key_metadata.arn);
    assert_eq!(
        ec2.get_ebs_default_kms_key_id(&env.me).unwrap().kms_key_id,
        "alias/aws/ebs"
    );
    ec2.set_ebs_encryption_by_default(&env.me, false).unwrap();
    assert!(!create(&ec2, &env, false, None).unwrap().encrypted);
}

#[test]
fn attach_grants_decrypts_and_detach_retires() {
    let env = Env::new();
    let ec2 = ec2(&env);
    let key = env.create_key();
    let v = create(&ec2, &env, true, Some(&key.key_id)).unwrap();
    let a = ec2
        .attach(&env.me, &v.volume_id, "i-0123456789abcdef0", "/dev/sdf")
        .unwrap();
    assert!(a.image().is_encrypted());
    a.image().write(100, b"hello volume", true).unwrap();

    // The grant: for the instance's infrastructure principal, Decrypt only, bound
    // to this volume's context, created through EC2.
    let grants = env
        .kms
        .list_grants(
            &env.me,
            ListGrantsRequest {
                key_id: key.key_id.clone(),
                ..Default::default()
            },
        )
        .unwrap()
        .grants;
    assert_eq!(grants.len(), 1);
    let g = &grants[0];
    assert_eq!(
        g.grantee_principal,
        "111122223333:aws:ec2-infrastructure:i-0123456789abcdef0"
    );
    assert_eq!(g.operations, vec!["Decrypt".to_string()]);
    assert_eq!(
        g.constraints
            .as_ref()
            .unwrap()
            .encryption_context_subset
            .as_ref()
            .unwrap()["aws:ebs:id"],
        v.volume_id
    );
    let cg = events(&env, "CreateGrant");
    assert_eq!(cg.last().unwrap()["userAgent"], "AWS Internal");
    let dec = events(&env, "Decrypt");
    let dec = dec.last().unwrap();
    // As CloudTrail shows EBS's Decrypt at attach (KMS developer guide, "Amazon
    // EC2 example two"): a session of the role aws:ec2-infrastructure named after
    // the instance, the grantee principal as its principalId.
    let id = &dec["userIdentity"];
    assert_eq!(id["type"], "AssumedRole");
    assert_eq!(
        id["arn"],
        "arn:aws:sts::111122223333:assumed-role/aws:ec2-infrastructure/i-0123456789abcdef0"
    );
    assert_eq!(
        id["principalId"],
        "111122223333:aws:ec2-infrastructure:i-0123456789abcdef0"
    );
    assert_eq!(id["accountId"], "111122223333");
    assert_eq!(id["sessionContext"]["sessionIssuer"]["type"], "Role");
    assert_eq!(
        id["sessionContext"]["sessionIssuer"]["arn"],
        "arn:aws:iam::111122223333:role/aws:ec2-infrastructure"
    );
    assert_eq!(
        id["sessionContext"]["sessionIssuer"]["userName"],
        "aws:ec2-infrastructure"
    );
    assert!(id.get("invokedBy").is_none());
    assert_eq!(
        dec["requestParameters"]["encryptionContext"]["aws:ebs:id"],
        v.volume_id.as_str()
    );

    let d = ec2
        .describe_volumes(
            &env.me,
            DescribeVolumesRequest {
                volume_ids: vec![v.volume_id.clone()],
                ..Default::default()
            },
        )
        .unwrap();
    let vol = &d.volumes[0];
    assert_eq!(vol.state, "in-use");
    let att = &vol.attachments.as_ref().unwrap()[0];
    assert_eq!(
        (
            att.instance_id.as_str(),
            att.device.as_str(),
            att.state.as_str()
        ),
        ("i-0123456789abcdef0", "/dev/sdf", "attached")
    );

    // A second attach and a delete are refused while attached.
    let e = ec2
        .attach(&env.me, &v.volume_id, "i-0000000000000000f", "/dev/sdg")
        .unwrap_err();
    assert_eq!(e.code(), "VolumeInUse");
    let e = ec2.delete_volume(&env.me, &v.volume_id, false).unwrap_err();
    assert_eq!(e.code(), "VolumeInUse");
    assert_eq!(
        env.kms
            .list_grants(
                &env.me,
                ListGrantsRequest {
                    key_id: key.key_id.clone(),
                    ..Default::default()
                }
            )
            .unwrap()
            .grants
            .len(),
        1,
        "the refused attach left no grant"
    );

    // Disabling the key does not break the attachment.
    env.kms
        .disable_key(
            &env.me,
            KeyIdRequest {
                key_id: key.key_id.clone(),
            },
        )
        .unwrap();
    a.image().write(8192, b"after disable", false).unwrap();
    let mut got = [0u8; 12];
    a.image().read(100, &mut got).unwrap();
    assert_eq!(&got, b"hello volume");

    a.detach(&ec2).unwrap();
    assert!(
        env.kms
            .list_grants(
                &env.me,
                ListGrantsRequest {
                    key_id: key.key_id.clone(),
                    ..Default::default()
                }
            )
            .unwrap()
            .grants
            .is_empty()
    );
    let retired = events(&env, "RetireGrant");
    assert_eq!(retired.len(), 1);
    assert!(retired[0].get("errorCode").is_none(), "{}", retired[0]);
    let d = ec2
        .describe_volumes(
            &env.me,
            DescribeVolumesRequest {
                volume_ids: vec![v.volume_id.clone()],
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(d.volumes[0].state, "available");
    assert_eq!(d.volumes[0].attachments, Some(vec![]));

    // The next attach fails with the KMS error and changes nothing.
    let path = ec2.image_path(&v.volume_id);
    let before = std::fs::read(&path).unwrap();
    let e = ec2
        .attach(&env.me, &v.volume_id, "i-0123456789abcdef0", "/dev/sdf")
        .unwrap_err();
    assert_eq!(e.code(), "DisabledException");
    assert!(e.message().contains(&key.arn));
    assert!(std::fs::read(&path).unwrap() == before);
    assert_eq!(
        ec2.describe_volumes(&env.me, Default::default())
            .unwrap()
            .volumes[0]
            .state,
        "available"
    );

    env.kms
        .enable_key(
            &env.me,
            KeyIdRequest {
                key_id: key.key_id.clone(),
            },
        )
        .unwrap();
    let a = ec2
        .attach(&env.me, &v.volume_id, "i-0123456789abcdef0", "/dev/sdf")
        .unwrap();
    let mut got = [0u8; 13];
    a.image().read(8192, &mut got).unwrap();
    assert_eq!(&got, b"after disable");
    a.detach(&ec2).unwrap();
}

#[test]
fn unencrypted_volumes_attach_without_kms() {
    let env = Env::new();
    let ec2 = ec2(&env);
    let v = create(&ec2, &env, false, None).unwrap();
    let a = ec2
        .attach(&env.me, &v.volume_id, "i-0123456789abcdef0", "/dev/sdf")
        .unwrap();
    assert!(!a.image().is_encrypted());
    a.image().write(0, b"plain", true).unwrap();
    a.detach(&ec2).unwrap();
    assert!(events(&env, "CreateGrant").is_empty());
    let raw = ebsim::ec2::data_area(&ec2.image_path(&v.volume_id)).unwrap();
    assert_eq!(&raw[..5], b"plain");
}

#[test]
fn a_dropped_attachment_is_repaired_and_the_volume_reattaches() {
    let env = Env::new();
    let ec2 = ec2(&env);
    let key = env.create_key();
    let v = create(&ec2, &env, true, Some(&key.key_id)).unwrap();
    let a = ec2
        .attach(&env.me, &v.volume_id, "i-0123456789abcdef0", "/dev/sdf")
        .unwrap();
    a.image().write(0, b"kept", true).unwrap();
    drop(a); // as if the attaching process died: the lock is gone, the record stays
    let d = ec2.describe_volumes(&env.me, Default::default()).unwrap();
    assert_eq!(d.volumes[0].state, "available");
    assert!(
        env.kms
            .list_grants(
                &env.me,
                ListGrantsRequest {
                    key_id: key.key_id.clone(),
                    ..Default::default()
                }
            )
            .unwrap()
            .grants
            .is_empty(),
        "the stale grant was retired"
    );
    let a = ec2
        .attach(&env.me, &v.volume_id, "i-0123456789abcdef0", "/dev/sdf")
        .unwrap();
    let mut got = [0u8; 4];
    a.image().read(0, &mut got).unwrap();
    assert_eq!(&got, b"kept");
    a.detach(&ec2).unwrap();
}

#[test]
fn a_tampered_header_fails_attach_and_leaves_no_grant() {
    let env = Env::new();
    let ec2 = ec2(&env);
    let key = env.create_key();
    let v = create(&ec2, &env, true, Some(&key.key_id)).unwrap();
    let path = ec2.image_path(&v.volume_id);
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    for at in [0u64, 4096] {
        f.write_all_at(&0xffu64.to_le_bytes(), at + 64).unwrap(); // creation time
    }
    let before = std::fs::read(&path).unwrap();
    let e = ec2
        .attach(&env.me, &v.volume_id, "i-0123456789abcdef0", "/dev/sdf")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ImageCorrupt);
    assert!(e.message().contains("header authentication failed"), "{e}");
    assert!(std::fs::read(&path).unwrap() == before);
    assert!(
        env.kms
            .list_grants(
                &env.me,
                ListGrantsRequest {
                    key_id: key.key_id.clone(),
                    ..Default::default()
                }
            )
            .unwrap()
            .grants
            .is_empty()
    );
    assert_eq!(
        ec2.describe_volumes(&env.me, Default::default())
            .unwrap()
            .volumes[0]
            .state,
        "available"
    );
}

#[test]
fn modify_volume_grows_detached_volumes_only() {
    let env = Env::new();
    let ec2 = ec2(&env);
    let key = env.create_key();
    let v = create(&ec2, &env, true, Some(&key.key_id)).unwrap();
    let a = ec2
        .attach(&env.me, &v.volume_id, "i-0123456789abcdef0", "/dev/sdf")
        .unwrap();
    a.image().write((4 << 20) - 4, b"tail", true).unwrap();
    let grow = |bytes| ModifyVolumeRequest {
        volume_id: v.volume_id.clone(),
        size_bytes: Some(bytes),
        ..Default::default()
    };
    assert_eq!(
        ec2.modify_volume(&env.me, grow(8 << 20))
            .unwrap_err()
            .code(),
        "IncorrectState"
    );
    a.detach(&ec2).unwrap();
    let e = ec2.modify_volume(&env.me, grow(2 << 20)).unwrap_err();
    assert_eq!(e.code(), "InvalidParameterValue");
    assert!(
        e.message()
            .starts_with("New size cannot be smaller than existing size")
    );
    let m = ec2
        .modify_volume(&env.me, grow(8 << 20))
        .unwrap()
        .volume_modification;
    assert_eq!(m.modification_state, "completed");
    let a = ec2
        .attach(&env.me, &v.volume_id, "i-0123456789abcdef0", "/dev/sdf")
        .unwrap();
    assert_eq!(a.image().size(), 8 << 20);
    let mut got = vec![1u8; 4 + 4096];
    a.image().read((4 << 20) - 4, &mut got).unwrap();
    assert_eq!(&got[..4], b"tail");
    assert!(got[4..].iter().all(|&b| b == 0));
    a.detach(&ec2).unwrap();
    assert_eq!(
        ec2.describe_volumes(&env.me, Default::default())
            .unwrap()
            .volumes[0]
            .size_bytes,
        8 << 20
    );
}

#[test]
fn no_plaintext_data_key_in_any_file_after_create_attach_and_detach() {
    let env = Env::new();
    let ec2 = ec2(&env);
    let key = env.create_key();
    let v = create(&ec2, &env, true, Some(&key.key_id)).unwrap();
    let a = ec2
        .attach(&env.me, &v.volume_id, "i-0123456789abcdef0", "/dev/sdf")
        .unwrap();
    a.image().write(0, &[0x42; 65536], true).unwrap();
    a.detach(&ec2).unwrap();
    // Recover the data key the way only a KMS principal can, then look for it.
    let header = ebsim::volume::image::read_copies(&ec2.image_path(&v.volume_id)).unwrap()[0]
        .clone()
        .unwrap()
        .header;
    let dk = env
        .kms
        .decrypt(
            &env.me,
            DecryptRequest {
                ciphertext_blob: Blob::new(header.wrapped_key.clone()),
                encryption_context: [("aws:ebs:id".to_string(), v.volume_id.clone())].into(),
                ..Default::default()
            },
        )
        .unwrap()
        .plaintext;
    let dk = dk.as_slice();
    assert_eq!(dk.len(), 64);
    let needles: Vec<&[u8]> = vec![dk, &dk[..32], &dk[32..], &dk[..16], &dk[48..]];
    let b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(dk)
    };
    let files = files_under(env.root.path());
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "img"))
    );
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        for n in &needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == *n),
                "data key bytes in {}",
                f.display()
            );
        }
        assert!(
            !bytes.windows(b64.len()).any(|w| w == b64.as_bytes()),
            "base64 data key in {}",
            f.display()
        );
    }
}

/// A host that reports what the test tells it and records what EC2 asked.
#[derive(Default)]
struct FakeHost {
    holders: std::sync::Mutex<Vec<String>>,
    cleared: std::sync::Mutex<Vec<String>>,
}

impl ebsim::ec2::AttachmentHost for FakeHost {
    fn holders(&self, _volume_id: &str, _a: &AttachmentRecord) -> Vec<String> {
        self.holders.lock().unwrap().clone()
    }
    fn clear_dead(&self, volume_id: &str, _a: &AttachmentRecord) {
        self.cleared.lock().unwrap().push(volume_id.to_string());
    }
    fn release(
        &self,
        _volume_id: &str,
        _a: &AttachmentRecord,
        _process_gone: bool,
    ) -> ebsim::Result<Vec<String>> {
        Ok(std::mem::take(&mut *self.holders.lock().unwrap()))
    }
    fn clear_stale_sockets(&self, _live: &dyn Fn(&str) -> bool) -> Vec<std::path::PathBuf> {
        vec![]
    }
}

#[test]
fn a_dead_attachment_is_judged_by_the_injected_host() {
    let env = Env::new();
    let mut ec2 = ec2(&env);
    let host = std::sync::Arc::new(FakeHost::default());
    ec2.set_host(host.clone());
    let v = create(&ec2, &env, true, None).unwrap();
    let a = ec2
        .attach(&env.me, &v.volume_id, "i-0123456789abcdef0", "/dev/sdf")
        .unwrap();
    // The attachment ends without detach (as when its process dies): its lock
    // goes, its record stays.
    drop(a);
    *host.holders.lock().unwrap() = vec!["a loop device the test made up".into()];
    let describe = |ec2: &Ec2| {
        ec2.describe_volumes(
            &env.me,
            DescribeVolumesRequest {
                volume_ids: vec![v.volume_id.clone()],
                ..Default::default()
            },
        )
        .unwrap()
        .volumes
        .remove(0)
    };
    let shown = describe(&ec2);
    assert_eq!(shown.state, "error");
    let message = shown.state_message.unwrap_or_default();
    assert!(
        message.contains("a loop device the test made up") && message.contains("--force"),
        "{message}"
    );
    let e = ec2
        .attach(&env.me, &v.volume_id, "i-0123456789abcdef0", "/dev/sdf")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::VolumeInUse);
    assert!(host.cleared.lock().unwrap().is_empty());

    // Released: the next look settles the record and asks the host to clear
    // what the dead process left.
    host.holders.lock().unwrap().clear();
    assert_eq!(describe(&ec2).state, "available");
    assert_eq!(*host.cleared.lock().unwrap(), vec![v.volume_id.clone()]);
}
