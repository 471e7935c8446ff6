//! The symmetric ciphertext blob (docs/KMS.md, "Ciphertext blob").
//!
//! ```text
//! offset  size  field
//! 0       1     format version, 0x01
//! 1       16    KMS key id (UUID, binary)
//! 17      4     backing-key version (big-endian u32, 0 = the key's first material)
//! 21      16    nonce (random; salt of the per-message key derivation)
//! 37      n     AES-256-GCM ciphertext of the plaintext (n >= 1)
//! 37+n    16    AES-GCM tag
//! ```
//!
//! The per-message key is HKDF-SHA256(backing key, salt = nonce,
//! info = "ebsim kms symmetric v1" || header[0..21]); the GCM IV is all zeros
//! because every message has its own key. The AAD is the 37-byte header followed
//! by the canonical encryption context, so the key id, version, nonce and context
//! are all authenticated.

use crate::crypto::aead;
use zeroize::Zeroizing;

pub const VERSION: u8 = 0x01;
pub const HEADER_LEN: usize = 37;
/// Smallest valid blob: header, one byte of ciphertext, tag.
pub const MIN_LEN: usize = HEADER_LEN + 1 + aead::TAG_LEN;
/// AWS's limit on CiphertextBlob.
pub const MAX_LEN: usize = 6144;
const INFO: &[u8] = b"ebsim kms symmetric v1";

/// A parsed blob header; the body is borrowed from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob<'a> {
    pub key_id: uuid::Uuid,
    pub material_version: u32,
    pub nonce: [u8; 16],
    header: &'a [u8],
    body: &'a [u8],
}

/// Why a blob did not parse. Callers report all of these as
/// InvalidCiphertextException; the detail is for tests and debugging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    TooShort,
    TooLong,
    UnknownVersion(u8),
}

/// A cursor that cannot read past its end.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
        let end = self.pos.checked_add(n).ok_or(ParseError::TooShort)?;
        let s = self.buf.get(self.pos..end).ok_or(ParseError::TooShort)?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ParseError> {
        Ok(self.take(N)?.try_into().expect("take returned N bytes"))
    }

    fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
}

impl<'a> Blob<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        if bytes.len() > MAX_LEN {
            return Err(ParseError::TooLong);
        }
        let mut r = Reader { buf: bytes, pos: 0 };
        let [version] = r.array::<1>()?;
        if version != VERSION {
            return Err(ParseError::UnknownVersion(version));
        }
        let key_id = uuid::Uuid::from_bytes(r.array::<16>()?);
        let material_version = u32::from_be_bytes(r.array::<4>()?);
        let nonce = r.array::<16>()?;
        let body = r.rest();
        if body.len() < 1 + aead::TAG_LEN {
            return Err(ParseError::TooShort);
        }
        Ok(Blob {
            key_id,
            material_version,
            nonce,
            header: &bytes[..HEADER_LEN],
            body,
        })
    }

    /// Decrypts the body with the backing key this blob names, into locked memory.
    pub fn open(
        &self,
        backing_key: &[u8],
        context_aad: &[u8],
    ) -> Result<crate::crypto::SecretBytes, aead::OpenError> {
        let key = message_key(backing_key, &self.nonce, &self.header[..21]);
        aead::open_locked(
            &key,
            &[0; aead::NONCE_LEN],
            &aad(self.header, context_aad),
            self.body,
        )
    }
}

fn message_key(backing_key: &[u8], nonce: &[u8; 16], header_prefix: &[u8]) -> Zeroizing<[u8; 32]> {
    aead::derive_key(backing_key, nonce, &[INFO, header_prefix])
}

fn aad(header: &[u8], context_aad: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(header.len() + context_aad.len());
    v.extend_from_slice(header);
    v.extend_from_slice(context_aad);
    v
}

/// Encrypts `plaintext` (1..=4096 bytes, checked by the caller) into a blob.
pub fn seal(
    key_id: &uuid::Uuid,
    material_version: u32,
    backing_key: &[u8],
    context_aad: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let mut nonce = [0u8; 16];
    crate::crypto::fast_random_fill(&mut nonce);
    seal_with_nonce(
        key_id,
        material_version,
        backing_key,
        context_aad,
        plaintext,
        nonce,
    )
}

