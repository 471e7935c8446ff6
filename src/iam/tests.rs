use super::*;

const ACCT: &str = "111122223333";

fn iam() -> (tempfile::TempDir, Iam) {
    let d = tempfile::tempdir().unwrap();
    let iam = Iam::open(&DataRoot::open(d.path()).unwrap()).unwrap();
    (d, iam)
}

fn now() -> Timestamp {
    crate::clock::parse_time("2026-01-01T00:00:00Z").unwrap()
}

#[test]
fn users_roles_and_inline_policies() {
    let (_d, iam) = iam();
    let root = Principal::root(ACCT);
    let u = iam.create(&root, &NewEntity::user("alice"), now()).unwrap();
    assert_eq!(u.arn, "arn:aws:iam::111122223333:user/alice");
    assert!(u.id.starts_with("AIDA") && u.id.len() == 21);
    let e = iam
        .create(&root, &NewEntity::user("alice"), now())
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            "EntityAlreadyExists",
            "User with name alice already exists."
        )
    );
    let e = iam
        .create(&root, &NewEntity::user("bad name"), now())
        .unwrap_err();
    assert_eq!(e.code(), "ValidationError");
    let e = iam
        .create(
            &root,
            &NewEntity {
                kind: EntityKind::Role,
                ..NewEntity::user("App")
            },
            now(),
        )
        .unwrap_err();
    assert_eq!(
        e.code(),
        "ValidationError",
        "roles need an assume-role policy"
    );
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let r = iam
        .create(
            &root,
            &NewEntity {
                path: Some("/svc/"),
                description: Some("the app"),
                ..NewEntity::role("App", trust)
            },
            now(),
        )
        .unwrap();
    assert_eq!(r.arn, "arn:aws:iam::111122223333:role/svc/App");

    let doc = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":["kms:Encrypt","kms:Decrypt"],"Resource":"arn:aws:kms:*:111122223333:key/*"}}"#;
    iam.put_policy(&root, EntityKind::User, "alice", "use-keys", doc)
        .unwrap();
    assert_eq!(
        iam.get_policy(&root, EntityKind::User, "alice", "use-keys")
            .unwrap(),
        doc
    );
    assert_eq!(
        iam.list_policies(&root, EntityKind::User, "alice").unwrap(),
        vec!["use-keys"]
    );
    let e = iam
        .put_policy(
            &root,
            EntityKind::User,
            "alice",
            "bad",
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}}"#,
        )
        .unwrap_err();
    assert_eq!(e.code(), "MalformedPolicyDocument");
    assert!(e.message().contains("has a Principal"));
    let alice = Principal::parse(&u.arn).unwrap();
    assert_eq!(iam.identity_policies(&alice).unwrap().len(), 1);
    assert!(iam.identity_policies(&root).unwrap().is_empty());

    let e = iam.delete(&root, EntityKind::User, "alice").unwrap_err();
    assert_eq!(e.code(), "DeleteConflict");
    iam.delete_policy(&root, EntityKind::User, "alice", "use-keys")
        .unwrap();
    assert_eq!(
        iam.delete_policy(&root, EntityKind::User, "alice", "use-keys")
            .unwrap_err()
            .code(),
        "NoSuchEntity"
    );
    iam.delete(&root, EntityKind::User, "alice").unwrap();
    let e = iam
        .get_entity(&root, EntityKind::User, "alice")
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        ("NoSuchEntity", "The user with name alice cannot be found.")
    );
    assert_eq!(iam.list_entities(&root, EntityKind::Role).unwrap().len(), 1);
}

#[test]
fn iam_actions_need_identity_policies_except_for_root() {
    let (_d, iam) = iam();
    let root = Principal::root(ACCT);
    iam.create(&root, &NewEntity::user("admin"), now()).unwrap();
    iam.create(&root, &NewEntity::user("bob"), now()).unwrap();
    let bob = Principal::parse("arn:aws:iam::111122223333:user/bob").unwrap();
    let e = iam
        .create(&bob, &NewEntity::user("carol"), now())
        .unwrap_err();
    assert_eq!(e.code(), "AccessDenied");
    assert_eq!(
        e.message(),
        "User: arn:aws:iam::111122223333:user/bob is not authorized to perform: iam:CreateUser on resource: arn:aws:iam::111122223333:user/carol because no identity-based policy allows the iam:CreateUser action"
    );
    iam.put_policy(
        &root,
        EntityKind::User,
        "admin",
        "iam",
        r#"{"Statement":{"Effect":"Allow","Action":"iam:*","Resource":"*"}}"#,
    )
    .unwrap();
    let admin = Principal::parse("arn:aws:iam::111122223333:user/admin").unwrap();
    iam.create(&admin, &NewEntity::user("carol"), now())
        .unwrap();
    // Another account's principals live apart.
    let other_root = Principal::root("444455556666");
    assert!(
        iam.list_entities(&other_root, EntityKind::User)
            .unwrap()
            .is_empty()
    );
    iam.create(&other_root, &NewEntity::user("bob"), now())
        .unwrap();
    assert_eq!(iam.list_entities(&root, EntityKind::User).unwrap().len(), 3);
}
