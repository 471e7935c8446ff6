//! Access control: the seed notes' policy examples, explicit denies, identity
//! policies, role sessions, grants (constraints, tokens, propagation, retire and
//! revoke), the lockout safety check, and the audit of denied calls.

mod common;
use common::*;
use ebsim::ErrorKind as K;
use ebsim::iam::{EntityKind, Iam, NewEntity, Principal};
use ebsim::kms::access::Caller;
use ebsim::kms::api::*;

fn iam(env: &Env) -> Iam {
    Iam::open(&env.root).unwrap()
}

/// Creates IAM user `name` (with an optional inline policy) and returns it as a caller.
fn user(env: &Env, name: &str, policy: Option<&str>) -> Caller {
    let root = Principal::root(ACCOUNT);
    let iam = iam(env);
    iam.create(&root, &NewEntity::user(name), start()).unwrap();
    if let Some(p) = policy {
        iam.put_policy(&root, EntityKind::User, name, "inline", p)
            .unwrap();
    }
    Caller::new(Principal::parse(&format!("arn:aws:iam::{ACCOUNT}:user/{name}")).unwrap())
}

fn key_with_policy(env: &Env, policy: &str) -> KeyMetadata {
    env.kms
        .create_key(
            &env.me,
            CreateKeyRequest {
                policy: Some(policy.into()),
                ..Default::default()
            },
        )
        .unwrap()
        .key_metadata
}

fn enc(
    env: &Env,
    who: &Caller,
    key: &str,
    ctx: &[(&str, &str)],
) -> Result<EncryptResponse, ebsim::Error> {
    env.kms.encrypt(
        who,
        EncryptRequest {
            key_id: key.into(),
            plaintext: Blob::new(b"x".to_vec()),
            encryption_context: common::ctx(ctx),
            ..Default::default()
        },
    )
}

fn arn(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:user/{name}")
}

const ROOT_STATEMENT: &str = r#"{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}"#;

