//! Key management: CreateKey, DescribeKey, ListKeys, Enable/DisableKey,
//! UpdateKeyDescription, aliases, tags, AWS managed keys, key-id forms.

mod common;
use common::*;
use ebsim::ErrorKind as K;
use ebsim::kms::api::*;
use ebsim::kms::model::Tag;

#[test]
fn create_key_defaults_match_aws() {
    let env = Env::new();
    let m = env.create_key();
    assert_eq!(m.aws_account_id, ACCOUNT);
    assert_eq!(
        m.arn,
        format!("arn:aws:kms:us-east-1:{ACCOUNT}:key/{}", m.key_id)
    );
    assert!(uuid::Uuid::parse_str(&m.key_id).is_ok());
    assert!(m.enabled);
    assert_eq!(m.key_state, "Enabled");
    assert_eq!(m.key_usage, "ENCRYPT_DECRYPT");
    assert_eq!(m.key_spec, "SYMMETRIC_DEFAULT");
    assert_eq!(m.customer_master_key_spec, "SYMMETRIC_DEFAULT");
    assert_eq!(m.origin, "AWS_KMS");
    assert_eq!(m.key_manager, "CUSTOMER");
    assert_eq!(m.encryption_algorithms, vec!["SYMMETRIC_DEFAULT"]);
    assert!(!m.multi_region);
    assert_eq!(m.creation_date.0, start());
    assert_eq!(
        m.current_key_material_id.as_ref().map(|s| s.len()),
        Some(64)
    );
    assert_eq!(m.deletion_date, None);
}

/// The deprecated CustomerMasterKeySpec member works as KeySpec does; the response
/// carries both with the same value.
#[test]
fn customer_master_key_spec_is_key_spec_by_its_old_name() {
    let env = Env::new();
    let m = env
        .kms
        .create_key(
            &env.me,
            CreateKeyRequest {
                customer_master_key_spec: Some("SYMMETRIC_DEFAULT".into()),
                key_usage: Some("ENCRYPT_DECRYPT".into()),
                ..Default::default()
            },
        )
        .unwrap()
        .key_metadata;
    assert_eq!(m.key_spec, "SYMMETRIC_DEFAULT");
    assert_eq!(m.customer_master_key_spec, "SYMMETRIC_DEFAULT");
    assert_eq!(m.key_usage, "ENCRYPT_DECRYPT");
    let json = serde_json::to_value(&m).unwrap();
    for absent in [
        "SigningAlgorithms",
        "MacAlgorithms",
        "KeyAgreementAlgorithms",
        "MultiRegionConfiguration",
    ] {
        assert!(json.get(absent).is_none(), "{absent}");
    }
}

