//! Integer conversions, checked. ebsim builds for 64-bit Linux only (the
//! assertion below stops a build anywhere else), so a `u64` byte count always
//! fits a `usize`; [`usize_of`] says so once instead of an `as` cast that clippy
//! (`cast_possible_truncation`, denied in Cargo.toml) cannot tell from a real
//! truncation. Narrowing conversions that can fail use `try_from` where they
//! happen, with an error or a proof of their bound.

const _: () = assert!(usize::BITS == 64, "ebsim needs a 64-bit target");

/// `x` as a `usize`: lossless on the 64-bit targets ebsim builds for.
#[inline(always)]
pub const fn usize_of(x: u64) -> usize {
    // Lossless: usize is 64 bits wide (asserted above).
    #[allow(clippy::cast_possible_truncation)]
    let n = x as usize;
    n
}

#[cfg(test)]
mod tests {
    #[test]
    fn usize_of_keeps_every_bit() {
        for x in [0, 1, 4096, u64::from(u32::MAX) + 1, u64::MAX] {
            assert_eq!(super::usize_of(x) as u64, x);
        }
    }
}
