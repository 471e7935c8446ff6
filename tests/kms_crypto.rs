//! Encrypt, Decrypt, ReEncrypt, GenerateDataKey(WithoutPlaintext), GenerateRandom:
//! validation, encryption context, key binding, tampering; property tests.

mod common;
use common::*;
use ebsim::ErrorKind as K;
use ebsim::kms::api::*;
use proptest::prelude::*;

fn dec_req(blob: &Blob, c: &[(&str, &str)]) -> DecryptRequest {
    DecryptRequest {
        ciphertext_blob: blob.clone(),
        encryption_context: ctx(c),
        ..Default::default()
    }
}

#[test]
fn encrypt_validates_plaintext_algorithm_and_dry_run() {
    let env = Env::new();
    let k = env.create_key();
    let m = expect_err(env.encrypt(&k.key_id, &[]), K::Validation);
    assert_eq!(
        m,
        "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: Member must have length greater than or equal to 1"
    );
    let m = expect_err(env.encrypt(&k.key_id, &[0; 4097]), K::Validation);
    assert_eq!(
        m,
        "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: Member must have length less than or equal to 4096"
    );
    let r = env.encrypt(&k.key_id, &[7; 4096]).unwrap();
    assert!(r.ciphertext_blob.as_slice().len() <= 6144);
    assert_eq!(r.encryption_algorithm, "SYMMETRIC_DEFAULT");
    let req = |alg: &str, dry: bool| EncryptRequest {
        key_id: k.key_id.clone(),
        plaintext: Blob::new(b"x".to_vec()),
        encryption_algorithm: Some(alg.into()),
        dry_run: dry,
        ..Default::default()
    };
    expect_err(
        env.kms.encrypt(&env.me, req("RSAES_OAEP_SHA_256", false)),
        K::InvalidKeyUsage,
    );
    expect_err(env.kms.encrypt(&env.me, req("ROT13", false)), K::Validation);
    let m = expect_err(
        env.kms.encrypt(&env.me, req("SYMMETRIC_DEFAULT", true)),
        K::DryRunOperation,
    );
    assert_eq!(
        m,
        "The request would have succeeded, but the DryRun option is set."
    );
    let mut too_many = req("SYMMETRIC_DEFAULT", false);
    too_many.grant_tokens = vec!["t".into(); 11];
    expect_err(env.kms.encrypt(&env.me, too_many), K::Validation);
}

#[test]
fn decrypt_needs_no_key_id_and_rejects_the_wrong_one() {
    let env = Env::new();
    let a = env.create_key();
    let b = env.create_key();
    let blob = env.encrypt(&a.key_id, b"secret").unwrap().ciphertext_blob;
    let r = env.decrypt(blob.as_slice()).unwrap();
    assert_eq!(r.plaintext.as_slice(), b"secret");
    assert_eq!(r.key_id, a.arn);
    assert_eq!(Some(r.key_material_id), a.current_key_material_id);
    let with = |id: &str| {
        env.kms.decrypt(
            &env.me,
            DecryptRequest {
                key_id: Some(id.into()),
                ..dec_req(&blob, &[])
            },
        )
    };
    with(&a.arn).unwrap();
    let m = expect_err(with(&b.key_id), K::IncorrectKey);
    assert_eq!(
        m,
        "The key ID in the request does not identify a CMK that can perform this operation."
    );
    expect_err(with("alias/nonexistent"), K::NotFound);
}

#[test]
fn decrypt_rejects_tampering_and_garbage() {
    let env = Env::new();
    let k = env.create_key();
    let blob = env.encrypt(&k.key_id, b"secret").unwrap().ciphertext_blob;
    for i in [0, 17, 20, 21, 40, blob.as_slice().len() - 1] {
        let mut t = blob.as_slice().to_vec();
        t[i] ^= 0x80;
        let r = env.decrypt(&t);
        assert!(r.is_err(), "byte {i}");
        let kind = r.unwrap_err().kind();
        // Byte 1..17 is the key id: a flipped id names no key → AccessDenied, as AWS.
        assert!(
            matches!(kind, K::InvalidCiphertext | K::AccessDenied),
            "byte {i}: {kind:?}"
        );
    }
    expect_err(
        env.decrypt(b"not a ciphertext at all, but long enough to parse maybe"),
        K::InvalidCiphertext,
    );
    expect_err(
        env.decrypt(&blob.as_slice()[..blob.as_slice().len() - 1]),
        K::InvalidCiphertext,
    );
    expect_err(env.decrypt(&[]), K::Validation);
    expect_err(env.decrypt(&[1; 6145]), K::Validation);
}

