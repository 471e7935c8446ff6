//! In-process KMS throughput: Encrypt, Decrypt and GenerateDataKey per second
//! (target in shared/PERF.md: ≥ 100k/s). Each call does everything a real call
//! does: key lookup with the cross-process freshness check, authorization, state
//! gate, AES-GCM under a per-message derived key, and one audit record appended
//! to the region's CloudTrail log. Quotas are off (the bucket would cap the rate).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ebsim::clock::Clock;
use ebsim::home::DataRoot;
use ebsim::kms::Kms;
use ebsim::kms::access::Caller;
use ebsim::kms::api::*;
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let root = DataRoot::open(dir.path()).unwrap();
    let kms = Kms::open_with(
        &root,
        "us-east-1",
        "111122223333",
        Clock::system(Default::default()),
        None,
    )
    .unwrap();
    let me = Caller::account_root("111122223333");
    let key = kms
        .create_key(&me, CreateKeyRequest::default())
        .unwrap()
        .key_metadata
        .key_id;
    let ctx: ebsim::kms::context::EncryptionContext = [(
        "aws:ebs:id".to_string(),
        "vol-0123456789abcdef0".to_string(),
    )]
    .into();
    let enc = EncryptRequest {
        key_id: key.clone(),
        plaintext: Blob::new(vec![7u8; 64]),
        encryption_context: ctx.clone(),
        ..Default::default()
    };
    let blob = kms.encrypt(&me, enc.clone()).unwrap().ciphertext_blob;
    let dec = DecryptRequest {
        ciphertext_blob: blob,
        encryption_context: ctx.clone(),
        ..Default::default()
    };
    let gdk = GenerateDataKeyRequest {
        key_id: key,
        number_of_bytes: Some(64),
        encryption_context: ctx,
        ..Default::default()
    };

    let mut g = c.benchmark_group("kms");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encrypt_64B", |b| {
        b.iter(|| black_box(kms.encrypt(&me, enc.clone()).unwrap()))
    });
    g.bench_function("decrypt_64B", |b| {
        b.iter(|| black_box(kms.decrypt(&me, dec.clone()).unwrap()))
    });
    g.bench_function("generate_data_key_64B", |b| {
        b.iter(|| black_box(kms.generate_data_key(&me, gdk.clone()).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
