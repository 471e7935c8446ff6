//! docs/FORMAT.md, checked: golden header bytes from an independent implementation
//! of the spec, torn header writes, and every refusal (wrong key, tampered header,
//! truncated image, unknown feature bit) leaving the image byte-for-byte unchanged.
// Test data: sizes and offsets are small constants of the test itself.
#![allow(clippy::cast_possible_truncation)]

use ebsim::ErrorKind;
use ebsim::crypto::secret::SecretBytes;
use ebsim::volume::header::{Cipher, Header, MacKey, SLOT, ZERO_UNIT_IS_HOLE};
use ebsim::volume::image::{self, Image};
use std::path::Path;

const VOL: &str = "vol-0123456789abcdef0";

fn golden_inputs() -> (Header, Vec<u8>) {
    let h = Header {
        sequence: 1,
        incompat_features: ZERO_UNIT_IS_HOLE,
        compat_features: 0,
        size: 8 << 30,
        cipher: Cipher::AesXtsPlain64,
        created_ms: 1_767_225_600_000,
        volume_id: VOL.into(),
        region: "us-east-1".into(),
        kms_key_arn: "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
            .into(),
        encryption_context: Header::volume_context(VOL),
        source_snapshot_id: String::new(),
        wrapped_key: (0..170u32).map(|i| ((i * 7 + 3) % 256) as u8).collect(),
        rekey: None,
    };
    (h, (0..64u8).collect())
}

