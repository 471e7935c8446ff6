use super::*;
use proptest::prelude::*;

const ACCT: &str = "111122223333";
const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

fn user(name: &str) -> String {
    format!("arn:aws:iam::{ACCT}:user/{name}")
}

fn who(arn: &str) -> RequestPrincipal<'_> {
    RequestPrincipal {
        arn,
        account_id: ACCT,
        role_arn: None,
        is_root: arn.ends_with(":root"),
        is_service: false,
    }
}

fn req<'a>(p: RequestPrincipal<'a>, action: &'a str, ctx: &'a ConditionContext) -> Request<'a> {
    Request {
        principal: p,
        action,
        resource: KEY,
        context: ctx,
    }
}

#[test]
fn the_default_key_policy_allows_root_directly_and_users_through_the_account() {
    let doc = parse(
        &crate::kms::access::default_key_policy(ACCT),
        PolicyKind::Key,
    )
    .unwrap();
    let ctx = ConditionContext::new();
    let root = format!("arn:aws:iam::{ACCT}:root");
    let v = doc.evaluate(&req(who(&root), "kms:Encrypt", &ctx));
    assert_eq!(
        v,
        Verdict {
            deny: false,
            allow: true,
            allow_account: false
        }
    );
    let alice = user("alice");
    let v = doc.evaluate(&req(who(&alice), "kms:Encrypt", &ctx));
    assert_eq!(
        v,
        Verdict {
            deny: false,
            allow: false,
            allow_account: true
        }
    );
    let stranger = RequestPrincipal {
        account_id: "444455556666",
        ..who("arn:aws:iam::444455556666:user/x")
    };
    assert_eq!(
        doc.evaluate(&req(stranger, "kms:Encrypt", &ctx)),
        Verdict::default()
    );
}

#[test]
fn actions_resources_and_wildcards() {
    let doc = parse(
        &format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{}"}},
                "Action":["kms:Create*","kms:Describe?ey"],"Resource":"*"}}]}}"#,
            user("admin")
        ),
        PolicyKind::Key,
    )
    .unwrap();
    let ctx = ConditionContext::new();
    let admin = user("admin");
    for (action, allowed) in [
        ("kms:CreateAlias", true),
        ("KMS:createGRANT", true),
        ("kms:DescribeKey", true),
        ("kms:Encrypt", false),
    ] {
        assert_eq!(
            doc.evaluate(&req(who(&admin), action, &ctx)).allow,
            allowed,
            "{action}"
        );
    }
    assert!(glob("arn:aws:kms:*:111122223333:key/*", KEY));
    assert!(!glob("arn:aws:kms:*:999999999999:key/*", KEY));
    assert!(glob("a?c*", "abcdef") && !glob("a?c", "ac"));
}

#[test]
fn not_action_not_resource_and_not_principal() {
    let doc = parse(
        r#"{"Statement":[{"Effect":"Deny","NotPrincipal":{"AWS":"arn:aws:iam::111122223333:user/admin"},
            "NotAction":"kms:Describe*","Resource":"*"}]}"#,
        PolicyKind::Key,
    )
    .unwrap();
    let ctx = ConditionContext::new();
    let (admin, bob) = (user("admin"), user("bob"));
    assert!(!doc.evaluate(&req(who(&admin), "kms:Encrypt", &ctx)).deny);
    assert!(doc.evaluate(&req(who(&bob), "kms:Encrypt", &ctx)).deny);
    assert!(!doc.evaluate(&req(who(&bob), "kms:DescribeKey", &ctx)).deny);
}

