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

#[test]
fn access_keys_are_made_listed_updated_and_deleted_with_sealed_secrets() {
    use access_keys::KeyStatus;
    let (d, iam) = iam();
    let root = Principal::root(ACCT);
    iam.create(&root, &NewEntity::user("alice"), now()).unwrap();
    let k = iam.create_access_key(&root, Some("alice"), now()).unwrap();
    let id = k.key.access_key_id.clone();
    assert!(id.starts_with("AKIA") && id.len() == 20, "{id}");
    assert!(
        id[4..]
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    );
    assert_eq!(k.secret.len(), 40);
    assert_eq!(k.key.user_name.as_deref(), Some("alice"));
    // The secret is not in iam.db in the clear, and opens again from it.
    let secret = k.secret.expose().to_vec();
    let db = std::fs::read(d.path().join("iam.db")).unwrap();
    let wal = std::fs::read(d.path().join("iam.db-wal")).unwrap_or_default();
    for file in [&db, &wal] {
        assert!(
            !file.windows(40).any(|w| w == &secret[..]),
            "secret in clear"
        );
    }
    let again = iam.access_key_secret(&id).unwrap().unwrap();
    assert_eq!(again.secret.expose(), &secret[..]);
    // A second key, then the quota.
    iam.create_access_key(&root, Some("alice"), now()).unwrap();
    let e = iam
        .create_access_key(&root, Some("alice"), now())
        .unwrap_err();
    assert_eq!(e.code(), "LimitExceeded");
    assert_eq!(iam.list_access_keys(&root, Some("alice")).unwrap().len(), 2);
    // The user acts on its own keys without naming itself, once allowed to.
    let alice = Principal::parse("arn:aws:iam::111122223333:user/alice").unwrap();
    let e = iam.list_access_keys(&alice, None).unwrap_err();
    assert_eq!(e.code(), "AccessDenied");
    iam.put_policy(&root, EntityKind::User, "alice", "keys", r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:*AccessKey*","Resource":"*"}]}"#).unwrap();
    assert_eq!(iam.list_access_keys(&alice, None).unwrap().len(), 2);
    // A user cannot touch the root's keys.
    let rk = iam.create_access_key(&root, None, now()).unwrap();
    assert_eq!(rk.key.user_name, None);
    let e = iam
        .update_access_key(&alice, None, &rk.key.access_key_id, KeyStatus::Inactive)
        .unwrap_err();
    assert_eq!(
        e.code(),
        "NoSuchEntity",
        "alice's own keys do not include the root's"
    );
    iam.update_access_key(&root, Some("alice"), &id, KeyStatus::Inactive)
        .unwrap();
    assert_eq!(
        iam.access_key_secret(&id).unwrap().unwrap().key.status,
        KeyStatus::Inactive
    );
    assert_eq!(
        KeyStatus::parse("Sleeping").unwrap_err().code(),
        "ValidationError"
    );
    // Last use.
    assert!(
        iam.access_key_last_used(&root, &id)
            .unwrap()
            .last_used
            .is_none()
    );
    iam.record_access_key_use(&id, "kms", "us-east-1", now())
        .unwrap();
    let used = iam
        .access_key_last_used(&root, &id)
        .unwrap()
        .last_used
        .unwrap();
    assert_eq!(
        (used.service.as_str(), used.region.as_str()),
        ("kms", "us-east-1")
    );
    // A user with keys cannot be deleted; without, it can.
    iam.delete_policy(&root, EntityKind::User, "alice", "keys")
        .unwrap();
    assert_eq!(
        iam.delete(&root, EntityKind::User, "alice")
            .unwrap_err()
            .code(),
        "DeleteConflict"
    );
    for k in iam.list_access_keys(&root, Some("alice")).unwrap() {
        iam.delete_access_key(&root, Some("alice"), &k.access_key_id)
            .unwrap();
    }
    assert_eq!(
        iam.delete_access_key(&root, Some("alice"), &id)
            .unwrap_err()
            .code(),
        "NoSuchEntity"
    );
    iam.delete(&root, EntityKind::User, "alice").unwrap();
    assert!(iam.access_key_secret(&id).unwrap().is_none());
}