#[test]
fn full_access_for_the_account_delegates_to_identity_policies() {
    let env = Env::new();
    let k = env.create_key(); // the default policy: the account root gets kms:*
    let alice = user(
        &env,
        "alice",
        Some(
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":["kms:Encrypt","kms:Decrypt"],"Resource":"arn:aws:kms:*:111122223333:key/*"}}"#,
        ),
    );
    let bob = user(&env, "bob", None);
    enc(&env, &env.me, &k.key_id, &[]).unwrap();
    enc(&env, &alice, &k.key_id, &[]).unwrap();
    let m = expect_err(enc(&env, &bob, &k.key_id, &[]), K::AccessDenied);
    assert_eq!(
        m,
        format!(
            "User: {} is not authorized to perform: kms:Encrypt on resource: {} because no identity-based policy allows the kms:Encrypt action",
            arn("bob"),
            k.arn
        )
    );
    expect_err(
        env.kms.disable_key(&alice, env.key(&k.key_id)),
        K::AccessDenied,
    );
    // Another account's root is not named by the key policy.
    let stranger = Caller::account_root("444455556666");
    let m = expect_err(enc(&env, &stranger, &k.arn, &[]), K::AccessDenied);
    assert!(
        m.ends_with("because no resource-based policy allows the kms:Encrypt action"),
        "{m}"
    );
}

#[test]
fn key_administrators_manage_but_do_not_use_the_key() {
    let env = Env::new();
    let admin = user(&env, "KMSAdminUser", None);
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[{ROOT_STATEMENT},{{"Sid":"Allow access for Key Administrators","Effect":"Allow",
        "Principal":{{"AWS":["{}"]}},"Action":["kms:Create*","kms:Describe*","kms:Enable*","kms:List*","kms:Put*","kms:Update*",
        "kms:Revoke*","kms:Disable*","kms:Get*","kms:Delete*","kms:TagResource","kms:UntagResource","kms:ScheduleKeyDeletion",
        "kms:CancelKeyDeletion"],"Resource":"*"}}]}}"#,
        arn("KMSAdminUser")
    );
    let k = key_with_policy(&env, &policy);
    // Management: allowed by the key policy alone (no identity policy needed).
    env.kms.disable_key(&admin, env.key(&k.key_id)).unwrap();
    env.kms.enable_key(&admin, env.key(&k.key_id)).unwrap();
    env.kms
        .tag_resource(
            &admin,
            TagResourceRequest {
                key_id: k.key_id.clone(),
                tags: vec![],
            },
        )
        .unwrap();
    env.kms
        .enable_key_rotation(
            &admin,
            EnableKeyRotationRequest {
                key_id: k.key_id.clone(),
                rotation_period_in_days: None,
            },
        )
        .unwrap();
    env.kms
        .get_key_policy(
            &admin,
            GetKeyPolicyRequest {
                key_id: k.key_id.clone(),
                policy_name: None,
            },
        )
        .unwrap();
    env.kms
        .schedule_key_deletion(
            &admin,
            ScheduleKeyDeletionRequest {
                key_id: k.key_id.clone(),
                pending_window_in_days: Some(7),
            },
        )
        .unwrap();
    env.kms
        .cancel_key_deletion(&admin, env.key(&k.key_id))
        .unwrap();
    env.kms.enable_key(&admin, env.key(&k.key_id)).unwrap();
    // Use: denied.
    for r in [
        enc(&env, &admin, &k.key_id, &[]).map(|_| ()),
        env.kms
            .generate_data_key(
                &admin,
                GenerateDataKeyRequest {
                    key_id: k.key_id.clone(),
                    key_spec: Some("AES_256".into()),
                    ..Default::default()
                },
            )
            .map(|_| ()),
    ] {
        let m = expect_err(r, K::AccessDenied);
        assert!(m.contains("because no identity-based policy allows"), "{m}");
    }
}

#[test]
fn allow_use_of_the_key_but_not_its_management() {
    let env = Env::new();
    let app = user(&env, "app", None);
    let policy = format!(
        r#"{{"Statement":[{ROOT_STATEMENT},{{"Sid":"Allow use of the key","Effect":"Allow","Principal":{{"AWS":"{}"}},
        "Action":["kms:Encrypt","kms:Decrypt","kms:ReEncrypt*","kms:GenerateDataKey*","kms:DescribeKey"],"Resource":"*"}}]}}"#,
        arn("app")
    );
    let k = key_with_policy(&env, &policy);
    let blob = enc(&env, &app, &k.key_id, &[("purpose", "demo")])
        .unwrap()
        .ciphertext_blob;
    env.kms
        .decrypt(
            &app,
            DecryptRequest {
                ciphertext_blob: blob.clone(),
                encryption_context: ctx(&[("purpose", "demo")]),
                ..Default::default()
            },
        )
        .unwrap();
    env.kms
        .re_encrypt(
            &app,
            ReEncryptRequest {
                ciphertext_blob: blob,
                source_encryption_context: ctx(&[("purpose", "demo")]),
                destination_key_id: k.key_id.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    env.kms
        .generate_data_key_without_plaintext(
            &app,
            GenerateDataKeyRequest {
                key_id: k.key_id.clone(),
                number_of_bytes: Some(64),
                ..Default::default()
            },
        )
        .unwrap();
    env.kms
        .describe_key(
            &app,
            DescribeKeyRequest {
                key_id: k.key_id.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    expect_err(
        env.kms.disable_key(&app, env.key(&k.key_id)),
        K::AccessDenied,
    );
    expect_err(
        env.kms.schedule_key_deletion(
            &app,
            ScheduleKeyDeletionRequest {
                key_id: k.key_id.clone(),
                pending_window_in_days: None,
            },
        ),
        K::AccessDenied,
    );
    expect_err(
        env.kms.get_key_policy(
            &app,
            GetKeyPolicyRequest {
                key_id: k.key_id.clone(),
                policy_name: None,
            },
        ),
        K::AccessDenied,
    );
}

#[test]
fn create_grant_only_when_the_grant_is_for_an_aws_resource() {
    // The seed's IAM policy: kms:CreateGrant only with Bool kms:GrantIsForAWSResource.
    let env = Env::new();
    let k = env.create_key();
    let ops = user(
        &env,
        "ops",
        Some(&format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"kms:CreateGrant","Resource":["{}"],
            "Condition":{{"Bool":{{"kms:GrantIsForAWSResource":true}}}}}}]}}"#,
            k.arn
        )),
    );
    let grant = |who: &Caller| {
        env.kms.create_grant(
            who,
            CreateGrantRequest {
                key_id: k.key_id.clone(),
                grantee_principal: arn("ops"),
                operations: vec!["Decrypt".into()],
                ..Default::default()
            },
        )
    };
    let m = expect_err(grant(&ops), K::AccessDenied);
    assert!(m.contains("kms:CreateGrant"), "{m}");
    grant(&ops.via("ec2", "us-east-1")).unwrap();
    // The console's "Allow attachment of persistent resources" statement in a key policy works the same way.
    let vol = user(&env, "vol", None);
    let policy = format!(
        r#"{{"Statement":[{ROOT_STATEMENT},{{"Sid":"Allow attachment of persistent resources","Effect":"Allow","Principal":{{"AWS":"{}"}},
        "Action":["kms:CreateGrant","kms:ListGrants","kms:RevokeGrant"],"Resource":"*","Condition":{{"Bool":{{"kms:GrantIsForAWSResource":"true"}}}}}}]}}"#,
        arn("vol")
    );
    let k2 = key_with_policy(&env, &policy);
    let req = ListGrantsRequest {
        key_id: k2.key_id.clone(),
        ..Default::default()
    };
    expect_err(env.kms.list_grants(&vol, req.clone()), K::AccessDenied);
    env.kms
        .list_grants(&vol.via("ec2", "us-east-1"), req)
        .unwrap();
}

#[test]
fn limit_a_key_to_services_with_via_service() {
    let env = Env::with_region("us-west-2");
    let example = user(&env, "ExampleUser", None);
    let policy = format!(
        r#"{{"Statement":[{ROOT_STATEMENT},{{"Effect":"Allow","Principal":{{"AWS":"{}"}},
        "Action":["kms:Encrypt","kms:Decrypt","kms:ReEncrypt*","kms:GenerateDataKey*","kms:CreateGrant","kms:ListGrants","kms:DescribeKey"],
        "Resource":"*","Condition":{{"StringEquals":{{"kms:ViaService":["ec2.us-west-2.amazonaws.com","rds.us-west-2.amazonaws.com"]}}}}}}]}}"#,
        arn("ExampleUser")
    );
    let k = key_with_policy(&env, &policy);
    expect_err(enc(&env, &example, &k.key_id, &[]), K::AccessDenied);
    enc(&env, &example.via("ec2", "us-west-2"), &k.key_id, &[]).unwrap();
    enc(&env, &example.via("rds", "us-west-2"), &k.key_id, &[]).unwrap();
    expect_err(
        enc(&env, &example.via("ec2", "us-east-1"), &k.key_id, &[]),
        K::AccessDenied,
    );
    expect_err(
        enc(&env, &example.via("s3", "us-west-2"), &k.key_id, &[]),
        K::AccessDenied,
    );
}

#[test]
fn an_explicit_deny_anywhere_wins() {
    let env = Env::new();
    let dave = user(
        &env,
        "dave",
        Some(r#"{"Statement":{"Effect":"Allow","Action":"kms:*","Resource":"*"}}"#),
    );
    let policy = format!(
        r#"{{"Statement":[{ROOT_STATEMENT},{{"Effect":"Deny","Principal":{{"AWS":"{}"}},"Action":"kms:Encrypt","Resource":"*",
        "Condition":{{"StringNotEquals":{{"kms:EncryptionContext:dept":"it"}}}}}}]}}"#,
        arn("dave")
    );
    let k = key_with_policy(&env, &policy);
    let m = expect_err(
        enc(&env, &dave, &k.key_id, &[("dept", "sales")]),
        K::AccessDenied,
    );
    assert!(
        m.ends_with("with an explicit deny in a resource-based policy"),
        "{m}"
    );
    enc(&env, &dave, &k.key_id, &[("dept", "it")]).unwrap();
    // A Deny in an identity policy beats the key policy's Allow for the account root's delegation.
    let root = Principal::root(ACCOUNT);
    iam(&env)
        .put_policy(
            &root,
            EntityKind::User,
            "dave",
            "deny",
            r#"{"Statement":{"Effect":"Deny","Action":"kms:Decrypt","Resource":"*"}}"#,
        )
        .unwrap();
    let blob = enc(&env, &dave, &k.key_id, &[("dept", "it")])
        .unwrap()
        .ciphertext_blob;
    let m = expect_err(
        env.kms.decrypt(
            &dave,
            DecryptRequest {
                ciphertext_blob: blob,
                encryption_context: ctx(&[("dept", "it")]),
                ..Default::default()
            },
        ),
        K::AccessDenied,
    );
    assert!(
        m.ends_with("with an explicit deny in an identity-based policy"),
        "{m}"
    );
}

#[test]
fn role_policies_apply_to_role_sessions() {
    let env = Env::new();
    let root = Principal::root(ACCOUNT);
    let i = iam(&env);
    i.create(
        &root,
        &NewEntity::role("App", r#"{"Statement":[]}"#),
        start(),
    )
    .unwrap();
    i.put_policy(
        &root,
        EntityKind::Role,
        "App",
        "use",
        r#"{"Statement":{"Effect":"Allow","Action":"kms:Encrypt","Resource":"*"}}"#,
    )
    .unwrap();
    let k = env.create_key();
    let session =
        Caller::new(Principal::parse("arn:aws:sts::111122223333:assumed-role/App/job-1").unwrap());
    enc(&env, &session, &k.key_id, &[]).unwrap();
    // A key policy naming the role ARN matches its sessions directly.
    let policy = format!(
        r#"{{"Statement":[{ROOT_STATEMENT},{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::111122223333:role/App"}},"Action":"kms:DescribeKey","Resource":"*"}}]}}"#
    );
    let k2 = key_with_policy(&env, &policy);
    env.kms
        .describe_key(
            &session,
            DescribeKeyRequest {
                key_id: k2.key_id.clone(),
                ..Default::default()
            },
        )
        .unwrap();
}

#[test]
fn identity_policies_gate_actions_on_no_key() {
    let env = Env::new();
    let nobody = user(&env, "nobody", None);
    let m = expect_err(
        env.kms.create_key(&nobody, CreateKeyRequest::default()),
        K::AccessDenied,
    );
    assert!(m.contains("kms:CreateKey on resource: *"), "{m}");
    expect_err(
        env.kms.list_keys(&nobody, ListRequest::default()),
        K::AccessDenied,
    );
    let maker = user(
        &env,
        "maker",
        Some(
            r#"{"Statement":{"Effect":"Allow","Action":["kms:CreateKey","kms:ListKeys","kms:PutKeyPolicy"],"Resource":"*"}}"#,
        ),
    );
    env.kms
        .create_key(&maker, CreateKeyRequest::default())
        .unwrap();
    assert_eq!(
        env.kms
            .list_keys(&maker, ListRequest::default())
            .unwrap()
            .keys
            .len(),
        1
    );
}

#[test]
fn key_policy_operations_and_the_lockout_safety_check() {
    let env = Env::new();
    let k = env.create_key();
    let got = env
        .kms
        .get_key_policy(
            &env.me,
            GetKeyPolicyRequest {
                key_id: k.key_id.clone(),
                policy_name: None,
            },
        )
        .unwrap();
    assert_eq!(got.policy_name, "default");
    assert!(got.policy.contains("arn:aws:iam::111122223333:root"));
    let names = env
        .kms
        .list_key_policies(&env.me, env.key(&k.key_id))
        .unwrap();
    assert_eq!(names.policy_names, vec!["default"]);
    let put = |policy: &str, bypass: bool| {
        env.kms.put_key_policy(
            &env.me,
            PutKeyPolicyRequest {
                key_id: k.key_id.clone(),
                policy_name: None,
                policy: policy.into(),
                bypass_policy_lockout_safety_check: bypass,
            },
        )
    };
    let lockout = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"kms:*","Resource":"*"}]}"#;
    let m = expect_err(put(lockout, false), K::MalformedPolicyDocument);
    assert!(
        m.contains("invalid principals"),
        "alice does not exist yet: {m}"
    );
    user(&env, "alice", None);
    let m = expect_err(put(lockout, false), K::MalformedPolicyDocument);
    assert_eq!(
        m,
        "The new key policy will not allow you to update the key policy in the future."
    );
    expect_err(put("{\"Statement\": 5}", false), K::MalformedPolicyDocument);
    let unchanged = env
        .kms
        .get_key_policy(
            &env.me,
            GetKeyPolicyRequest {
                key_id: k.key_id.clone(),
                policy_name: None,
            },
        )
        .unwrap();
    assert_eq!(
        unchanged.policy, got.policy,
        "refused policies change nothing"
    );
    put(lockout, true).unwrap();
    // Now even the account root is locked out of the key, as in AWS.
    expect_err(enc(&env, &env.me, &k.key_id, &[]), K::AccessDenied);
    expect_err(
        env.kms.get_key_policy(
            &env.me,
            GetKeyPolicyRequest {
                key_id: k.key_id.clone(),
                policy_name: Some("other".into()),
            },
        ),
        K::NotFound,
    );
}

#[test]
fn grants_allow_with_constraints_tokens_and_propagation() {
    let mut env = Env::new();
    env.kms
        .set_grant_propagation_delay(chrono::TimeDelta::minutes(5));
    let k = env.create_key();
    let host = user(&env, "host", None);
    let g = env
        .kms
        .create_grant(
            &env.me,
            CreateGrantRequest {
                key_id: k.key_id.clone(),
                grantee_principal: arn("host"),
                retiring_principal: Some(arn("host")),
                operations: vec![
                    "Decrypt".into(),
                    "GenerateDataKeyWithoutPlaintext".into(),
                    "DescribeKey".into(),
                ],
                constraints: Some(GrantConstraints {
                    encryption_context_subset: Some(ctx(&[("aws:ebs:id", "vol-1")])),
                    ..Default::default()
                }),
                name: Some("attach-vol-1".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(g.grant_id.len(), 64);
    let gdk = |who: &Caller, c: &[(&str, &str)], tokens: Vec<String>| {
        env.kms.generate_data_key_without_plaintext(
            who,
            GenerateDataKeyRequest {
                key_id: k.key_id.clone(),
                number_of_bytes: Some(64),
                encryption_context: ctx(c),
                grant_tokens: tokens,
                ..Default::default()
            },
        )
    };
    // Not yet propagated: denied without the token, allowed with it.
    expect_err(
        gdk(&host, &[("aws:ebs:id", "vol-1")], vec![]),
        K::AccessDenied,
    );
    let w = gdk(
        &host,
        &[("aws:ebs:id", "vol-1"), ("extra", "ok")],
        vec![g.grant_token.clone()],
    )
    .unwrap();
    expect_err(
        gdk(
            &host,
            &[("aws:ebs:id", "vol-2")],
            vec![g.grant_token.clone()],
        ),
        K::AccessDenied,
    );
    expect_err(
        gdk(&host, &[], vec!["not-a-token".into()]),
        K::InvalidGrantToken,
    );
    env.clock.advance(chrono::TimeDelta::minutes(5));
    gdk(&host, &[("aws:ebs:id", "vol-1")], vec![]).unwrap();
    env.kms
        .decrypt(
            &host,
            DecryptRequest {
                ciphertext_blob: w.ciphertext_blob.clone(),
                encryption_context: ctx(&[("aws:ebs:id", "vol-1"), ("extra", "ok")]),
                ..Default::default()
            },
        )
        .unwrap();
    expect_err(
        enc(&env, &host, &k.key_id, &[("aws:ebs:id", "vol-1")]),
        K::AccessDenied,
    );
    // Name makes CreateGrant idempotent.
    let again = env
        .kms
        .create_grant(
            &env.me,
            CreateGrantRequest {
                key_id: k.key_id.clone(),
                grantee_principal: arn("host"),
                retiring_principal: Some(arn("host")),
                operations: vec![
                    "DescribeKey".into(),
                    "Decrypt".into(),
                    "GenerateDataKeyWithoutPlaintext".into(),
                ],
                constraints: Some(GrantConstraints {
                    encryption_context_subset: Some(ctx(&[("aws:ebs:id", "vol-1")])),
                    ..Default::default()
                }),
                name: Some("attach-vol-1".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(again.grant_id, g.grant_id);
    let list = env
        .kms
        .list_grants(
            &env.me,
            ListGrantsRequest {
                key_id: k.key_id.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(list.grants.len(), 1);
    assert_eq!(
        list.grants[0].issuing_account,
        "arn:aws:iam::111122223333:root"
    );
    let retirable = env
        .kms
        .list_retirable_grants(
            &env.me,
            ListRetirableGrantsRequest {
                retiring_principal: arn("host"),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(retirable.grants.len(), 1);
    // The retiring principal retires it; then the host is denied again.
    env.kms
        .retire_grant(
            &host,
            RetireGrantRequest {
                grant_token: Some(g.grant_token.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    expect_err(
        gdk(&host, &[("aws:ebs:id", "vol-1")], vec![]),
        K::AccessDenied,
    );
    expect_err(
        env.kms.retire_grant(
            &host,
            RetireGrantRequest {
                key_id: Some(k.key_id.clone()),
                grant_id: Some(g.grant_id.clone()),
                ..Default::default()
            },
        ),
        K::NotFound,
    );
}

#[test]
fn grant_validation_revocation_and_delegation() {
    let env = Env::new();
    let k = env.create_key();
    let host = user(&env, "host", None);
    let other = user(&env, "other", None);
    let create = |who: &Caller, grantee: &str, ops: &[&str]| {
        env.kms.create_grant(
            who,
            CreateGrantRequest {
                key_id: k.key_id.clone(),
                grantee_principal: grantee.into(),
                operations: ops.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        )
    };
    expect_err(
        create(&env.me, "not-a-principal", &["Decrypt"]),
        K::Validation,
    );
    expect_err(create(&env.me, &arn("host"), &[]), K::Validation);
    expect_err(create(&env.me, &arn("host"), &["Sign"]), K::Validation);
    expect_err(create(&env.me, &arn("host"), &["Dance"]), K::Validation);
    let g = create(&env.me, &arn("host"), &["Decrypt", "CreateGrant"]).unwrap();
    // A grantee holding CreateGrant may pass on only what it holds.
    create(&host, &arn("other"), &["Decrypt"]).unwrap();
    expect_err(create(&host, &arn("other"), &["Encrypt"]), K::AccessDenied);
    // Revoke needs kms:RevokeGrant from a policy; the grantee cannot.
    expect_err(
        env.kms.revoke_grant(
            &other,
            RevokeGrantRequest {
                key_id: k.key_id.clone(),
                grant_id: g.grant_id.clone(),
                dry_run: false,
            },
        ),
        K::AccessDenied,
    );
    env.kms
        .revoke_grant(
            &env.me,
            RevokeGrantRequest {
                key_id: k.key_id.clone(),
                grant_id: g.grant_id.clone(),
                dry_run: false,
            },
        )
        .unwrap();
    expect_err(
        env.kms.revoke_grant(
            &env.me,
            RevokeGrantRequest {
                key_id: k.key_id.clone(),
                grant_id: g.grant_id.clone(),
                dry_run: false,
            },
        ),
        K::NotFound,
    );
    expect_err(
        env.kms.revoke_grant(
            &env.me,
            RevokeGrantRequest {
                key_id: k.key_id.clone(),
                grant_id: "xyz".into(),
                dry_run: false,
            },
        ),
        K::InvalidGrantId,
    );
    expect_err(
        env.kms.retire_grant(&env.me, RetireGrantRequest::default()),
        K::Validation,
    );
    // A disabled key takes no new grants.
    env.kms.disable_key(&env.me, env.key(&k.key_id)).unwrap();
    expect_err(create(&env.me, &arn("host"), &["Decrypt"]), K::Disabled);
}

#[test]
fn denied_calls_are_audited_with_the_principal() {
    let env = Env::new();
    let k = env.create_key();
    let bob = user(&env, "bob", None);
    let _ = enc(&env, &bob, &k.key_id, &[]);
    let q = ebsim::kms::audit::LookupQuery {
        attributes: vec![ebsim::kms::audit::LookupAttribute {
            attribute_key: "Username".into(),
            attribute_value: "bob".into(),
        }],
        ..Default::default()
    };
    let ev = ebsim::kms::audit::lookup(env.kms.audit_log_path(), &q).unwrap();
    let rec: serde_json::Value =
        serde_json::from_str(ev["Events"][0]["CloudTrailEvent"].as_str().unwrap()).unwrap();
    assert_eq!(rec["errorCode"], "AccessDeniedException");
    assert_eq!(rec["userIdentity"]["type"], "IAMUser");
    assert_eq!(rec["userIdentity"]["arn"], arn("bob"));
    assert_eq!(rec["userIdentity"]["userName"], "bob");
}