#[test]
fn conditions_every_operator_family() {
    let mut ctx = ConditionContext::new();
    ctx.set("kms:ViaService", "ec2.us-west-2.amazonaws.com")
        .set("kms:GrantIsForAWSResource", "true")
        .set("kms:CallerAccount", ACCT)
        .set("kms:EncryptionContext:aws:ebs:id", "vol-0abc")
        .set("aws:PrincipalArn", user("alice"))
        .set("kms:RotationPeriodInDays", "365")
        .set("aws:CurrentTime", "2026-06-01T00:00:00Z")
        .set_many("kms:EncryptionContextKeys", ["aws:ebs:id".to_string()])
        .set_many(
            "kms:GrantOperations",
            ["Decrypt".to_string(), "Encrypt".to_string()],
        );
    let cond = |c: &str| -> bool {
        let doc = parse(
            &format!(r#"{{"Statement":{{"Effect":"Allow","Action":"kms:*","Resource":"*","Condition":{c}}}}}"#),
            PolicyKind::Identity,
        )
        .unwrap();
        let alice = user("alice");
        doc.evaluate(&req(who(&alice), "kms:Decrypt", &ctx)).allow
    };
    assert!(cond(
        r#"{"StringEquals":{"kms:ViaService":["rds.us-west-2.amazonaws.com","ec2.us-west-2.amazonaws.com"]}}"#
    ));
    assert!(!cond(
        r#"{"StringEquals":{"kms:ViaService":"EC2.us-west-2.amazonaws.com"}}"#
    ));
    assert!(cond(
        r#"{"StringEqualsIgnoreCase":{"KMS:VIASERVICE":"EC2.us-west-2.amazonaws.com"}}"#
    ));
    assert!(cond(
        r#"{"StringNotEquals":{"kms:ViaService":"rds.us-west-2.amazonaws.com"}}"#
    ));
    assert!(cond(
        r#"{"StringLike":{"kms:ViaService":"ec2.*.amazonaws.com"}}"#
    ));
    assert!(!cond(r#"{"StringNotLike":{"kms:ViaService":"ec2.*"}}"#));
    assert!(cond(r#"{"Bool":{"kms:GrantIsForAWSResource":true}}"#));
    assert!(!cond(r#"{"Bool":{"kms:GrantIsForAWSResource":"false"}}"#));
    assert!(cond(
        r#"{"ArnEquals":{"aws:PrincipalArn":"arn:aws:iam::111122223333:user/alice"}}"#
    ));
    assert!(cond(
        r#"{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::*:user/ali*"}}"#
    ));
    assert!(!cond(
        r#"{"ArnNotLike":{"aws:PrincipalArn":"arn:aws:iam::*:user/*"}}"#
    ));
    assert!(cond(
        r#"{"NumericLessThan":{"kms:RotationPeriodInDays":400}}"#
    ));
    assert!(!cond(
        r#"{"NumericGreaterThan":{"kms:RotationPeriodInDays":"400"}}"#
    ));
    assert!(cond(
        r#"{"DateLessThan":{"aws:CurrentTime":"2027-01-01T00:00:00Z"}}"#
    ));
    assert!(cond(
        r#"{"StringEquals":{"kms:EncryptionContext:aws:ebs:id":"vol-0abc"}}"#
    ));
    assert!(cond(
        r#"{"StringEquals":{"kms:CallerAccount":"111122223333"}}"#
    ));
    // Missing keys: positive operators fail, negated ones and IfExists pass, Null tests presence.
    assert!(!cond(
        r#"{"StringEquals":{"kms:EncryptionAlgorithm":"SYMMETRIC_DEFAULT"}}"#
    ));
    assert!(cond(
        r#"{"StringNotEquals":{"kms:EncryptionAlgorithm":"SYMMETRIC_DEFAULT"}}"#
    ));
    assert!(cond(
        r#"{"StringEqualsIfExists":{"kms:EncryptionAlgorithm":"SYMMETRIC_DEFAULT"}}"#
    ));
    assert!(cond(r#"{"Null":{"kms:EncryptionAlgorithm":"true"}}"#));
    assert!(!cond(r#"{"Null":{"kms:ViaService":"true"}}"#));
    // Set operators on multi-valued keys.
    assert!(cond(
        r#"{"ForAllValues:StringEquals":{"kms:GrantOperations":["Decrypt","Encrypt","DescribeKey"]}}"#
    ));
    assert!(!cond(
        r#"{"ForAllValues:StringEquals":{"kms:GrantOperations":["Decrypt"]}}"#
    ));
    assert!(cond(
        r#"{"ForAnyValue:StringEquals":{"kms:GrantOperations":["Decrypt"]}}"#
    ));
    assert!(cond(
        r#"{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["aws:ebs:id","other"]}}"#
    ));
    assert!(
        cond(r#"{"ForAllValues:StringEquals":{"kms:SomethingAbsent":["x"]}}"#),
        "vacuously true"
    );
    assert!(!cond(
        r#"{"ForAnyValue:StringEquals":{"kms:SomethingAbsent":["x"]}}"#
    ));
    // All conditions of a statement must hold.
    assert!(!cond(
        r#"{"Bool":{"kms:GrantIsForAWSResource":"true"},"StringEquals":{"kms:CallerAccount":"999999999999"}}"#
    ));
}

#[test]
fn malformed_documents_say_what_is_wrong() {
    let bad = |doc: &str, kind: PolicyKind, needle: &str| {
        let e = parse(doc, kind).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::MalformedPolicyDocument, "{doc}");
        assert!(e.message().contains(needle), "{doc}: {}", e.message());
    };
    let k = PolicyKind::Key;
    bad("{", k, "not valid JSON");
    bad("[]", k, "JSON object");
    bad(r#"{"Version":"2012-10-17"}"#, k, "no Statement");
    bad(
        r#"{"Statement":[],"Extra":1}"#,
        k,
        "unknown top-level element 'Extra'",
    );
    bad(
        r#"{"Version":"2020-01-01","Statement":[]}"#,
        k,
        "Version '2020-01-01'",
    );
    bad(
        r#"{"Statement":[{"Sid":"x","Principal":"*","Action":"kms:*","Resource":"*"}]}"#,
        k,
        "statement 1 (Sid \"x\") has no Effect",
    );
    bad(
        r#"{"Statement":[{"Effect":"allow","Principal":"*","Action":"kms:*","Resource":"*"}]}"#,
        k,
        "must be \"Allow\" or \"Deny\"",
    );
    bad(
        r#"{"Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}"#,
        k,
        "no Principal",
    );
    bad(
        r#"{"Statement":[{"Effect":"Allow","Principal":"*","Resource":"*"}]}"#,
        k,
        "no Action",
    );
    bad(
        r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"Encrypt","Resource":"*"}]}"#,
        k,
        "not service:action",
    );
    bad(
        r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"bob"},"Action":"kms:*","Resource":"*"}]}"#,
        k,
        "invalid principals",
    );
    bad(
        r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/*"},"Action":"kms:*"}]}"#,
        k,
        "invalid principals",
    );
    bad(
        r#"{"Statement":[{"Effect":"Allow","Principal":{"Group":"x"},"Action":"kms:*"}]}"#,
        k,
        "Principal type 'Group'",
    );
    bad(
        r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Condition":{"StringEqualz":{"a":"b"}}}]}"#,
        k,
        "'StringEqualz'",
    );
    bad(
        r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Condition":{"NumericLessThan":{"a":"ten"}}}]}"#,
        k,
        "'ten' is not a valid value",
    );
    bad(
        r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Condition":{"ForAllValues:StringEquals":{"kms:EncryptionContext:dept":"it"}}}]}"#,
        k,
        "OverlyPermissiveCondition",
    );
    bad(
        r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Color":"red"}]}"#,
        k,
        "unknown element 'Color'",
    );
    bad(
        r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}}"#,
        PolicyKind::Identity,
        "has a Principal",
    );
    bad(
        r#"{"Statement":{"Effect":"Allow","Action":"kms:*"}}"#,
        PolicyKind::Identity,
        "no Resource",
    );
    let big = format!(r#"{{"Statement":[],"Id":"{}"}}"#, "x".repeat(33_000));
    assert_eq!(
        parse(&big, k).unwrap_err().kind(),
        crate::ErrorKind::LimitExceeded
    );
}

#[test]
fn principals_accounts_roles_sessions_services() {
    let doc = parse(
        r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":["444455556666","arn:aws:iam::111122223333:role/App"],
            "Service":"ec2.amazonaws.com"},"Action":"kms:Decrypt","Resource":"*"}]}"#,
        PolicyKind::Key,
    )
    .unwrap();
    let ctx = ConditionContext::new();
    let session = "arn:aws:sts::111122223333:assumed-role/App/worker-1";
    let as_role = RequestPrincipal {
        role_arn: Some("arn:aws:iam::111122223333:role/App"),
        ..who(session)
    };
    assert!(
        doc.evaluate(&req(as_role, "kms:Decrypt", &ctx)).allow,
        "a role ARN matches its sessions"
    );
    let other = RequestPrincipal {
        account_id: "444455556666",
        ..who("arn:aws:iam::444455556666:user/x")
    };
    assert!(doc.evaluate(&req(other, "kms:Decrypt", &ctx)).allow_account);
    let ec2 = RequestPrincipal {
        arn: "ec2.amazonaws.com",
        account_id: "",
        role_arn: None,
        is_root: false,
        is_service: true,
    };
    assert!(doc.evaluate(&req(ec2, "kms:Decrypt", &ctx)).allow);
    let rds = RequestPrincipal {
        arn: "rds.amazonaws.com",
        ..ec2
    };
    assert!(!doc.evaluate(&req(rds, "kms:Decrypt", &ctx)).allow);
}

// ---------------------------------------------------------------- properties

fn arb_statement() -> impl Strategy<Value = Statement> {
    let principals = prop_oneof![
        Just(Principals::Any),
        Just(Principals::Some {
            aws: vec![format!("arn:aws:iam::{ACCT}:root")],
            service: vec![]
        }),
        Just(Principals::Some {
            aws: vec![user("alice")],
            service: vec![]
        }),
        Just(Principals::Some {
            aws: vec!["444455556666".into()],
            service: vec![]
        }),
        Just(Principals::Some {
            aws: vec![],
            service: vec!["ec2.amazonaws.com".into()]
        }),
    ];
    let actions = prop::sample::subsequence(
        vec![
            "kms:*",
            "kms:Encrypt",
            "kms:Decrypt",
            "kms:Create*",
            "*",
            "kms:Describe*",
        ],
        1..3,
    );
    let cond = prop_oneof![
        Just(None),
        Just(Some((
            "StringEquals",
            "kms:ViaService",
            "ec2.us-east-1.amazonaws.com"
        ))),
        Just(Some(("Bool", "kms:GrantIsForAWSResource", "true"))),
        Just(Some(("StringNotEquals", "kms:CallerAccount", ACCT))),
        Just(Some(("Null", "kms:ViaService", "true"))),
    ];
    (
        any::<bool>(),
        any::<bool>(),
        principals,
        any::<bool>(),
        actions,
        any::<bool>(),
        cond,
    )
        .prop_map(
            |(deny, not_p, p, not_a, actions, any_resource, cond)| Statement {
                sid: None,
                effect: if deny { Effect::Deny } else { Effect::Allow },
                principal: Some((not_p, p)),
                action: Patterns {
                    not: not_a,
                    values: actions.into_iter().map(String::from).collect(),
                },
                resource: Some(Patterns {
                    not: false,
                    values: vec![if any_resource { "*".into() } else { KEY.into() }],
                }),
                conditions: cond
                    .map(|(op, key, v)| Condition {
                        op: Op::parse(op).unwrap(),
                        qualifier: None,
                        if_exists: false,
                        key: key.to_ascii_lowercase(),
                        values: vec![v.into()],
                    })
                    .into_iter()
                    .collect(),
            },
        )
}

fn arb_request() -> impl Strategy<Value = (String, bool, &'static str, ConditionContext)> {
    let principal = prop_oneof![
        Just((format!("arn:aws:iam::{ACCT}:root"), false)),
        Just((user("alice"), false)),
        Just((user("bob"), false)),
        Just(("ec2.amazonaws.com".to_string(), true)),
    ];
    let action = prop::sample::select(vec![
        "kms:Encrypt",
        "kms:Decrypt",
        "kms:CreateGrant",
        "kms:DescribeKey",
    ]);
    (principal, action, any::<bool>(), any::<bool>()).prop_map(|((p, svc), action, via, grant)| {
        let mut ctx = ConditionContext::new();
        ctx.set("kms:CallerAccount", ACCT);
        if via {
            ctx.set("kms:ViaService", "ec2.us-east-1.amazonaws.com");
        }
        if grant {
            ctx.set("kms:GrantIsForAWSResource", "true");
        }
        (p, svc, action, ctx)
    })
}

fn request_principal<'a>(
    r: &'a (String, bool, &'static str, ConditionContext),
) -> RequestPrincipal<'a> {
    RequestPrincipal {
        arn: &r.0,
        account_id: if r.1 { "" } else { ACCT },
        role_arn: None,
        is_root: r.0.ends_with(":root"),
        is_service: r.1,
    }
}

fn allowed(
    doc: &PolicyDocument,
    r: &(String, bool, &'static str, ConditionContext),
) -> (bool, bool) {
    let p = request_principal(r);
    let v = doc.evaluate(&Request {
        principal: p,
        action: r.2,
        resource: KEY,
        context: &r.3,
    });
    (v.allow && !v.deny, (v.allow || v.allow_account) && !v.deny)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn adding_a_deny_never_grants_anything(
        stmts in prop::collection::vec(arb_statement(), 0..6),
        extra in arb_statement(),
        r in arb_request(),
    ) {
        let before = PolicyDocument { version: None, id: None, statements: stmts.clone() };
        let mut with = stmts;
        with.push(Statement { effect: Effect::Deny, ..extra });
        let after = PolicyDocument { version: None, id: None, statements: with };
        let (b, a) = (allowed(&before, &r), allowed(&after, &r));
        prop_assert!(a.0 <= b.0 && a.1 <= b.1);
    }

    #[test]
    fn removing_an_allow_never_grants_anything(
        stmts in prop::collection::vec(arb_statement(), 1..7),
        pick in any::<prop::sample::Index>(),
        r in arb_request(),
    ) {
        let before = PolicyDocument { version: None, id: None, statements: stmts.clone() };
        let i = pick.index(stmts.len());
        let mut fewer = stmts;
        if fewer[i].effect == Effect::Allow {
            fewer.remove(i);
        }
        let after = PolicyDocument { version: None, id: None, statements: fewer };
        let (b, a) = (allowed(&before, &r), allowed(&after, &r));
        prop_assert!(a.0 <= b.0 && a.1 <= b.1);
    }
}

/// The same properties for the KMS's combined decision (key policy + identity
/// policies): a Deny added to either never grants; removing an Allow never grants.
fn decided(
    key: &[Statement],
    identity: &[Statement],
    r: &(String, bool, &'static str, ConditionContext),
) -> bool {
    let doc = |s: &[Statement]| PolicyDocument {
        version: None,
        id: None,
        statements: s.to_vec(),
    };
    let id: Vec<Statement> = identity
        .iter()
        .cloned()
        .map(|s| Statement {
            principal: None,
            ..s
        })
        .collect();
    let p = request_principal(r);
    let req = Request {
        principal: p,
        action: r.2,
        resource: KEY,
        context: &r.3,
    };
    crate::kms::access::decide(&doc(key), &[doc(&id)], &req).is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn kms_decision_is_monotone_in_denies_and_allows(
        key in prop::collection::vec(arb_statement(), 0..5),
        identity in prop::collection::vec(arb_statement(), 0..4),
        extra in arb_statement(),
        to_identity in any::<bool>(),
        pick in any::<prop::sample::Index>(),
        r in arb_request(),
    ) {
        let before = decided(&key, &identity, &r);
        let deny = Statement { effect: Effect::Deny, ..extra };
        let (mut k2, mut i2) = (key.clone(), identity.clone());
        if to_identity { i2.push(deny) } else { k2.push(deny) }
        prop_assert!(!decided(&k2, &i2, &r) || before, "a Deny granted something");
        // Remove one Allow from the key policy or the identity policy.
        let (mut k3, mut i3) = (key.clone(), identity.clone());
        let list = if to_identity { &mut i3 } else { &mut k3 };
        if !list.is_empty() {
            let i = pick.index(list.len());
            if list[i].effect == Effect::Allow {
                list.remove(i);
            }
        }
        prop_assert!(!decided(&k3, &i3, &r) || before, "removing an Allow granted something");
    }
}
