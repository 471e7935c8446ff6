//! Everything the clock drives: automatic rotation, on-demand rotation limits,
//! deletion windows and real deletion.

mod common;
use common::*;
use ebsim::ErrorKind as K;
use ebsim::kms::api::*;

fn rotations(env: &Env, key_id: &str, all: bool) -> Vec<RotationsListEntry> {
    env.kms
        .list_key_rotations(
            &env.me,
            ListKeyRotationsRequest {
                key_id: key_id.into(),
                include_key_material: all.then(|| "ALL_KEY_MATERIAL".into()),
                ..Default::default()
            },
        )
        .unwrap()
        .rotations
}

fn enable_rotation(env: &Env, key_id: &str, days: Option<u32>) -> Result<(), ebsim::Error> {
    env.kms.enable_key_rotation(
        &env.me,
        EnableKeyRotationRequest {
            key_id: key_id.into(),
            rotation_period_in_days: days,
        },
    )
}

#[test]
fn a_year_passes_and_the_key_rotates_keeping_old_ciphertext_readable() {
    let mut env = Env::new();
    let k = env.create_key();
    let old = env
        .encrypt(&k.key_id, b"written in 2026")
        .unwrap()
        .ciphertext_blob;
    let status = env
        .kms
        .get_key_rotation_status(&env.me, env.key(&k.key_id))
        .unwrap();
    assert!(!status.key_rotation_enabled);
    assert_eq!(status.next_rotation_date, None);
    enable_rotation(&env, &k.key_id, None).unwrap();
    let status = env
        .kms
        .get_key_rotation_status(&env.me, env.key(&k.key_id))
        .unwrap();
    assert!(status.key_rotation_enabled);
    assert_eq!(status.rotation_period_in_days, Some(365));
    let due = start() + chrono::TimeDelta::days(365);
    assert_eq!(status.next_rotation_date.map(|t| t.0), Some(due));

    env.advance_days(364);
    assert!(rotations(&env, &k.key_id, false).is_empty(), "not yet due");
    env.advance_days(1);
    let r = rotations(&env, &k.key_id, false);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].rotation_type.as_deref(), Some("AUTOMATIC"));
    assert_eq!(r[0].rotation_date.map(|t| t.0), Some(due));
    assert_eq!(r[0].key_material_state, "CURRENT");
    // New encryptions use the new material; the old ciphertext still decrypts.
    let new = env
        .encrypt(&k.key_id, b"written in 2027")
        .unwrap()
        .ciphertext_blob;
    let m_old = env.decrypt(old.as_slice()).unwrap();
    let m_new = env.decrypt(new.as_slice()).unwrap();
    assert_eq!(m_old.plaintext.as_slice(), b"written in 2026");
    assert_ne!(m_old.key_material_id, m_new.key_material_id);
    assert_eq!(
        Some(&m_new.key_material_id),
        env.describe(&k.key_id)
            .unwrap()
            .current_key_material_id
            .as_ref()
    );
    // Three more years: three more rotations, each dated when it fell due.
    env.advance_days(3 * 365);
    let r = rotations(&env, &k.key_id, true);
    assert_eq!(r.len(), 5, "the original material plus four rotations");
    assert_eq!(
        r.iter()
            .filter(|e| e.key_material_state == "CURRENT")
            .count(),
        1
    );
    assert_eq!(
        r[0].rotation_type, None,
        "the original material has no rotation"
    );
    env.decrypt(old.as_slice()).unwrap();
    env.decrypt(new.as_slice()).unwrap();
    let next = env
        .kms
        .get_key_rotation_status(&env.me, env.key(&k.key_id))
        .unwrap()
        .next_rotation_date
        .unwrap()
        .0;
    assert_eq!(next, start() + chrono::TimeDelta::days(5 * 365));
    // The audit log shows the service's RotateKey events.
    let q = ebsim::kms::audit::LookupQuery {
        attributes: vec![ebsim::kms::audit::LookupAttribute {
            attribute_key: "EventName".into(),
            attribute_value: "RotateKey".into(),
        }],
        ..Default::default()
    };
    let ev = ebsim::kms::audit::lookup(env.kms.audit_log_path(), &q).unwrap();
    assert_eq!(ev["Events"].as_array().unwrap().len(), 4);
}

