//! The audit log (CloudTrail shape, LookupEvents), request quotas with retry, and
//! the promise that no key or plaintext handed out ever lands under the data root.

mod common;
use base64::Engine;
use common::*;
use ebsim::ErrorKind as K;
use ebsim::kms::Kms;
use ebsim::kms::api::*;
use ebsim::kms::audit::{LookupAttribute, LookupQuery, lookup};
use ebsim::kms::quota::Backoff;
use serde_json::Value;

fn events(env: &Env, attr: Option<(&str, &str)>) -> Vec<Value> {
    let q = LookupQuery {
        attributes: attr
            .map(|(k, v)| {
                vec![LookupAttribute {
                    attribute_key: k.into(),
                    attribute_value: v.into(),
                }]
            })
            .unwrap_or_default(),
        ..Default::default()
    };
    lookup(env.kms.audit_log_path(), &q).unwrap()["Events"]
        .as_array()
        .unwrap()
        .clone()
}

fn record(ev: &Value) -> Value {
    serde_json::from_str(ev["CloudTrailEvent"].as_str().unwrap()).unwrap()
}

#[test]
fn every_call_is_audited_in_cloudtrail_shape() {
    let env = Env::new();
    let k = env.create_key();
    let secret = b"the plaintext must never be logged";
    env.kms
        .encrypt(
            &env.me,
            EncryptRequest {
                key_id: k.key_id.clone(),
                plaintext: Blob::new(secret.to_vec()),
                encryption_context: ctx(&[("Department", "IT")]),
                ..Default::default()
            },
        )
        .unwrap();
    env.kms.disable_key(&env.me, env.key(&k.key_id)).unwrap();
    let _ = env.encrypt(&k.key_id, secret);
    let _ = env.describe("alias/none");

    let all = events(&env, None);
    assert_eq!(
        all.len(),
        5,
        "CreateKey, Encrypt, DisableKey, Encrypt (failed), DescribeKey (failed)"
    );
    let names: Vec<&str> = all
        .iter()
        .map(|e| e["EventName"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "DescribeKey",
            "Encrypt",
            "DisableKey",
            "Encrypt",
            "CreateKey"
        ],
        "newest first"
    );

    let ok = record(&all[3]);
    assert_eq!(ok["eventSource"], "kms.amazonaws.com");
    assert_eq!(ok["awsRegion"], "us-east-1");
    assert_eq!(ok["eventTime"], "2026-01-01T00:00:00Z");
    assert_eq!(ok["readOnly"], true);
    assert_eq!(ok["userIdentity"]["type"], "Root");
    assert_eq!(
        ok["userIdentity"]["arn"],
        format!("arn:aws:iam::{ACCOUNT}:root")
    );
    assert_eq!(ok["requestParameters"]["keyId"], k.key_id.as_str());
    assert_eq!(
        ok["requestParameters"]["encryptionContext"]["Department"],
        "IT"
    );
    assert_eq!(ok["responseElements"], Value::Null);
    assert_eq!(ok["resources"][0]["type"], "AWS::KMS::Key");
    assert_eq!(ok["resources"][0]["ARN"], k.arn.as_str());
    assert!(ok.get("errorCode").is_none());

    let failed = record(&all[1]);
    assert_eq!(failed["errorCode"], "DisabledException");
    assert_eq!(failed["errorMessage"], format!("{} is disabled.", k.arn));
    assert_eq!(record(&all[0])["errorCode"], "NotFoundException");

    let created = record(&all[4]);
    assert_eq!(created["readOnly"], false);
    assert_eq!(
        created["responseElements"]["keyMetadata"]["keyId"],
        k.key_id.as_str()
    );

    let log = std::fs::read(env.kms.audit_log_path()).unwrap();
    assert!(!contains(&log, secret));
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
    assert!(!contains(&log, b64.as_bytes()));
}

