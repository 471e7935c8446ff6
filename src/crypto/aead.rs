//! AES-256-GCM sealing and HKDF-SHA256 key derivation, the two primitives the KMS
//! (ciphertext blobs, the encrypted store) is built from.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use zeroize::Zeroizing;

/// Length of an AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Length of an AES-GCM nonce.
pub const NONCE_LEN: usize = 12;

/// The AEAD failed to open: wrong key, wrong AAD, or tampered bytes. Deliberately
/// carries no detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenError;

fn cipher(key: &[u8; 32]) -> Aes256Gcm {
    Aes256Gcm::new_from_slice(key).expect("AES-256 key is 32 bytes")
}

/// Encrypts `plaintext` with AES-256-GCM; returns ciphertext || tag.
pub fn seal(key: &[u8; 32], nonce: &[u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    cipher(key)
        .encrypt(
            &(*nonce).into(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM encryption of a bounded message cannot fail")
}

/// Decrypts ciphertext || tag; the plaintext comes back in a zeroize-on-drop buffer.
pub fn open(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    cipher(key)
        .decrypt(&(*nonce).into(), Payload { msg: sealed, aad })
        .map(Zeroizing::new)
        .map_err(|_| OpenError)
}

/// HKDF-SHA256: a 32-byte key from input keying material, a salt and a context label.
pub fn derive_key(ikm: &[u8], salt: &[u8], info: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), ikm);
    let mut out = Zeroizing::new([0u8; 32]);
    hk.expand_multi_info(info, out.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_aad_binding() {
        let key = [7u8; 32];
        let nonce = [1u8; NONCE_LEN];
        let ct = seal(&key, &nonce, b"aad", b"hello");
        assert_eq!(ct.len(), 5 + TAG_LEN);
        assert_eq!(&open(&key, &nonce, b"aad", &ct).unwrap()[..], b"hello");
        assert_eq!(open(&key, &nonce, b"aaD", &ct), Err(OpenError));
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert_eq!(open(&key, &nonce, b"aad", &bad), Err(OpenError));
    }

    #[test]
    fn derive_key_depends_on_every_input() {
        let a = derive_key(b"ikm", b"salt", &[b"x"]);
        assert_ne!(*a, *derive_key(b"ikm2", b"salt", &[b"x"]));
        assert_ne!(*a, *derive_key(b"ikm", b"salt2", &[b"x"]));
        assert_ne!(*a, *derive_key(b"ikm", b"salt", &[b"y"]));
        assert_eq!(*a, *derive_key(b"ikm", b"salt", &[b"x"]));
    }
}
