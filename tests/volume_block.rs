//! The block API (read / write / trim / write-zeroes / flush / allocation) against a
//! plain in-memory model, written once and run on encrypted and unencrypted images.
// Test data: sizes and offsets are small constants of the test itself.
#![allow(clippy::cast_possible_truncation)]

use ebsim::crypto::secret::SecretBytes;
use ebsim::volume::header::{Cipher, Header, ZERO_UNIT_IS_HOLE};
use ebsim::volume::image::{self, Extent, Image};
use proptest::prelude::*;

const VOL: &str = "vol-0123456789abcdef0";
const SIZE: u64 = 40 * 4096 + 1024 * 1024;

fn make(cipher: Cipher, size: u64) -> (tempfile::TempDir, Image) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.img");
    let enc = cipher == Cipher::AesXtsPlain64;
    let h = Header {
        sequence: 1,
        incompat_features: ZERO_UNIT_IS_HOLE,
        compat_features: 0,
        size,
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
    let key = SecretBytes::random(64);
    image::create_file(&path, &h, enc.then_some(&key)).unwrap();
    let img = Image::open(&path, VOL, &mut |_h: &Header| Ok(key.duplicate())).unwrap();
    (dir, img)
}

#[derive(Debug, Clone)]
enum Op {
    Write(u64, Vec<u8>, bool),
    Read(u64, usize),
    Trim(u64, u64),
    Zero(u64, u64, bool),
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    let off = 0..SIZE;
    prop_oneof![
        4 => (off.clone(), 1usize..20000, any::<u8>(), any::<bool>()).prop_map(|(o, n, b, fua)| {
            let n = n.min((SIZE - o) as usize);
            Op::Write(o, (0..n).map(|i| b.wrapping_add(i as u8)).collect(), fua)
        }),
        // Unit-aligned writes take the path without read-modify-write.
        1 => (0..SIZE / 4096, 1u64..8).prop_map(|(u, n)| {
            let n = n.min(SIZE / 4096 - u);
            Op::Write(u * 4096, vec![(u % 251) as u8 + 1; (n * 4096) as usize], false)
        }),
        4 => (off.clone(), 0usize..30000).prop_map(|(o, n)| Op::Read(o, n.min((SIZE - o) as usize))),
        1 => (off.clone(), 0u64..40000).prop_map(|(o, n)| Op::Trim(o, n.min(SIZE - o))),
        1 => (off, 0u64..40000, any::<bool>()).prop_map(|(o, n, p)| Op::Zero(o, n.min(SIZE - o), p)),
        1 => Just(Op::Flush),
    ]
}