#[test]
fn create_key_validates_like_aws() {
    let env = Env::new();
    let mk = |f: &dyn Fn(&mut CreateKeyRequest)| {
        let mut r = CreateKeyRequest::default();
        f(&mut r);
        env.kms.create_key(&env.me, r)
    };
    let m = expect_err(mk(&|r| r.key_spec = Some("AES_999".into())), K::Validation);
    assert!(m.starts_with("1 validation error detected: Value 'AES_999' at 'keySpec' failed to satisfy constraint: Member must satisfy enum value set"), "{m}");
    // Every spec but SYMMETRIC_DEFAULT needs an explicit KeyUsage that fits it,
    // and is then refused as not implemented, naming what is.
    let m = expect_err(mk(&|r| r.key_spec = Some("RSA_2048".into())), K::Validation);
    assert_eq!(
        m,
        "You must specify a KeyUsage value when KeySpec is RSA_2048"
    );
    let m = expect_err(
        mk(&|r| {
            r.key_spec = Some("RSA_2048".into());
            r.key_usage = Some("SIGN_VERIFY".into());
        }),
        K::UnsupportedOperation,
    );
    assert_eq!(
        m,
        "KeySpec RSA_2048 is not supported: ebsim implements symmetric encryption keys (SYMMETRIC_DEFAULT) only."
    );
    for (spec, usage) in [
        ("HMAC_256", "GENERATE_VERIFY_MAC"),
        ("ECC_NIST_P384", "KEY_AGREEMENT"),
        ("ECC_NIST_EDWARDS25519", "SIGN_VERIFY"),
        ("ML_DSA_65", "SIGN_VERIFY"),
        ("SM2", "ENCRYPT_DECRYPT"),
    ] {
        expect_err(
            mk(&|r| {
                r.key_spec = Some(spec.into());
                r.key_usage = Some(usage.into());
            }),
            K::UnsupportedOperation,
        );
    }
    for (spec, usage) in [
        ("HMAC_256", "ENCRYPT_DECRYPT"),
        ("RSA_4096", "GENERATE_VERIFY_MAC"),
        ("ECC_SECG_P256K1", "KEY_AGREEMENT"),
        ("ML_DSA_44", "ENCRYPT_DECRYPT"),
        ("SYMMETRIC_DEFAULT", "SIGN_VERIFY"),
    ] {
        let m = expect_err(
            mk(&|r| {
                r.key_spec = Some(spec.into());
                r.key_usage = Some(usage.into());
            }),
            K::Validation,
        );
        assert_eq!(
            m,
            format!("KeyUsage {usage} is not compatible with KeySpec {spec}")
        );
    }
    let m = expect_err(
        mk(&|r| r.key_usage = Some("SIGN_VERIFY".into())),
        K::Validation,
    );
    assert_eq!(
        m,
        "KeyUsage SIGN_VERIFY is not compatible with KeySpec SYMMETRIC_DEFAULT"
    );
    // The deprecated member's enum has no ML-DSA or Ed25519 specs.
    let m = expect_err(
        mk(&|r| r.customer_master_key_spec = Some("ML_DSA_44".into())),
        K::Validation,
    );
    assert!(
        m.starts_with("1 validation error detected: Value 'ML_DSA_44' at 'customerMasterKeySpec' failed to satisfy constraint: Member must satisfy enum value set: [RSA_2048,"),
        "{m}"
    );
    assert!(m.ends_with(", SM2]"), "{m}");
    let m = expect_err(
        mk(&|r| r.key_spec = Some("ML_DSA_44".into())),
        K::Validation,
    );
    assert_eq!(
        m,
        "You must specify a KeyUsage value when KeySpec is ML_DSA_44"
    );
    expect_err(mk(&|r| r.key_usage = Some("BOGUS".into())), K::Validation);
    expect_err(
        mk(&|r| {
            r.key_spec = Some("SYMMETRIC_DEFAULT".into());
            r.customer_master_key_spec = Some("SYMMETRIC_DEFAULT".into())
        }),
        K::Validation,
    );
    expect_err(
        mk(&|r| r.multi_region = Some(true)),
        K::UnsupportedOperation,
    );
    expect_err(
        mk(&|r| r.origin = Some("AWS_CLOUDHSM".into())),
        K::UnsupportedOperation,
    );
    expect_err(mk(&|r| r.origin = Some("SOMEWHERE".into())), K::Validation);
    expect_err(
        mk(&|r| r.policy = Some("{not json".into())),
        K::MalformedPolicyDocument,
    );
    expect_err(
        mk(&|r| r.policy = Some("{\"Version\":\"2012-10-17\"}".into())),
        K::MalformedPolicyDocument,
    );
    expect_err(
        mk(&|r| r.description = Some("x".repeat(8193))),
        K::Validation,
    );
    expect_err(
        mk(&|r| {
            r.tags = vec![Tag {
                tag_key: "aws:x".into(),
                tag_value: "1".into(),
            }]
        }),
        K::Tag,
    );
    // Nothing was created by any of the failures.
    let keys = env.kms.list_keys(&env.me, ListRequest::default()).unwrap();
    assert!(keys.keys.is_empty());
    // A valid policy and tags are kept.
    // A policy that would lock the caller out is refused unless the check is bypassed.
    let m = expect_err(
        mk(&|r| r.policy = Some(r#"{"Version":"2012-10-17","Statement":[]}"#.into())),
        K::MalformedPolicyDocument,
    );
    assert_eq!(
        m,
        "The new key policy will not allow you to update the key policy in the future."
    );
    mk(&|r| {
        r.policy = Some(r#"{"Version":"2012-10-17","Statement":[]}"#.into());
        r.bypass_policy_lockout_safety_check = true;
    })
    .unwrap();
    let m = mk(&|r| {
        r.policy = Some(ebsim::kms::access::default_key_policy(ACCOUNT));
        r.tags = vec![Tag {
            tag_key: "team".into(),
            tag_value: "storage".into(),
        }];
    })
    .unwrap()
    .key_metadata;
    let tags = env
        .kms
        .list_resource_tags(
            &env.me,
            ListResourceTagsRequest {
                key_id: m.key_id,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        tags.tags,
        vec![Tag {
            tag_key: "team".into(),
            tag_value: "storage".into()
        }]
    );
}

#[test]
fn describe_key_by_every_identifier_form() {
    let env = Env::new();
    let m = env.create_key();
    env.kms
        .create_alias(
            &env.me,
            AliasRequest {
                alias_name: "alias/app".into(),
                target_key_id: m.key_id.clone(),
            },
        )
        .unwrap();
    let alias_arn = format!("arn:aws:kms:us-east-1:{ACCOUNT}:alias/app");
    for id in [
        m.key_id.clone(),
        m.arn.clone(),
        "alias/app".into(),
        alias_arn,
        m.key_id.to_uppercase(),
    ] {
        assert_eq!(env.describe(&id).unwrap().key_id, m.key_id, "{id}");
    }
}

#[test]
fn unknown_and_malformed_key_ids_get_aws_errors() {
    let env = Env::new();
    let id = "1234abcd-12ab-34cd-56ef-1234567890ab";
    let m = expect_err(env.describe(id), K::NotFound);
    assert_eq!(
        m,
        format!("Key 'arn:aws:kms:us-east-1:{ACCOUNT}:key/{id}' does not exist")
    );
    assert_eq!(
        expect_err(env.describe("not-a-key"), K::NotFound),
        "Invalid keyId not-a-key"
    );
    expect_err(env.describe("arn:aws:s3:::bucket"), K::InvalidArn);
    let m = expect_err(env.describe("alias/missing"), K::NotFound);
    assert_eq!(
        m,
        format!("Alias arn:aws:kms:us-east-1:{ACCOUNT}:alias/missing is not found.")
    );
    // A key ARN of another region is not found here.
    let k = env.create_key();
    expect_err(
        env.describe(&k.arn.replace("us-east-1", "us-west-2")),
        K::NotFound,
    );
    // Management operations take key ids and ARNs, not aliases.
    env.kms
        .create_alias(
            &env.me,
            AliasRequest {
                alias_name: "alias/a".into(),
                target_key_id: k.key_id.clone(),
            },
        )
        .unwrap();
    expect_err(
        env.kms.disable_key(&env.me, env.key("alias/a")),
        K::NotFound,
    );
}

#[test]
fn list_keys_pages_with_markers() {
    let env = Env::new();
    let mut want: Vec<String> = (0..5).map(|_| env.create_key().key_id).collect();
    want.sort();
    let mut got = Vec::new();
    let mut marker = None;
    loop {
        let page = env
            .kms
            .list_keys(
                &env.me,
                ListRequest {
                    limit: Some(2),
                    marker: marker.clone(),
                },
            )
            .unwrap();
        assert!(page.keys.len() <= 2);
        got.extend(page.keys.iter().map(|k| k.key_id.clone()));
        assert_eq!(page.truncated, page.next_marker.is_some());
        match page.next_marker {
            Some(m) => marker = Some(m),
            None => break,
        }
    }
    assert_eq!(got, want);
    expect_err(
        env.kms.list_keys(
            &env.me,
            ListRequest {
                limit: Some(0),
                marker: None,
            },
        ),
        K::Validation,
    );
    expect_err(
        env.kms.list_keys(
            &env.me,
            ListRequest {
                limit: Some(1001),
                marker: None,
            },
        ),
        K::Validation,
    );
    expect_err(
        env.kms.list_keys(
            &env.me,
            ListRequest {
                limit: None,
                marker: Some("garbage".into()),
            },
        ),
        K::InvalidMarker,
    );
}

#[test]
fn disable_and_enable_gate_cryptographic_use() {
    let env = Env::new();
    let k = env.create_key();
    let blob = env.encrypt(&k.key_id, b"data").unwrap().ciphertext_blob;
    env.kms.disable_key(&env.me, env.key(&k.key_id)).unwrap();
    let d = env.describe(&k.key_id).unwrap();
    assert_eq!((d.key_state.as_str(), d.enabled), ("Disabled", false));
    let msg = format!("{} is disabled.", k.arn);
    assert_eq!(expect_err(env.encrypt(&k.key_id, b"x"), K::Disabled), msg);
    assert_eq!(expect_err(env.decrypt(blob.as_slice()), K::Disabled), msg);
    let gdk = GenerateDataKeyRequest {
        key_id: k.key_id.clone(),
        key_spec: Some("AES_256".into()),
        ..Default::default()
    };
    expect_err(env.kms.generate_data_key(&env.me, gdk.clone()), K::Disabled);
    expect_err(
        env.kms
            .generate_data_key_without_plaintext(&env.me, gdk.clone()),
        K::Disabled,
    );
    // Disabling twice is fine, as in AWS.
    env.kms.disable_key(&env.me, env.key(&k.key_id)).unwrap();
    env.kms.enable_key(&env.me, env.key(&k.key_id)).unwrap();
    assert_eq!(
        &env.decrypt(blob.as_slice()).unwrap().plaintext.as_slice(),
        b"data"
    );
    env.kms.generate_data_key(&env.me, gdk).unwrap();
}

#[test]
fn update_key_description() {
    let env = Env::new();
    let k = env.create_key();
    env.kms
        .update_key_description(
            &env.me,
            UpdateKeyDescriptionRequest {
                key_id: k.key_id.clone(),
                description: "new".into(),
            },
        )
        .unwrap();
    assert_eq!(env.describe(&k.key_id).unwrap().description, "new");
    expect_err(
        env.kms.update_key_description(
            &env.me,
            UpdateKeyDescriptionRequest {
                key_id: k.key_id.clone(),
                description: "x".repeat(8193),
            },
        ),
        K::Validation,
    );
}

#[test]
fn aliases_create_update_delete_and_list() {
    let env = Env::new();
    let a = env.create_key();
    let b = env.create_key();
    let alias = |name: &str, target: &str| AliasRequest {
        alias_name: name.into(),
        target_key_id: target.into(),
    };
    env.kms
        .create_alias(&env.me, alias("alias/app", &a.key_id))
        .unwrap();
    let m = expect_err(
        env.kms.create_alias(&env.me, alias("alias/app", &b.key_id)),
        K::AlreadyExists,
    );
    assert_eq!(
        m,
        format!("An alias with the name arn:aws:kms:us-east-1:{ACCOUNT}:alias/app already exists")
    );
    expect_err(
        env.kms
            .create_alias(&env.me, alias("alias/aws/mine", &a.key_id)),
        K::InvalidAliasName,
    );
    expect_err(
        env.kms.create_alias(&env.me, alias("app2", &a.key_id)),
        K::InvalidAliasName,
    );
    expect_err(
        env.kms
            .create_alias(&env.me, alias("alias/bad name", &a.key_id)),
        K::Validation,
    );
    expect_err(
        env.kms.create_alias(&env.me, alias("alias/x", "alias/app")),
        K::Validation,
    );
    expect_err(
        env.kms.create_alias(
            &env.me,
            alias("alias/x", "1234abcd-12ab-34cd-56ef-1234567890ab"),
        ),
        K::NotFound,
    );
    // Encrypt through the alias uses its target; UpdateAlias moves it.
    assert_eq!(env.encrypt("alias/app", b"x").unwrap().key_id, a.arn);
    env.kms
        .update_alias(&env.me, alias("alias/app", &b.key_id))
        .unwrap();
    assert_eq!(env.encrypt("alias/app", b"x").unwrap().key_id, b.arn);
    expect_err(
        env.kms
            .update_alias(&env.me, alias("alias/nope", &b.key_id)),
        K::NotFound,
    );
    // ListAliases: ours with targets, AWS's predefined ones without.
    let all = env
        .kms
        .list_aliases(
            &env.me,
            ListAliasesRequest {
                limit: Some(100),
                ..Default::default()
            },
        )
        .unwrap();
    let app = all
        .aliases
        .iter()
        .find(|x| x.alias_name == "alias/app")
        .unwrap();
    assert_eq!(app.target_key_id.as_deref(), Some(b.key_id.as_str()));
    assert_eq!(
        app.alias_arn,
        format!("arn:aws:kms:us-east-1:{ACCOUNT}:alias/app")
    );
    let ebs = all
        .aliases
        .iter()
        .find(|x| x.alias_name == "alias/aws/ebs")
        .unwrap();
    assert_eq!(ebs.target_key_id, None);
    let of_a = env
        .kms
        .list_aliases(
            &env.me,
            ListAliasesRequest {
                key_id: Some(a.key_id.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(of_a.aliases.is_empty());
    env.kms
        .delete_alias(&env.me, alias("alias/app", ""))
        .unwrap();
    expect_err(env.describe("alias/app"), K::NotFound);
    expect_err(
        env.kms.delete_alias(&env.me, alias("alias/app", "")),
        K::NotFound,
    );
}

#[test]
fn alias_quota_and_pending_deletion_target() {
    let env = Env::new();
    let k = env.create_key();
    for i in 0..ebsim::kms::ALIASES_PER_KEY {
        env.kms
            .create_alias(
                &env.me,
                AliasRequest {
                    alias_name: format!("alias/a{i}"),
                    target_key_id: k.key_id.clone(),
                },
            )
            .unwrap();
    }
    expect_err(
        env.kms.create_alias(
            &env.me,
            AliasRequest {
                alias_name: "alias/one-more".into(),
                target_key_id: k.key_id.clone(),
            },
        ),
        K::LimitExceeded,
    );
    let p = env.create_key();
    env.kms
        .schedule_key_deletion(
            &env.me,
            ScheduleKeyDeletionRequest {
                key_id: p.key_id.clone(),
                pending_window_in_days: None,
            },
        )
        .unwrap();
    let m = expect_err(
        env.kms.create_alias(
            &env.me,
            AliasRequest {
                alias_name: "alias/p".into(),
                target_key_id: p.key_id.clone(),
            },
        ),
        K::KmsInvalidState,
    );
    assert_eq!(m, format!("{} is pending deletion.", p.arn));
}

#[test]
fn tags_add_overwrite_remove_and_validate() {
    let env = Env::new();
    let k = env.create_key();
    let t = |k: &str, v: &str| Tag {
        tag_key: k.into(),
        tag_value: v.into(),
    };
    let tag = |tags: Vec<Tag>| {
        env.kms.tag_resource(
            &env.me,
            TagResourceRequest {
                key_id: k.key_id.clone(),
                tags,
            },
        )
    };
    let list = || {
        env.kms
            .list_resource_tags(
                &env.me,
                ListResourceTagsRequest {
                    key_id: k.key_id.clone(),
                    ..Default::default()
                },
            )
            .unwrap()
            .tags
    };
    tag(vec![t("a", "1"), t("b", "2")]).unwrap();
    tag(vec![t("a", "3")]).unwrap();
    assert_eq!(list(), vec![t("a", "3"), t("b", "2")]);
    env.kms
        .untag_resource(
            &env.me,
            UntagResourceRequest {
                key_id: k.key_id.clone(),
                tag_keys: vec!["a".into()],
            },
        )
        .unwrap();
    assert_eq!(list(), vec![t("b", "2")]);
    expect_err(tag(vec![t("aws:reserved", "1")]), K::Tag);
    expect_err(tag(vec![t("", "1")]), K::Tag);
    expect_err(tag(vec![t("k", &"v".repeat(257))]), K::Tag);
    expect_err(
        tag((0..50).map(|i| t(&format!("k{i}"), "v")).collect()),
        K::Tag,
    );
    assert_eq!(
        list(),
        vec![t("b", "2")],
        "a failed TagResource changes nothing"
    );
}

#[test]
fn aws_managed_key_is_created_on_first_use_and_not_usable_directly() {
    let env = Env::new();
    // DescribeKey on the predefined alias creates the key, as AWS does.
    let m = env.describe("alias/aws/ebs").unwrap();
    assert_eq!(m.key_manager, "AWS");
    assert!(m.description.contains("EBS"));
    assert_eq!(
        env.describe("alias/aws/ebs").unwrap().key_id,
        m.key_id,
        "created once"
    );
    let status = env
        .kms
        .get_key_rotation_status(&env.me, env.key(&m.key_id))
        .unwrap();
    assert!(status.key_rotation_enabled);
    assert_eq!(status.rotation_period_in_days, Some(365));
    // Not usable or changeable directly.
    let denied = expect_err(env.encrypt("alias/aws/ebs", b"x"), K::AccessDenied);
    assert_eq!(
        denied,
        format!(
            "User: arn:aws:iam::{ACCOUNT}:root is not authorized to perform: kms:Encrypt on resource: {} because no resource-based policy allows the kms:Encrypt action",
            m.arn
        )
    );
    expect_err(
        env.kms.disable_key(&env.me, env.key(&m.key_id)),
        K::AccessDenied,
    );
    expect_err(
        env.kms.schedule_key_deletion(
            &env.me,
            ScheduleKeyDeletionRequest {
                key_id: m.key_id.clone(),
                pending_window_in_days: Some(7),
            },
        ),
        K::AccessDenied,
    );
    expect_err(
        env.kms.enable_key_rotation(
            &env.me,
            EnableKeyRotationRequest {
                key_id: m.key_id.clone(),
                rotation_period_in_days: Some(90),
            },
        ),
        K::AccessDenied,
    );
    expect_err(
        env.kms.rotate_key_on_demand(&env.me, env.key(&m.key_id)),
        K::AccessDenied,
    );
    expect_err(
        env.kms.create_alias(
            &env.me,
            AliasRequest {
                alias_name: "alias/mine".into(),
                target_key_id: m.key_id.clone(),
            },
        ),
        K::AccessDenied,
    );
    expect_err(
        env.kms.delete_alias(
            &env.me,
            AliasRequest {
                alias_name: "alias/aws/ebs".into(),
                ..Default::default()
            },
        ),
        K::InvalidAliasName,
    );
    // Through EC2 (the volume service) it works; through another service it does not.
    let via_ec2 = env.me.via("ec2", "us-east-1");
    let gdk = GenerateDataKeyRequest {
        key_id: "alias/aws/ebs".into(),
        number_of_bytes: Some(64),
        encryption_context: ctx(&[("aws:ebs:id", "vol-0123456789abcdef0")]),
        ..Default::default()
    };
    let wrapped = env
        .kms
        .generate_data_key_without_plaintext(&via_ec2, gdk.clone())
        .unwrap();
    let back = env
        .kms
        .decrypt(
            &via_ec2,
            DecryptRequest {
                ciphertext_blob: wrapped.ciphertext_blob.clone(),
                encryption_context: gdk.encryption_context.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(back.plaintext.as_slice().len(), 64);
    expect_err(
        env.kms
            .generate_data_key(&env.me.via("rds", "us-east-1"), gdk.clone()),
        K::AccessDenied,
    );
    expect_err(
        env.kms
            .generate_data_key(&env.me.via("ec2", "us-west-2"), gdk),
        K::AccessDenied,
    );
    // The library entry point the volume service uses is idempotent too.
    assert_eq!(env.kms.aws_managed_key("ebs").unwrap().key_id, m.key_id);
    assert_ne!(env.kms.aws_managed_key("rds").unwrap().key_id, m.key_id);
}

#[test]
fn pending_import_keys_are_gated() {
    let env = Env::new();
    let m = env
        .kms
        .create_key(
            &env.me,
            CreateKeyRequest {
                origin: Some("EXTERNAL".into()),
                ..Default::default()
            },
        )
        .unwrap()
        .key_metadata;
    assert_eq!(
        (m.key_state.as_str(), m.origin.as_str(), m.enabled),
        ("PendingImport", "EXTERNAL", false)
    );
    assert_eq!(m.current_key_material_id, None);
    let msg = format!("{} is pending import.", m.arn);
    assert_eq!(
        expect_err(env.encrypt(&m.key_id, b"x"), K::KmsInvalidState),
        msg
    );
    assert_eq!(
        expect_err(
            env.kms.enable_key(&env.me, env.key(&m.key_id)),
            K::KmsInvalidState
        ),
        msg
    );
    let m2 = expect_err(
        env.kms.enable_key_rotation(
            &env.me,
            EnableKeyRotationRequest {
                key_id: m.key_id.clone(),
                rotation_period_in_days: None,
            },
        ),
        K::UnsupportedOperation,
    );
    assert_eq!(
        m2,
        format!(
            "{} origin is EXTERNAL which is not valid for this operation.",
            m.arn
        )
    );
    expect_err(
        env.kms.get_key_rotation_status(&env.me, env.key(&m.key_id)),
        K::UnsupportedOperation,
    );
}

#[test]
fn regions_are_isolated() {
    let env = Env::new();
    let k = env.create_key();
    let blob = env.encrypt(&k.key_id, b"east").unwrap().ciphertext_blob;
    let west = env.region("us-west-2");
    expect_err(
        west.describe_key(
            &env.me,
            DescribeKeyRequest {
                key_id: k.key_id.clone(),
                ..Default::default()
            },
        ),
        K::NotFound,
    );
    expect_err(
        west.decrypt(
            &env.me,
            DecryptRequest {
                ciphertext_blob: blob,
                ..Default::default()
            },
        ),
        K::AccessDenied,
    );
    assert!(
        west.list_keys(&env.me, ListRequest::default())
            .unwrap()
            .keys
            .is_empty()
    );
}

#[test]
fn state_is_shared_between_instances_and_survives_reopen() {
    let env = Env::new();
    // A second instance opened before the key exists sees it (cache refresh).
    let other = env.region("us-east-1");
    let k = env.create_key();
    let d = other
        .describe_key(
            &env.me,
            DescribeKeyRequest {
                key_id: k.key_id.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(d.key_metadata, k);
    // A change made through the other instance is seen by the first.
    other.disable_key(&env.me, env.key(&k.key_id)).unwrap();
    assert_eq!(env.describe(&k.key_id).unwrap().key_state, "Disabled");
    drop(other);
    let reopened = env.region("us-east-1");
    let d = reopened
        .describe_key(
            &env.me,
            DescribeKeyRequest {
                key_id: k.key_id.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(d.key_metadata.key_state, "Disabled");
}

#[test]
fn aws_owned_keys_are_invisible_to_the_account_and_outside_its_quota() {
    use ebsim::kms::Kms;
    use ebsim::kms::access::Caller;
    let env = Env::new();
    // A quota of one request per second: the service's own calls must not use it up.
    let kms = Kms::open_with(&env.root, "us-east-1", ACCOUNT, env.clock.clone(), Some(1)).unwrap();
    let id = kms.aws_owned_key("dynamodb").unwrap();
    assert_eq!(kms.aws_owned_key("dynamodb").unwrap(), id, "created once");
    let service = Caller::aws_service(ACCOUNT, "dynamodb.amazonaws.com");
    let audit_before = std::fs::read(kms.audit_log_path())
        .unwrap_or_default()
        .len();
    let mut blobs = Vec::new();
    for i in 0..5u8 {
        let r = kms
            .encrypt(
                &service,
                EncryptRequest {
                    key_id: id.clone(),
                    plaintext: Blob::new(vec![i; 8]),
                    ..Default::default()
                },
            )
            .unwrap();
        let back = kms
            .decrypt(
                &service,
                DecryptRequest {
                    ciphertext_blob: r.ciphertext_blob.clone(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(back.plaintext.as_slice(), &[i; 8]);
        blobs.push(r.ciphertext_blob);
    }
    assert_eq!(
        std::fs::read(kms.audit_log_path())
            .unwrap_or_default()
            .len(),
        audit_before,
        "not in the account's trail"
    );
    // The account sees nothing of it.
    assert!(
        kms.list_keys(&env.me, ListRequest::default())
            .unwrap()
            .keys
            .is_empty()
    );
    let m = expect_err(env.describe(&id), K::NotFound);
    assert!(m.contains("does not exist"));
    expect_err(env.kms.disable_key(&env.me, env.key(&id)), K::NotFound);
    expect_err(env.decrypt(blobs[0].as_slice()), K::AccessDenied);
    expect_err(
        env.kms.create_alias(
            &env.me,
            AliasRequest {
                alias_name: "alias/steal".into(),
                target_key_id: id.clone(),
            },
        ),
        K::NotFound,
    );
    // Another service cannot use it either.
    let other = Caller::aws_service(ACCOUNT, "s3.amazonaws.com");
    expect_err(
        kms.encrypt(
            &other,
            EncryptRequest {
                key_id: id,
                plaintext: Blob::new(vec![1]),
                ..Default::default()
            },
        ),
        K::AccessDenied,
    );
    // And the account's own quota is untouched by the five service calls above.
    let k = env.create_key();
    kms.encrypt(
        &env.me,
        EncryptRequest {
            key_id: k.key_id,
            plaintext: Blob::new(vec![1]),
            ..Default::default()
        },
    )
    .unwrap();
}

#[test]
fn a_region_store_belongs_to_one_account() {
    use ebsim::kms::Kms;
    let env = Env::new();
    env.create_key();
    let e = Kms::open_with(
        &env.root,
        "us-east-1",
        "444455556666",
        env.clock.clone(),
        None,
    )
    .err()
    .unwrap();
    assert_eq!(e.kind(), K::Environment);
    assert!(
        e.message().contains("belongs to account 111122223333"),
        "{}",
        e.message()
    );
    // The binding is per region store: a store not created yet takes the account it
    // is first opened with; the existing one still opens for its own account.
    Kms::open_with(
        &env.root,
        "eu-west-1",
        "444455556666",
        env.clock.clone(),
        None,
    )
    .unwrap();
    env.region("us-east-1");
}
