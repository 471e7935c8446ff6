//! AES-256-GCM sealing and HKDF-SHA256 key derivation, the two primitives the KMS
//! (ciphertext blobs, the encrypted store) is built from.

use super::SecretBytes;
use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, AeadInOut, KeyInit, Payload};
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
///
/// A plaintext of up to a page (every KMS plaintext: data keys among them) is
/// encrypted in a locked page rather than in the output buffer, so no unlocked copy
/// of it is made, not even for the microseconds before it is overwritten; larger
/// ones (the store's rows) are encrypted in place in the output.
pub fn seal(key: &[u8; 32], nonce: &[u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    if plaintext.len() <= SecretBytes::MAX_LEN {
        let mut buf = SecretBytes::from_slice(plaintext);
        let tag = cipher(key)
            .encrypt_inout_detached(&(*nonce).into(), aad, buf.expose_mut().into())
            .expect("AES-GCM encryption of a bounded message cannot fail");
        let mut out = Vec::with_capacity(plaintext.len() + TAG_LEN);
        out.extend_from_slice(buf.expose());
        out.extend_from_slice(&tag);
        return out;
    }
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

/// Decrypts ciphertext || tag of at most a page of plaintext (a KMS ciphertext's)
/// straight into a locked page: the plaintext is never in ordinary memory.
pub fn open_locked(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    sealed: &[u8],
) -> Result<SecretBytes, OpenError> {
    let len = sealed.len().checked_sub(TAG_LEN).ok_or(OpenError)?;
    if len > SecretBytes::MAX_LEN {
        return Err(OpenError);
    }
    let (body, tag) = sealed.split_at(len);
    let tag = aes_gcm::Tag::try_from(tag).map_err(|_| OpenError)?;
    let mut out = SecretBytes::from_slice(body);
    cipher(key)
        .decrypt_inout_detached(&(*nonce).into(), aad, out.expose_mut().into(), &tag)
        .map_err(|_| OpenError)?;
    Ok(out)
}

/// HKDF-SHA256: a 32-byte key from input keying material, a salt and a context label.
pub fn derive_key(ikm: &[u8], salt: &[u8], info: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    derive_key_into(ikm, salt, info, out.as_mut());
    out
}

/// [`derive_key`] written into `out` (32 bytes), e.g. a locked page.
pub fn derive_key_into(ikm: &[u8], salt: &[u8], info: &[&[u8]], out: &mut [u8]) {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), ikm);
    hk.expand_multi_info(info, out)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
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
        let locked = open_locked(&key, &nonce, b"aad", &ct).unwrap();
        assert_eq!(locked.expose(), b"hello");
        assert!(open_locked(&key, &nonce, b"aad", &bad).is_err());
        assert!(open_locked(&key, &nonce, b"aaD", &ct).is_err());
        assert!(open_locked(&key, &nonce, b"aad", &ct[..TAG_LEN - 1]).is_err());
        // A plaintext larger than a page takes the heap path; both open it.
        let big = vec![9u8; 5000];
        let ct = seal(&key, &nonce, b"", &big);
        assert_eq!(&open(&key, &nonce, b"", &ct).unwrap()[..], &big[..]);
        assert!(open_locked(&key, &nonce, b"", &ct).is_err());
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