fn run(cipher: Cipher, ops: &[Op]) {
    let (_dir, img) = make(cipher, SIZE);
    let mut model = vec![0u8; SIZE as usize];
    for op in ops {
        match op {
            Op::Write(o, data, fua) => {
                img.write(*o, data, *fua).unwrap();
                model[*o as usize..*o as usize + data.len()].copy_from_slice(data);
            }
            Op::Read(o, n) => {
                let mut got = vec![0xeeu8; *n];
                img.read(*o, &mut got).unwrap();
                assert!(
                    got == model[*o as usize..*o as usize + n],
                    "read {n} at {o} after {ops:?}"
                );
            }
            Op::Trim(o, n) | Op::Zero(o, n, _) => {
                match op {
                    Op::Trim(..) => img.trim(*o, *n).unwrap(),
                    Op::Zero(_, _, punch) => img.write_zeroes(*o, *n, *punch).unwrap(),
                    _ => unreachable!(),
                }
                model[*o as usize..(*o + *n) as usize].fill(0);
            }
            Op::Flush => img.flush().unwrap(),
        }
    }
    let mut all = vec![0u8; SIZE as usize];
    img.read(0, &mut all).unwrap();
    assert!(all == model, "final contents differ");
    // The allocation map covers the volume exactly, and holes read as zeros.
    let map = img.allocation(0, SIZE).unwrap();
    assert_eq!(map.first().map(|e| e.offset), Some(0));
    assert_eq!(map.iter().map(|e| e.length).sum::<u64>(), SIZE);
    for e in map.iter().filter(|e| !e.allocated) {
        assert!(
            model[e.offset as usize..(e.offset + e.length) as usize]
                .iter()
                .all(|&b| b == 0)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn encrypted_volume_behaves_like_memory(ops in prop::collection::vec(op(), 1..40)) {
        run(Cipher::AesXtsPlain64, &ops);
    }

    #[test]
    fn unencrypted_volume_behaves_like_memory(ops in prop::collection::vec(op(), 1..40)) {
        run(Cipher::None, &ops);
    }
}

#[test]
fn out_of_range_requests_name_the_volume_and_offset() {
    for cipher in [Cipher::None, Cipher::AesXtsPlain64] {
        let (_d, img) = make(cipher, 1 << 20);
        let mut buf = [0u8; 10];
        let e = img.read((1 << 20) - 5, &mut buf).unwrap_err();
        assert_eq!(e.kind(), ebsim::ErrorKind::OutOfRange);
        assert_eq!(
            e.message(),
            "vol-0123456789abcdef0: read of 10 bytes at offset 1048571 is past the end of the volume (1048576 bytes)"
        );
        use ebsim::error::Field;
        let fields: Vec<_> = [Field::VolumeId, Field::Offset, Field::Length]
            .iter()
            .map(|f| e.field(*f))
            .collect();
        assert_eq!(
            fields,
            [Some("vol-0123456789abcdef0"), Some("1048571"), Some("10")]
        );
        assert!(img.write(u64::MAX - 2, &buf, false).is_err());
        assert!(img.trim(1 << 20, 1).is_err());
        assert!(img.allocation(0, (1 << 20) + 1).is_err());
        img.read(1 << 20, &mut []).unwrap();
    }
}

#[test]
fn trim_makes_holes_and_writes_allocate() {
    for cipher in [Cipher::None, Cipher::AesXtsPlain64] {
        let (_d, img) = make(cipher, 1 << 20);
        assert_eq!(
            img.allocation(0, 1 << 20).unwrap(),
            vec![Extent {
                offset: 0,
                length: 1 << 20,
                allocated: false
            }]
        );
        img.write(8192, &[1u8; 3 * 4096], false).unwrap();
        img.trim(12288, 4096).unwrap();
        let map = img.allocation(0, 1 << 20).unwrap();
        let allocated: Vec<(u64, u64)> = map
            .iter()
            .filter(|e| e.allocated)
            .map(|e| (e.offset, e.length))
            .collect();
        assert_eq!(
            allocated,
            vec![(8192, 4096), (16384, 4096)],
            "{cipher:?}: {map:?}"
        );
        // NO_HOLE write-zeroes keeps the range allocated, and it reads as zeros.
        img.write_zeroes(40960, 8192, false).unwrap();
        let map = img.allocation(40960, 8192).unwrap();
        assert_eq!(
            map,
            vec![Extent {
                offset: 40960,
                length: 8192,
                allocated: true
            }]
        );
        let mut z = vec![9u8; 8192];
        img.read(40960, &mut z).unwrap();
        assert!(z.iter().all(|&b| b == 0));
    }
}

#[test]
fn encrypted_units_hold_no_plaintext() {
    let (dir, img) = make(Cipher::AesXtsPlain64, 1 << 20);
    let secret = b"PLAINTEXT-MARKER-0123456789";
    let mut data = Vec::new();
    while data.len() < 64 * 1024 {
        data.extend_from_slice(secret);
    }
    img.write(777, &data, true).unwrap();
    drop(img);
    let raw = std::fs::read(dir.path().join("v.img")).unwrap();
    assert!(!raw.windows(secret.len()).any(|w| w == secret));
}

#[test]
fn concurrent_partial_writes_to_shared_units_all_land() {
    // Eight threads write interleaved 512-byte pieces of the same units: each
    // piece's read-modify-write must not undo another's.
    let (_d, img) = make(Cipher::AesXtsPlain64, 1 << 20);
    let img = std::sync::Arc::new(img);
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let img = img.clone();
            std::thread::spawn(move || {
                for round in 0..50u64 {
                    let unit = round % 16;
                    img.write(unit * 4096 + u64::from(t) * 512, &[t + 1; 512], false)
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut all = vec![0u8; 16 * 4096];
    img.read(0, &mut all).unwrap();
    for (i, piece) in all.chunks(512).enumerate() {
        assert!(piece.iter().all(|&b| b == (i % 8) as u8 + 1), "piece {i}");
    }
}

#[test]
fn large_writes_use_the_parallel_path_and_read_back() {
    let (_d, img) = make(Cipher::AesXtsPlain64, 8 << 20);
    let data: Vec<u8> = (0..(3 << 20) + 100).map(|i: u32| (i % 253) as u8).collect();
    img.write(4096 * 3 + 17, &data, false).unwrap();
    let mut got = vec![0u8; data.len()];
    img.read(4096 * 3 + 17, &mut got).unwrap();
    assert!(got == data);
}
