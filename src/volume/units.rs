//! Stored units: the 4096-byte units of an image as they lie on disk, and the
//! one place their hole-aware XTS is written (docs/FORMAT.md §4).
//!
//! A unit whose stored bytes are all zero is a hole (`ZERO_UNIT_IS_HOLE`): it
//! reads as zeros and is never decrypted. Every other unit is AES-256-XTS with its
//! unit number as the tweak. Reading an image, restoring or copying a snapshot and
//! re-keying all go through these functions, which work in place over runs of
//! consecutive data units (one XTS call per run, so the engine batches tweaks
//! across units) and allocate nothing.

use super::header::DATA_UNIT;
use crate::crypto::xts::Xts;
use crate::num::usize_of;
use std::ops::Range;

/// Bytes per unit, as a length.
pub const UNIT: usize = usize_of(DATA_UNIT);

/// True if `unit` (whole, stored bytes) is a hole. A ciphertext unit almost never
/// starts with 16 zero bytes, so the first 16 bytes decide nearly every unit.
pub fn is_hole(unit: &[u8]) -> bool {
    unit[..16].iter().all(|&b| b == 0) && is_zero(unit)
}

/// True if every byte is zero.
pub fn is_zero(b: &[u8]) -> bool {
    // Folding fixed-size chunks vectorizes; `iter().all` would not.
    b.chunks(64).all(|c| c.iter().fold(0u8, |a, &x| a | x) == 0)
}

/// The first run of consecutive non-hole units of `buf` (whole units) at or after
/// unit index `from`, as unit indices into `buf`.
pub fn next_run(buf: &[u8], from: usize) -> Option<Range<usize>> {
    let n = buf.len() / UNIT;
    let unit = |i: usize| &buf[i * UNIT..(i + 1) * UNIT];
    let start = (from..n).find(|&i| !is_hole(unit(i)))?;
    let end = (start + 1..n).find(|&i| is_hole(unit(i))).unwrap_or(n);
    Some(start..end)
}

/// Calls `f(first unit number, run bytes)` for every run of non-hole units of
/// `buf`, whose first byte is the start of unit `first_unit`.
fn for_each_run(first_unit: u64, buf: &mut [u8], mut f: impl FnMut(u64, &mut [u8])) {
    let mut at = 0;
    while let Some(r) = next_run(buf, at) {
        f(
            first_unit + r.start as u64,
            &mut buf[r.start * UNIT..r.end * UNIT],
        );
        at = r.end;
    }
}

/// Decrypts, in place, the units of `buf` that are not holes; `buf` holds whole
/// stored units, the first of them unit `first_unit`.
pub fn decrypt(xts: &Xts, first_unit: u64, buf: &mut [u8]) {
    for_each_run(first_unit, buf, |u, run| {
        xts.decrypt(u, run).expect("whole units")
    });
}

/// Encrypts, in place, the units of plaintext `buf` that are not all zeros; zero
/// units stay zeros, so they are stored as holes.
pub fn encrypt(xts: &Xts, first_unit: u64, buf: &mut [u8]) {
    for_each_run(first_unit, buf, |u, run| {
        xts.encrypt(u, run).expect("whole units")
    });
}

/// Moves the stored units of `buf` from one data key to another, in place: each
/// run of non-hole units is decrypted under `from`, then encrypted under `to`.
/// A unit whose plaintext is zeros comes out under `to` like any other (a
/// re-key keeps the unit allocated).
pub fn reencrypt(from: &Xts, to: &Xts, first_unit: u64, buf: &mut [u8]) {
    for_each_run(first_unit, buf, |u, run| {
        from.decrypt(u, run).expect("whole units");
        to.encrypt(u, run).expect("whole units");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xts(seed: u8) -> Xts {
        let key: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(seed) ^ seed).collect();
        Xts::new(&key).unwrap()
    }

    /// Units 0, 2, 3 carry data; 1 and 4 are holes.
    fn plain() -> Vec<u8> {
        let mut buf = vec![0u8; 5 * UNIT];
        for (u, byte) in [(0, 1u8), (2, 2), (3, 3)] {
            buf[u * UNIT + 100] = byte;
        }
        buf[3 * UNIT + UNIT - 1] = 9;
        buf
    }

    #[test]
    fn runs_skip_holes() {
        let buf = plain();
        assert_eq!(next_run(&buf, 0), Some(0..1));
        assert_eq!(next_run(&buf, 1), Some(2..4));
        assert_eq!(next_run(&buf, 4), None);
        // A hole is all zeros, not just a zero start.
        let mut late = vec![0u8; UNIT];
        late[UNIT - 1] = 1;
        assert!(!is_hole(&late));
        assert!(is_hole(&[0u8; UNIT]));
    }

    #[test]
    fn each_unit_is_xts_with_its_number_as_tweak_and_holes_stay() {
        let (a, b) = (xts(1), xts(2));
        let first = 1000;
        let mut buf = plain();
        encrypt(&a, first, &mut buf);
        for u in 0..5 {
            let mut want = plain()[u * UNIT..(u + 1) * UNIT].to_vec();
            if !is_zero(&want) {
                a.encrypt(first + u as u64, &mut want).unwrap();
            }
            assert_eq!(buf[u * UNIT..(u + 1) * UNIT], want[..], "unit {u}");
        }
        reencrypt(&a, &b, first, &mut buf);
        let mut under_b = plain();
        encrypt(&b, first, &mut under_b);
        assert_eq!(buf, under_b);
        decrypt(&b, first, &mut buf);
        assert_eq!(buf, plain());
    }
}