fn golden_bytes() -> Vec<u8> {
    let hex: String = include_str!("vectors/volume_header_v1.hex")
        .split_whitespace()
        .collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn header_encodes_to_the_golden_bytes_and_parses_back() {
    let (h, key) = golden_inputs();
    let mac = MacKey::derive(&key, VOL);
    let ours = h.encode(Some(&mac)).unwrap();
    assert_eq!(
        ours,
        golden_bytes(),
        "encoding differs from docs/FORMAT.md's"
    );
    let parsed = Header::parse(&golden_bytes()).unwrap();
    assert_eq!(parsed.header, h);
    parsed.verify(Some(&mac)).unwrap();
}

/// A test image with a known data key.
struct TestImage {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    key: Vec<u8>,
}

fn make(cipher: Cipher, size: u64) -> TestImage {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{VOL}.img"));
    let (mut h, key) = golden_inputs();
    h.size = size;
    if cipher == Cipher::None {
        h.cipher = Cipher::None;
        h.kms_key_arn.clear();
        h.encryption_context.clear();
        h.wrapped_key.clear();
    }
    let secret = SecretBytes::from_slice(&key);
    image::create_file(&path, &h, (cipher != Cipher::None).then_some(&secret)).unwrap();
    TestImage {
        _dir: dir,
        path,
        key,
    }
}

fn open_with(path: &Path, key: &[u8]) -> ebsim::Result<Image> {
    let key = key.to_vec();
    Image::open(path, VOL, &mut |_h: &Header| {
        Ok(SecretBytes::from_slice(&key))
    })
}

fn sha(path: &Path) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

#[test]
fn a_new_image_is_sparse_reads_zeros_and_has_both_header_copies() {
    let t = make(Cipher::AesXtsPlain64, 64 << 20);
    let meta = std::fs::metadata(&t.path).unwrap();
    assert_eq!(meta.len(), (1 << 20) + (64 << 20));
    use std::os::unix::fs::MetadataExt;
    assert!(
        meta.blocks() * 512 < 1 << 20,
        "a new 64 MiB volume allocates almost nothing ({} bytes)",
        meta.blocks() * 512
    );
    let [a, b] = image::read_copies(&t.path).unwrap();
    assert_eq!(a.unwrap().header, b.unwrap().header);
    let img = open_with(&t.path, &t.key).unwrap();
    let mut buf = vec![1u8; 3 << 20];
    img.read(5 << 20, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    assert!(img.key_is_locked() || std::env::var_os("EBSIM_ALLOW_UNLOCKED").is_some());
}

#[test]
fn torn_header_writes_always_leave_a_valid_copy() {
    let t = make(Cipher::AesXtsPlain64, 1 << 20);
    {
        let img = open_with(&t.path, &t.key).unwrap();
        img.write(4096, b"survives", true).unwrap();
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&t.path)
        .unwrap();
    use std::os::unix::fs::FileExt;
    // 1. Torn write of copy A (the first one an update rewrites): garbage in its middle.
    file.write_all_at(&[0xa5; 700], 100).unwrap();
    let img = open_with(&t.path, &t.key).unwrap();
    assert_eq!(img.header().sequence, 1, "copy B's header is used");
    let mut got = [0u8; 8];
    img.read(4096, &mut got).unwrap();
    assert_eq!(&got, b"survives");
    // 2. A grow rewrites both copies (sequence 2) and heals copy A.
    img.grow(2 << 20).unwrap();
    drop(img);
    let [a, b] = image::read_copies(&t.path).unwrap();
    assert_eq!(a.unwrap().header.sequence, 2);
    assert_eq!(b.unwrap().header.sequence, 2);
    // 3. A crash between the two writes of an update: A new (3), B old (2).
    let (mut h3, _) = golden_inputs();
    h3.size = 3 << 20;
    h3.sequence = 3;
    let a3 = h3.encode(Some(&MacKey::derive(&t.key, VOL))).unwrap();
    let mut slot = vec![0u8; SLOT];
    slot[..a3.len()].copy_from_slice(&a3);
    file.set_len((1 << 20) + (3 << 20)).unwrap();
    file.write_all_at(&slot, 0).unwrap();
    let img = open_with(&t.path, &t.key).unwrap();
    assert_eq!((img.header().sequence, img.size()), (3, 3 << 20));
    drop(img);
    // 4. Both copies torn: a clear error naming the volume, nothing changed.
    file.write_all_at(&[0u8; 64], 20).unwrap();
    file.write_all_at(&[0u8; 64], SLOT as u64 + 20).unwrap();
    let before = sha(&t.path);
    let e = open_with(&t.path, &t.key).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ImageCorrupt);
    assert_eq!(ebsim::cli::exit::code(e.kind()), 253);
    assert!(
        e.message()
            .starts_with(&format!("{VOL}: no valid header: copy A: ")),
        "{e}"
    );
    assert_eq!(sha(&t.path), before);
}

#[test]
fn wrong_key_tampering_truncation_and_unknown_features_are_refused_without_change() {
    let t = make(Cipher::AesXtsPlain64, 1 << 20);
    {
        let img = open_with(&t.path, &t.key).unwrap();
        img.write(0, &[7u8; 8192], true).unwrap();
    }
    let check = |what: &str, kind: ErrorKind, want: &str| {
        let before = sha(&t.path);
        let mut wrong = t.key.clone();
        if what == "wrong key" {
            wrong[3] ^= 1;
        }
        let e = open_with(&t.path, &wrong).unwrap_err();
        assert_eq!(e.kind(), kind, "{what}: {e}");
        assert_eq!(ebsim::cli::exit::code(e.kind()), 253, "{what}: {e}");
        assert!(e.message().contains(want), "{what}: {e}");
        assert!(e.message().starts_with(VOL), "{what}: {e}");
        assert_eq!(e.field(ebsim::error::Field::VolumeId), Some(VOL), "{what}");
        assert_eq!(sha(&t.path), before, "{what} changed the image");
    };
    check(
        "wrong key",
        ErrorKind::ImageCorrupt,
        "header authentication failed",
    );

    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&t.path)
        .unwrap();
    let mut orig = vec![0u8; 2 * SLOT];
    file.read_exact_at(&mut orig, 0).unwrap();

    // Tampered: the size field of both copies doubled (MAC no longer matches).
    for at in [0u64, SLOT as u64] {
        file.write_all_at(&(2u64 << 20).to_le_bytes(), at + 40)
            .unwrap();
    }
    file.set_len(3 << 20).unwrap();
    check(
        "tampered header",
        ErrorKind::ImageCorrupt,
        "header authentication failed",
    );
    file.write_all_at(&orig, 0).unwrap();
    file.set_len(2 << 20).unwrap();

    // Truncated.
    file.set_len((2 << 20) - 4096).unwrap();
    check(
        "truncated",
        ErrorKind::ImageTruncated,
        "the image is truncated: 2093056 bytes, expected 2097152",
    );
    file.set_len(2 << 20).unwrap();

    // An unknown incompat feature bit, with a valid MAC.
    let (mut h, _) = golden_inputs();
    h.size = 1 << 20;
    h.sequence = 9;
    h.incompat_features |= 0x40;
    let bytes = h.encode(Some(&MacKey::derive(&t.key, VOL))).unwrap();
    for at in [0u64, SLOT as u64] {
        file.write_all_at(&bytes, at).unwrap();
    }
    check(
        "unknown feature",
        ErrorKind::ImageUnsupported,
        "incompatible features 0x40",
    );
    file.write_all_at(&orig, 0).unwrap();

    // Restored, the image opens and its data is intact.
    let img = open_with(&t.path, &t.key).unwrap();
    let mut got = vec![0u8; 8192];
    img.read(0, &mut got).unwrap();
    assert!(got.iter().all(|&b| b == 7));
}

#[test]
fn a_second_open_is_refused_while_the_first_holds_the_image() {
    let t = make(Cipher::None, 1 << 20);
    let first = open_with(&t.path, &t.key).unwrap();
    let e = open_with(&t.path, &t.key).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::VolumeInUse);
    drop(first);
    open_with(&t.path, &t.key).unwrap();
}

#[test]
fn an_image_of_another_volume_is_refused() {
    let t = make(Cipher::None, 1 << 20);
    let e = Image::open(&t.path, "vol-00000000000000000", &mut |_h: &Header| {
        unreachable!("no key for an unencrypted image")
    })
    .unwrap_err();
    assert!(
        e.message()
            .contains("the image header belongs to vol-0123456789abcdef0"),
        "{e}"
    );
}