#[test]
fn lookup_events_filters_pages_and_validates() {
    let mut env = Env::new();
    let a = env.create_key();
    env.advance_days(1);
    let b = env.create_key();
    env.encrypt(&b.key_id, b"x").unwrap();
    assert_eq!(events(&env, Some(("EventName", "CreateKey"))).len(), 2);
    assert_eq!(events(&env, Some(("ResourceName", &a.arn))).len(), 1);
    assert_eq!(
        events(&env, Some(("ResourceType", "AWS::KMS::Key"))).len(),
        3
    );
    assert_eq!(events(&env, Some(("ReadOnly", "true"))).len(), 1);
    assert_eq!(events(&env, Some(("Username", "root"))).len(), 3);
    let path = env.kms.audit_log_path().to_path_buf();
    let day2 = start() + chrono::TimeDelta::hours(12);
    let q = LookupQuery {
        start_time: Some(day2),
        ..Default::default()
    };
    assert_eq!(
        lookup(&path, &q).unwrap()["Events"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let q = LookupQuery {
        end_time: Some(day2),
        ..Default::default()
    };
    assert_eq!(
        lookup(&path, &q).unwrap()["Events"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Paging.
    let q = LookupQuery {
        max_results: Some(2),
        ..Default::default()
    };
    let p1 = lookup(&path, &q).unwrap();
    assert_eq!(p1["Events"].as_array().unwrap().len(), 2);
    let token = p1["NextToken"].as_str().unwrap().to_string();
    let p2 = lookup(
        &path,
        &LookupQuery {
            max_results: Some(2),
            next_token: Some(token),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(p2["Events"].as_array().unwrap().len(), 1);
    assert!(p2.get("NextToken").is_none());
    // Validation.
    let bad = |q: LookupQuery| lookup(&path, &q).unwrap_err().kind();
    let attr = |k: &str| LookupAttribute {
        attribute_key: k.into(),
        attribute_value: "x".into(),
    };
    assert_eq!(
        bad(LookupQuery {
            attributes: vec![attr("Color")],
            ..Default::default()
        }),
        K::Validation
    );
    assert_eq!(
        bad(LookupQuery {
            attributes: vec![attr("EventName"), attr("EventId")],
            ..Default::default()
        }),
        K::Validation
    );
    assert_eq!(
        bad(LookupQuery {
            max_results: Some(51),
            ..Default::default()
        }),
        K::Validation
    );
    assert_eq!(
        bad(LookupQuery {
            start_time: Some(day2),
            end_time: Some(start()),
            ..Default::default()
        }),
        K::Validation
    );
}

#[test]
fn calls_through_a_service_are_marked_in_the_audit_log() {
    let env = Env::new();
    env.kms.aws_managed_key("ebs").unwrap();
    let via = env.me.via("ec2", "us-east-1");
    env.kms
        .generate_data_key_without_plaintext(
            &via,
            GenerateDataKeyRequest {
                key_id: "alias/aws/ebs".into(),
                number_of_bytes: Some(64),
                ..Default::default()
            },
        )
        .unwrap();
    let ev = record(&events(&env, Some(("EventName", "GenerateDataKeyWithoutPlaintext")))[0]);
    assert_eq!(ev["userIdentity"]["invokedBy"], "ec2.amazonaws.com");
    assert_eq!(ev["sourceIPAddress"], "AWS Internal");
    assert_eq!(ev["userAgent"], "AWS Internal");
}

#[test]
fn the_shared_crypto_quota_throttles_and_callers_back_off() {
    let env = Env::new();
    let k = env.create_key();
    let kms = Kms::open_with(&env.root, "us-east-1", ACCOUNT, env.clock.clone(), Some(5)).unwrap();
    let enc = || {
        kms.encrypt(
            &env.me,
            EncryptRequest {
                key_id: k.key_id.clone(),
                plaintext: Blob::new(vec![1]),
                ..Default::default()
            },
        )
    };
    for _ in 0..5 {
        enc().unwrap();
    }
    let m = expect_err(enc(), K::Throttling);
    assert_eq!(
        m,
        "You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls."
    );
    // GenerateRandom shares the quota; management calls do not count.
    expect_err(
        kms.generate_random(
            &env.me,
            GenerateRandomRequest {
                number_of_bytes: Some(8),
                ..Default::default()
            },
        ),
        K::Throttling,
    );
    kms.describe_key(
        &env.me,
        DescribeKeyRequest {
            key_id: k.key_id.clone(),
            ..Default::default()
        },
    )
    .unwrap();
    // Throttled calls are audited with their error code.
    let ev = lookup(kms.audit_log_path(), &LookupQuery::default()).unwrap();
    assert!(
        ev["Events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| record(e)["errorCode"] == "ThrottlingException")
    );
    // Backoff with jitter gets through once tokens refill (5/s → one every 200 ms).
    let backoff = Backoff {
        max_attempts: 10,
        base: std::time::Duration::from_millis(100),
        cap: std::time::Duration::from_millis(400),
    };
    backoff.run(enc).unwrap();
}

#[test]
fn no_key_or_plaintext_handed_out_is_ever_stored_under_the_data_root() {
    let env = Env::new();
    let mut handed_out: Vec<Vec<u8>> = Vec::new();
    let c = ctx(&[("aws:ebs:id", "vol-0123456789abcdef0")]);
    for i in 0..4 {
        let k = env.create_key();
        env.kms
            .enable_key_rotation(
                &env.me,
                EnableKeyRotationRequest {
                    key_id: k.key_id.clone(),
                    rotation_period_in_days: None,
                },
            )
            .unwrap();
        env.kms
            .rotate_key_on_demand(&env.me, env.key(&k.key_id))
            .unwrap();
        for spec in ["AES_256", "AES_128"] {
            let r = env
                .kms
                .generate_data_key(
                    &env.me,
                    GenerateDataKeyRequest {
                        key_id: k.key_id.clone(),
                        key_spec: Some(spec.into()),
                        encryption_context: c.clone(),
                        ..Default::default()
                    },
                )
                .unwrap();
            handed_out.push(r.plaintext.as_slice().to_vec());
            // And the same data key decrypted back out.
            let d = env
                .kms
                .decrypt(
                    &env.me,
                    DecryptRequest {
                        ciphertext_blob: r.ciphertext_blob,
                        encryption_context: c.clone(),
                        ..Default::default()
                    },
                )
                .unwrap();
            handed_out.push(d.plaintext.as_slice().to_vec());
        }
        let r = env
            .kms
            .generate_data_key(
                &env.me,
                GenerateDataKeyRequest {
                    key_id: k.key_id.clone(),
                    number_of_bytes: Some(64),
                    ..Default::default()
                },
            )
            .unwrap();
        handed_out.push(r.plaintext.as_slice().to_vec());
        let w = env
            .kms
            .generate_data_key_without_plaintext(
                &env.me,
                GenerateDataKeyRequest {
                    key_id: k.key_id.clone(),
                    number_of_bytes: Some(64),
                    ..Default::default()
                },
            )
            .unwrap();
        let d = env
            .kms
            .decrypt(
                &env.me,
                DecryptRequest {
                    ciphertext_blob: w.ciphertext_blob,
                    ..Default::default()
                },
            )
            .unwrap();
        handed_out.push(d.plaintext.as_slice().to_vec());
        let p = ebsim::crypto::random_bytes(48 + i);
        env.encrypt(&k.key_id, &p).unwrap();
        handed_out.push(p);
        let g = env
            .kms
            .generate_random(
                &env.me,
                GenerateRandomRequest {
                    number_of_bytes: Some(32),
                    ..Default::default()
                },
            )
            .unwrap();
        handed_out.push(g.plaintext.as_slice().to_vec());
    }
    let scan = |when: &str| {
        let files = all_files(env.dir.path());
        assert!(files.iter().any(|(p, _)| p.ends_with("kms.db")));
        for (path, bytes) in &files {
            for secret in &handed_out {
                let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
                assert!(
                    !contains(bytes, secret),
                    "{when}: a handed-out secret is in {}",
                    path.display()
                );
                assert!(
                    !contains(bytes, b64.as_bytes()),
                    "{when}: a handed-out secret (base64) is in {}",
                    path.display()
                );
            }
        }
    };
    scan("while open");
    drop(env.kms);
    // Dropping moves the WAL into the database file; scan again.
    let files_after = all_files(env.dir.path());
    for (path, bytes) in &files_after {
        for secret in &handed_out {
            assert!(
                !contains(bytes, secret),
                "after close: a handed-out secret is in {}",
                path.display()
            );
        }
    }
}

#[test]
fn data_root_files_are_private() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    env.create_key();
    for (path, _) in all_files(env.dir.path()) {
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", path.display());
    }
}

#[test]
fn lookup_orders_by_event_time_even_when_the_clock_moved_back() {
    let mut env = Env::new();
    env.advance_days(10);
    env.create_key(); // logged at day 10
    env.clock.set(start());
    let k = env.create_key(); // logged later, but at day 0
    let all = events(&env, Some(("EventName", "CreateKey")));
    let times: Vec<&str> = all
        .iter()
        .map(|e| e["EventTime"].as_str().unwrap())
        .collect();
    assert_eq!(
        times,
        [
            "2026-01-11T00:00:00.000000+00:00",
            "2026-01-01T00:00:00.000000+00:00"
        ]
    );
    assert_eq!(record(&all[1])["resources"][0]["ARN"], k.arn.as_str());
}