#[test]
fn encryption_context_must_match_exactly_in_any_order() {
    let env = Env::new();
    let k = env.create_key();
    let blob = env
        .kms
        .encrypt(
            &env.me,
            EncryptRequest {
                key_id: k.key_id.clone(),
                plaintext: Blob::new(b"p".to_vec()),
                encryption_context: ctx(&[("Department", "IT"), ("Project", "Alpha")]),
                ..Default::default()
            },
        )
        .unwrap()
        .ciphertext_blob;
    env.kms
        .decrypt(
            &env.me,
            dec_req(&blob, &[("Project", "Alpha"), ("Department", "IT")]),
        )
        .unwrap();
    for bad in [
        vec![],
        vec![("Department", "IT")],
        vec![("Department", "it"), ("Project", "Alpha")],
        vec![("department", "IT"), ("Project", "Alpha")],
        vec![("Department", "IT"), ("Project", "Alpha"), ("Extra", "1")],
    ] {
        let m = expect_err(
            env.kms.decrypt(&env.me, dec_req(&blob, &bad)),
            K::InvalidCiphertext,
        );
        assert_eq!(
            m, "",
            "AWS sends InvalidCiphertextException without a message"
        );
    }
}

#[test]
fn re_encrypt_moves_ciphertext_between_keys_and_contexts() {
    let env = Env::new();
    let a = env.create_key();
    let b = env.create_key();
    let blob = env
        .kms
        .encrypt(
            &env.me,
            EncryptRequest {
                key_id: a.key_id.clone(),
                plaintext: Blob::new(b"move me".to_vec()),
                encryption_context: ctx(&[("from", "a")]),
                ..Default::default()
            },
        )
        .unwrap()
        .ciphertext_blob;
    let req = |src_ctx: &[(&str, &str)], src_key: Option<&str>, dest: &str| ReEncryptRequest {
        ciphertext_blob: blob.clone(),
        source_encryption_context: ctx(src_ctx),
        source_key_id: src_key.map(String::from),
        destination_key_id: dest.into(),
        destination_encryption_context: ctx(&[("to", "b")]),
        ..Default::default()
    };
    let r = env
        .kms
        .re_encrypt(&env.me, req(&[("from", "a")], None, &b.key_id))
        .unwrap();
    assert_eq!(
        (r.source_key_id.as_str(), r.key_id.as_str()),
        (a.arn.as_str(), b.arn.as_str())
    );
    let back = env
        .kms
        .decrypt(&env.me, dec_req(&r.ciphertext_blob, &[("to", "b")]))
        .unwrap();
    assert_eq!(back.plaintext.as_slice(), b"move me");
    assert_eq!(back.key_id, b.arn);
    expect_err(
        env.kms.re_encrypt(&env.me, req(&[], None, &b.key_id)),
        K::InvalidCiphertext,
    );
    expect_err(
        env.kms
            .re_encrypt(&env.me, req(&[("from", "a")], Some(&b.key_id), &b.key_id)),
        K::IncorrectKey,
    );
    env.kms.disable_key(&env.me, env.key(&b.key_id)).unwrap();
    expect_err(
        env.kms
            .re_encrypt(&env.me, req(&[("from", "a")], None, &b.key_id)),
        K::Disabled,
    );
}

