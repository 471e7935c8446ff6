//! Encryption context: the string map bound to a ciphertext as AES-GCM AAD.
//!
//! AWS matches it exactly and case-sensitively, ignoring only the order of pairs.
//! A `BTreeMap` gives the order-insensitivity; [`canonical_bytes`] gives one
//! unambiguous byte string per map (length-prefixed, so `{"a":"bc"}` and
//! `{"ab":"c"}` differ).

use std::collections::BTreeMap;

/// An encryption context (possibly empty).
pub type EncryptionContext = BTreeMap<String, String>;

/// The AAD bytes for `ctx`: `u32 count`, then for each pair in key order
/// `u32 len, key, u32 len, value` (big-endian lengths).
pub fn canonical_bytes(ctx: &EncryptionContext) -> Vec<u8> {
    let size: usize = 4 + ctx
        .iter()
        .map(|(k, v)| 8 + k.len() + v.len())
        .sum::<usize>();
    // Contexts are validated far below 4 GiB (KMS allows 8 KiB), so every
    // length fits its 32-bit field.
    let u32_len = |n: usize| u32::try_from(n).expect("encryption context lengths fit 32 bits");
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&u32_len(ctx.len()).to_be_bytes());
    for (k, v) in ctx {
        out.extend_from_slice(&u32_len(k.len()).to_be_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&u32_len(v.len()).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn order_does_not_matter_but_case_and_boundaries_do() {
        assert_eq!(
            canonical_bytes(&ctx(&[("a", "1"), ("b", "2")])),
            canonical_bytes(&ctx(&[("b", "2"), ("a", "1")]))
        );
        assert_ne!(
            canonical_bytes(&ctx(&[("a", "1")])),
            canonical_bytes(&ctx(&[("A", "1")]))
        );
        assert_ne!(
            canonical_bytes(&ctx(&[("a", "bc")])),
            canonical_bytes(&ctx(&[("ab", "c")]))
        );
        assert_eq!(canonical_bytes(&EncryptionContext::new()), vec![0, 0, 0, 0]);
    }
}