#[test]
fn rotation_period_bounds_and_custom_period() {
    let mut env = Env::new();
    let k = env.create_key();
    let m = expect_err(enable_rotation(&env, &k.key_id, Some(89)), K::Validation);
    assert_eq!(
        m,
        "1 validation error detected: Value '89' at 'rotationPeriodInDays' failed to satisfy constraint: Member must have value greater than or equal to 90"
    );
    expect_err(enable_rotation(&env, &k.key_id, Some(2561)), K::Validation);
    enable_rotation(&env, &k.key_id, Some(90)).unwrap();
    env.advance_days(90);
    assert_eq!(rotations(&env, &k.key_id, false).len(), 1);
    env.kms
        .disable_key_rotation(&env.me, env.key(&k.key_id))
        .unwrap();
    env.advance_days(400);
    assert_eq!(
        rotations(&env, &k.key_id, false).len(),
        1,
        "no rotation while disabled"
    );
    let s = env
        .kms
        .get_key_rotation_status(&env.me, env.key(&k.key_id))
        .unwrap();
    assert!(!s.key_rotation_enabled && s.rotation_period_in_days.is_none());
}

#[test]
fn disabled_keys_do_not_rotate_and_catch_up_when_enabled() {
    let mut env = Env::new();
    let k = env.create_key();
    enable_rotation(&env, &k.key_id, Some(90)).unwrap();
    env.kms.disable_key(&env.me, env.key(&k.key_id)).unwrap();
    let m = expect_err(enable_rotation(&env, &k.key_id, Some(100)), K::Disabled);
    assert_eq!(m, format!("{} is disabled.", k.arn));
    expect_err(
        env.kms.rotate_key_on_demand(&env.me, env.key(&k.key_id)),
        K::Disabled,
    );
    env.advance_days(200);
    assert!(rotations(&env, &k.key_id, false).is_empty());
    env.kms.enable_key(&env.me, env.key(&k.key_id)).unwrap();
    let r = rotations(&env, &k.key_id, false);
    assert_eq!(
        r.len(),
        1,
        "material older than the period rotates at once on enable"
    );
    assert_eq!(
        r[0].rotation_date.map(|t| t.0),
        Some(start() + chrono::TimeDelta::days(200))
    );
}

