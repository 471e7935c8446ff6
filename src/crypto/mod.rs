//! Cryptographic building blocks: secret byte buffers that stay in locked memory
//! and are zeroized on drop, AES-256-GCM sealing, key derivation and randomness.
//! The KMS and (later) the volume code build on these; nothing here knows about AWS.

pub mod aead;
/// Test support (`test-support` feature): finding key copies in a process.
#[cfg(any(test, feature = "test-support"))]
pub mod memscan;
pub mod secret;
pub mod stack;
pub mod xts;
#[cfg(target_arch = "x86_64")]
mod xts_vaes;

pub use secret::SecretBytes;

/// Fills `buf` from the operating system's CSPRNG.
pub fn random_fill(buf: &mut [u8]) {
    // getrandom only fails when the OS has no entropy source at all; there is
    // nothing sensible to do then but stop.
    getrandom::fill(buf).expect("the operating system's random number generator failed");
}

/// Fills `buf` from a per-thread userspace CSPRNG (ChaCha, seeded and reseeded
/// from the OS). For nonces and identifiers on hot paths, where a system call per
/// value would dominate; key material comes from [`random_fill`].
pub fn fast_random_fill(buf: &mut [u8]) {
    use rand::RngCore;
    rand::rng().fill_bytes(buf);
}

/// `n` random bytes.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    random_fill(&mut v);
    v
}