/// [`seal`] with a chosen nonce: for test vectors only.
pub fn seal_with_nonce(
    key_id: &uuid::Uuid,
    material_version: u32,
    backing_key: &[u8],
    context_aad: &[u8],
    plaintext: &[u8],
    nonce: [u8; 16],
) -> Vec<u8> {
    let mut header = Vec::with_capacity(HEADER_LEN + plaintext.len() + aead::TAG_LEN);
    header.push(VERSION);
    header.extend_from_slice(key_id.as_bytes());
    header.extend_from_slice(&material_version.to_be_bytes());
    header.extend_from_slice(&nonce);
    let key = message_key(backing_key, &nonce, &header[..21]);
    let body = aead::seal(
        &key,
        &[0; aead::NONCE_LEN],
        &aad(&header, context_aad),
        plaintext,
    );
    header.extend_from_slice(&body);
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [0x11; 32];

    fn id() -> uuid::Uuid {
        uuid::Uuid::parse_str("1234abcd-12ab-34cd-56ef-1234567890ab").unwrap()
    }

    #[test]
    fn round_trip_and_header_fields() {
        let blob = seal(&id(), 3, &KEY, b"ctx", b"secret");
        assert_eq!(blob.len(), HEADER_LEN + 6 + 16);
        let b = Blob::parse(&blob).unwrap();
        assert_eq!(b.key_id, id());
        assert_eq!(b.material_version, 3);
        assert_eq!(b.open(&KEY, b"ctx").unwrap().expose(), b"secret");
        assert!(b.open(&KEY, b"ctX").is_err());
        assert!(b.open(&[0x12; 32], b"ctx").is_err());
    }

    #[test]
    fn every_header_byte_is_authenticated() {
        let blob = seal(&id(), 0, &KEY, b"", b"x");
        for i in 0..blob.len() {
            let mut t = blob.clone();
            t[i] ^= 0x01;
            let ok = Blob::parse(&t).is_ok_and(|b| b.open(&KEY, b"").is_ok());
            assert!(!ok, "flipping byte {i} went unnoticed");
        }
    }

    #[test]
    fn parser_rejects_short_long_and_unknown_versions() {
        let blob = seal(&id(), 0, &KEY, b"", b"x");
        for n in 0..MIN_LEN {
            assert!(Blob::parse(&blob[..n]).is_err(), "len {n}");
        }
        assert!(Blob::parse(&blob[..MIN_LEN]).is_ok());
        let mut v2 = blob.clone();
        v2[0] = 2;
        assert_eq!(Blob::parse(&v2), Err(ParseError::UnknownVersion(2)));
        assert_eq!(
            Blob::parse(&vec![1u8; MAX_LEN + 1]),
            Err(ParseError::TooLong)
        );
    }

    /// Test vector produced by an independent implementation of the spec
    /// (tests/vectors/kms_ciphertext_v1.py, pyca/cryptography). If this changes,
    /// every stored ciphertext breaks: bump VERSION instead.
    #[test]
    fn golden_vector() {
        let mut ctx = crate::kms::context::EncryptionContext::new();
        ctx.insert("purpose".into(), "test".into());
        let aad = crate::kms::context::canonical_bytes(&ctx);
        let blob = seal_with_nonce(&id(), 1, &KEY, &aad, b"hello", [0x22; 16]);
        let hex: String = blob.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            &hex[..74],
            "011234abcd12ab34cd56ef1234567890ab0000000122222222222222222222222222222222"
        );
        assert_eq!(hex, GOLDEN.trim());
        let parsed = Blob::parse(&blob).unwrap();
        assert_eq!(parsed.open(&KEY, &aad).unwrap().expose(), b"hello");
    }

    proptest::proptest! {
        /// The fuzz target's property, run in CI: arbitrary bytes parse to a typed
        /// value or a typed error, and never open without the key that sealed them.
        #[test]
        fn arbitrary_bytes_never_panic_or_open(data in proptest::collection::vec(proptest::arbitrary::any::<u8>(), 0..200)) {
            if let Ok(b) = Blob::parse(&data) {
                proptest::prop_assert!(b.open(&KEY, b"").is_err());
            }
        }
    }

    const GOLDEN: &str = include_str!("../../tests/vectors/kms-ciphertext-v1.hex");
}