#[test]
fn on_demand_rotation_limit_and_conflict() {
    let mut env = Env::new();
    let k = env.create_key();
    let old = env.encrypt(&k.key_id, b"v0").unwrap().ciphertext_blob;
    for _ in 0..ebsim::kms::ON_DEMAND_ROTATION_LIMIT {
        let r = env
            .kms
            .rotate_key_on_demand(&env.me, env.key(&k.key_id))
            .unwrap();
        assert_eq!(r.key_id, k.arn);
    }
    let m = expect_err(
        env.kms.rotate_key_on_demand(&env.me, env.key(&k.key_id)),
        K::LimitExceeded,
    );
    assert!(m.contains("Limit: 25"), "{m}");
    let r = rotations(&env, &k.key_id, false);
    assert_eq!(r.len(), 25);
    assert!(
        r.iter()
            .all(|e| e.rotation_type.as_deref() == Some("ON_DEMAND"))
    );
    assert_eq!(
        env.decrypt(old.as_slice()).unwrap().plaintext.as_slice(),
        b"v0"
    );
    // Paging through the rotations.
    let page = env
        .kms
        .list_key_rotations(
            &env.me,
            ListKeyRotationsRequest {
                key_id: k.key_id.clone(),
                limit: Some(10),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!((page.rotations.len(), page.truncated), (10, true));
    // Conflict: an automatic rotation due within 20 minutes.
    let k2 = env.create_key();
    enable_rotation(&env, &k2.key_id, Some(90)).unwrap();
    env.clock
        .advance(chrono::TimeDelta::days(90) - chrono::TimeDelta::minutes(10));
    expect_err(
        env.kms.rotate_key_on_demand(&env.me, env.key(&k2.key_id)),
        K::Conflict,
    );
    env.advance_days(1);
    env.kms
        .rotate_key_on_demand(&env.me, env.key(&k2.key_id))
        .unwrap();
}

#[test]
fn deletion_window_then_real_deletion() {
    let mut env = Env::new();
    let k = env.create_key();
    let blob = env.encrypt(&k.key_id, b"doomed").unwrap().ciphertext_blob;
    env.kms
        .create_alias(
            &env.me,
            AliasRequest {
                alias_name: "alias/doomed".into(),
                target_key_id: k.key_id.clone(),
            },
        )
        .unwrap();
    let sched = |days: Option<u32>| {
        env.kms.schedule_key_deletion(
            &env.me,
            ScheduleKeyDeletionRequest {
                key_id: k.key_id.clone(),
                pending_window_in_days: days,
            },
        )
    };
    let m = expect_err(sched(Some(6)), K::Validation);
    assert_eq!(
        m,
        "1 validation error detected: Value '6' at 'pendingWindowInDays' failed to satisfy constraint: Member must have value greater than or equal to 7"
    );
    expect_err(sched(Some(31)), K::Validation);
    let r = sched(None).unwrap();
    assert_eq!(r.pending_window_in_days, 30);
    assert_eq!(r.key_state, "PendingDeletion");
    assert_eq!(r.deletion_date.0, start() + chrono::TimeDelta::days(30));
    let d = env.describe(&k.key_id).unwrap();
    assert_eq!(
        (
            d.key_state.as_str(),
            d.enabled,
            d.pending_deletion_window_in_days
        ),
        ("PendingDeletion", false, Some(30))
    );
    let pending = format!("{} is pending deletion.", k.arn);
    assert_eq!(
        expect_err(env.encrypt(&k.key_id, b"x"), K::KmsInvalidState),
        pending
    );
    assert_eq!(
        expect_err(env.decrypt(blob.as_slice()), K::KmsInvalidState),
        pending
    );
    assert_eq!(
        expect_err(
            env.kms.enable_key(&env.me, env.key(&k.key_id)),
            K::KmsInvalidState
        ),
        pending
    );
    assert_eq!(expect_err(sched(Some(7)), K::KmsInvalidState), pending);
    expect_err(enable_rotation(&env, &k.key_id, None), K::KmsInvalidState);
    // Cancel: the key comes back Disabled, not Enabled.
    let c = env
        .kms
        .cancel_key_deletion(&env.me, env.key(&k.key_id))
        .unwrap();
    assert_eq!(c.key_id, k.arn);
    let d = env.describe(&k.key_id).unwrap();
    assert_eq!((d.key_state.as_str(), d.deletion_date), ("Disabled", None));
    let m = expect_err(
        env.kms.cancel_key_deletion(&env.me, env.key(&k.key_id)),
        K::KmsInvalidState,
    );
    assert_eq!(m, format!("{} is not pending deletion.", k.arn));
    // Schedule again for 7 days and let them pass.
    sched(Some(7)).unwrap();
    env.advance_days(6);
    assert_eq!(
        env.describe(&k.key_id).unwrap().key_state,
        "PendingDeletion"
    );
    env.advance_days(1);
    expect_err(env.describe(&k.key_id), K::NotFound);
    expect_err(env.describe("alias/doomed"), K::NotFound);
    expect_err(env.decrypt(blob.as_slice()), K::AccessDenied);
    let list = env.kms.list_keys(&env.me, ListRequest::default()).unwrap();
    assert!(list.keys.is_empty());
    let aliases = env
        .kms
        .list_aliases(&env.me, ListAliasesRequest::default())
        .unwrap();
    assert!(
        aliases
            .aliases
            .iter()
            .all(|a| a.alias_name != "alias/doomed")
    );
}

#[test]
fn deletion_is_seen_by_a_fresh_process_and_cannot_be_undone() {
    let mut env = Env::new();
    let k = env.create_key();
    let blob = env.encrypt(&k.key_id, b"gone").unwrap().ciphertext_blob;
    env.kms
        .schedule_key_deletion(
            &env.me,
            ScheduleKeyDeletionRequest {
                key_id: k.key_id.clone(),
                pending_window_in_days: Some(7),
            },
        )
        .unwrap();
    env.advance_days(8);
    // Another instance (another process) opened after the window also sees it gone.
    let other = env.region("us-east-1");
    expect_err(
        other.decrypt(
            &env.me,
            DecryptRequest {
                ciphertext_blob: blob.clone(),
                ..Default::default()
            },
        ),
        K::AccessDenied,
    );
    expect_err(
        env.kms.cancel_key_deletion(&env.me, env.key(&k.key_id)),
        K::NotFound,
    );
    // Moving the clock back does not resurrect it.
    env.clock.set(start());
    expect_err(env.decrypt(blob.as_slice()), K::AccessDenied);
}

#[test]
fn due_changes_rolled_back_with_a_failed_call_are_not_logged_twice() {
    let mut env = Env::new();
    let k = env.create_key();
    enable_rotation(&env, &k.key_id, Some(90)).unwrap();
    env.advance_days(90);
    // This call fails (the alias name is reserved) after due rotations are applied in
    // its transaction: the rollback undoes them, and nothing is logged for them.
    let bad = AliasRequest {
        alias_name: "alias/aws/x".into(),
        target_key_id: k.key_id.clone(),
    };
    assert!(env.kms.create_alias(&env.me, bad).is_err());
    let bad = AliasRequest {
        alias_name: "alias/x".into(),
        target_key_id: "alias/not-a-key-id".into(),
    };
    assert!(env.kms.create_alias(&env.me, bad).is_err());
    assert_eq!(rotations(&env, &k.key_id, false).len(), 1);
    let q = ebsim::kms::audit::LookupQuery {
        attributes: vec![ebsim::kms::audit::LookupAttribute {
            attribute_key: "EventName".into(),
            attribute_value: "RotateKey".into(),
        }],
        ..Default::default()
    };
    let ev = ebsim::kms::audit::lookup(env.kms.audit_log_path(), &q).unwrap();
    assert_eq!(
        ev["Events"].as_array().unwrap().len(),
        1,
        "one rotation, logged once"
    );
}