#[test]
fn generate_data_key_sizes_and_round_trip_with_context() {
    let env = Env::new();
    let k = env.create_key();
    let c = ctx(&[("aws:ebs:id", "vol-0abc")]);
    let req = |n: Option<u32>, spec: Option<&str>| GenerateDataKeyRequest {
        key_id: k.key_id.clone(),
        encryption_context: c.clone(),
        number_of_bytes: n,
        key_spec: spec.map(String::from),
        ..Default::default()
    };
    for (n, spec, len) in [
        (None, Some("AES_256"), 32),
        (None, Some("AES_128"), 16),
        (Some(64), None, 64),
        (Some(1), None, 1),
        (Some(1024), None, 1024),
    ] {
        let r = env.kms.generate_data_key(&env.me, req(n, spec)).unwrap();
        assert_eq!(r.plaintext.as_slice().len(), len);
        assert_eq!(r.key_id, k.arn);
        // The data key was bound to the context: it decrypts only with it.
        let back = env
            .kms
            .decrypt(
                &env.me,
                DecryptRequest {
                    ciphertext_blob: r.ciphertext_blob.clone(),
                    encryption_context: c.clone(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(back.plaintext, r.plaintext);
        expect_err(
            env.decrypt(r.ciphertext_blob.as_slice()),
            K::InvalidCiphertext,
        );
    }
    let w = env
        .kms
        .generate_data_key_without_plaintext(&env.me, req(Some(64), None))
        .unwrap();
    let back = env
        .kms
        .decrypt(
            &env.me,
            DecryptRequest {
                ciphertext_blob: w.ciphertext_blob,
                encryption_context: c.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(back.plaintext.as_slice().len(), 64);
    let m = expect_err(
        env.kms.generate_data_key(&env.me, req(None, None)),
        K::Validation,
    );
    assert_eq!(m, "Please specify either number of bytes or key spec.");
    expect_err(
        env.kms
            .generate_data_key(&env.me, req(Some(32), Some("AES_256"))),
        K::Validation,
    );
    expect_err(
        env.kms.generate_data_key(&env.me, req(Some(0), None)),
        K::Validation,
    );
    let m = expect_err(
        env.kms.generate_data_key(&env.me, req(Some(1025), None)),
        K::Validation,
    );
    assert_eq!(
        m,
        "1 validation error detected: Value '1025' at 'numberOfBytes' failed to satisfy constraint: Member must have value less than or equal to 1024"
    );
    expect_err(
        env.kms
            .generate_data_key(&env.me, req(None, Some("AES_512"))),
        K::Validation,
    );
    let mut dry = req(Some(32), None);
    dry.dry_run = true;
    expect_err(
        env.kms.generate_data_key_without_plaintext(&env.me, dry),
        K::DryRunOperation,
    );
}

#[test]
fn generate_random_bounds() {
    let env = Env::new();
    let r = |n: Option<u32>| {
        env.kms.generate_random(
            &env.me,
            GenerateRandomRequest {
                number_of_bytes: n,
                custom_key_store_id: None,
            },
        )
    };
    assert_eq!(r(Some(1)).unwrap().plaintext.as_slice().len(), 1);
    let a = r(Some(1024)).unwrap();
    assert_eq!(a.plaintext.as_slice().len(), 1024);
    assert_ne!(a.plaintext, r(Some(1024)).unwrap().plaintext);
    expect_err(r(Some(0)), K::Validation);
    expect_err(r(Some(1025)), K::Validation);
    expect_err(r(None), K::Validation);
}

#[test]
fn a_ciphertext_is_bound_to_its_key_even_under_the_same_key_id_bytes() {
    // Two data roots never share material: a blob from one never opens in the other,
    // even for a key with the same alias.
    let one = Env::new();
    let two = Env::new();
    let k = one.create_key();
    let blob = one.encrypt(&k.key_id, b"x").unwrap().ciphertext_blob;
    expect_err(two.decrypt(blob.as_slice()), K::AccessDenied);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn encrypt_decrypt_round_trips_any_plaintext_and_context(
        plaintext in proptest::collection::vec(any::<u8>(), 1..=4096),
        pairs in proptest::collection::btree_map("[a-zA-Z0-9:_-]{1,12}", ".{0,16}", 0..6),
    ) {
        let env = Env::new();
        let k = env.create_key();
        let c: ebsim::kms::context::EncryptionContext = pairs.clone();
        let blob = env.kms.encrypt(&env.me, EncryptRequest {
            key_id: k.key_id.clone(), plaintext: Blob::new(plaintext.clone()),
            encryption_context: c.clone(), ..Default::default()
        }).unwrap().ciphertext_blob;
        // Insertion order of the pairs never matters.
        let reversed: ebsim::kms::context::EncryptionContext =
            pairs.iter().rev().map(|(k, v)| (k.clone(), v.clone())).collect();
        let back = env.kms.decrypt(&env.me, DecryptRequest {
            ciphertext_blob: blob.clone(), encryption_context: reversed, ..Default::default()
        }).unwrap();
        prop_assert_eq!(back.plaintext.as_slice(), &plaintext[..]);
        // Any change to the context is refused.
        let mut changed = c.clone();
        changed.insert("extra-key".into(), "v".into());
        let r = env.kms.decrypt(&env.me, DecryptRequest {
            ciphertext_blob: blob.clone(), encryption_context: changed, ..Default::default()
        });
        prop_assert_eq!(r.unwrap_err().kind(), K::InvalidCiphertext);
        if let Some((first, _)) = c.iter().next() {
            let mut dropped = c.clone();
            dropped.remove(first);
            let r = env.kms.decrypt(&env.me, DecryptRequest {
                ciphertext_blob: blob, encryption_context: dropped, ..Default::default()
            });
            prop_assert_eq!(r.unwrap_err().kind(), K::InvalidCiphertext);
        }
    }

    #[test]
    fn any_single_bit_flip_is_refused(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let env = Env::new();
        let k = env.create_key();
        let blob = env.encrypt(&k.key_id, b"integrity").unwrap().ciphertext_blob;
        let mut t = blob.as_slice().to_vec();
        let i = pos.index(t.len());
        t[i] ^= 1 << bit;
        prop_assert!(env.decrypt(&t).is_err());
    }
}
