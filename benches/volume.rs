//! In-process volume I/O through the block API: encrypted against unencrypted images,
//! measured side by side in one run (4 KiB random and 1 MiB sequential, reads and
//! writes, page cache warm). The ratio is what matters; see docs/BENCHMARKS.md.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ebsim::crypto::secret::SecretBytes;
use ebsim::volume::header::{Cipher, Header, ZERO_UNIT_IS_HOLE};
use ebsim::volume::image::{self, Image};
use std::hint::black_box;

const SIZE: u64 = 256 << 20;
const VOL: &str = "vol-0123456789abcdef0";

fn open(dir: &std::path::Path, cipher: Cipher) -> Image {
    let enc = cipher == Cipher::AesXtsPlain64;
    let h = Header {
        sequence: 1,
        incompat_features: ZERO_UNIT_IS_HOLE,
        compat_features: 0,
        size: SIZE,
        cipher,
        created_ms: 0,
        volume_id: VOL.into(),
        region: "us-east-1".into(),
        kms_key_arn: if enc {
            "arn:aws:kms:us-east-1:111122223333:key/k".into()
        } else {
            String::new()
        },
        encryption_context: if enc {
            Header::volume_context(VOL)
        } else {
            String::new()
        },
        source_snapshot_id: String::new(),
        wrapped_key: if enc { vec![1; 100] } else { vec![] },
        rekey: None,
    };
    let path = dir.join(format!("{}.img", cipher.name()));
    let key = SecretBytes::random(64);
    image::create_file(&path, &h, enc.then_some(&key)).unwrap();
    let img = Image::open(&path, VOL, &mut |_h: &Header| Ok(key.duplicate())).unwrap();
    // Fill it, so reads decrypt real data rather than skipping holes.
    let chunk = vec![0x5au8; 4 << 20];
    for off in (0..SIZE).step_by(chunk.len()) {
        img.write(off, &chunk, false).unwrap();
    }
    img
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let images = [
        ("unencrypted", open(dir.path(), Cipher::None)),
        ("encrypted", open(dir.path(), Cipher::AesXtsPlain64)),
    ];
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % (SIZE / 4096)) * 4096
    };
    let mut g = c.benchmark_group("volume_io");
    let mut small = vec![0u8; 4096];
    g.throughput(Throughput::Bytes(4096));
    for (name, img) in &images {
        g.bench_function(format!("{name}/randread_4k"), |b| {
            b.iter(|| img.read(next(), black_box(&mut small)).unwrap())
        });
        g.bench_function(format!("{name}/randwrite_4k"), |b| {
            b.iter(|| img.write(next(), black_box(&small), false).unwrap())
        });
    }
    let mut big = vec![0x33u8; 1 << 20];
    g.throughput(Throughput::Bytes(1 << 20));
    for (name, img) in &images {
        let mut off = 0u64;
        g.bench_function(format!("{name}/seqread_1m"), |b| {
            b.iter(|| {
                img.read(off, black_box(&mut big)).unwrap();
                off = (off + (1 << 20)) % SIZE;
            })
        });
        g.bench_function(format!("{name}/seqwrite_1m"), |b| {
            b.iter(|| {
                img.write(off, black_box(&big), false).unwrap();
                off = (off + (1 << 20)) % SIZE;
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
