//! AES-256-XTS over 4096-byte data units, batched so the aes crate's pipelined
//! AES-NI / VAES kernels run (shared/reference/blockdev.md §3).
//!
//! The `xts-mode` crate encrypts one 16-byte block per call, which never reaches
//! those kernels; it stays as the test oracle. Here, for each request: the tweaks
//! of all its units are encrypted in one `encrypt_blocks` call (T0 =
//! AES-K2(le128(unit index)), dm-crypt's `plain64` over 4096-byte units); each
//! unit's 256 tweaks T_j = T0·α^j are computed as `u128`s, XORed in, the whole unit
//! goes through one `encrypt_blocks`, and the tweaks are XORed again. Requests of
//! [`PARALLEL_THRESHOLD`] bytes or more are spread over cores with rayon; smaller
//! ones stay on the calling thread.
//!
//! That is the portable path. On x86-64 CPUs with VAES and AVX2 each unit goes
//! instead through `xts_vaes.rs`, which fuses the tweak XORs into the AES rounds and
//! computes tweaks in vector registers (≈2× the portable path, ≥ OpenSSL;
//! docs/BENCHMARKS.md). [`Xts::engine`] says which one runs.

use aes::Aes256;
use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use rayon::prelude::*;

/// Bytes per data unit (one tweak per unit).
pub const DATA_UNIT: usize = 4096;
/// AES blocks per data unit.
const BLOCKS: usize = DATA_UNIT / 16;
/// Length of an XTS-AES-256 key (two AES-256 keys).
pub const KEY_LEN: usize = 64;
/// Requests at least this large are encrypted on several cores.
pub const PARALLEL_THRESHOLD: usize = 256 * 1024;
/// Units whose tweaks are encrypted in one batch.
const TWEAK_BATCH: usize = 16;

type Block = aes::Block;

/// Why an XTS operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XtsError {
    /// The key is not 64 bytes.
    KeyLength(usize),
    /// The two key halves are equal (IEEE 1619 and Linux refuse such keys).
    WeakKey,
    /// The buffer is not a whole number of data units.
    Misaligned(usize),
    /// A single data unit must be 16 to 4096 bytes in whole AES blocks.
    UnitLength(usize),
}

impl std::fmt::Display for XtsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            XtsError::KeyLength(n) => write!(f, "an XTS-AES-256 key is {KEY_LEN} bytes, not {n}"),
            XtsError::WeakKey => f.write_str("the two halves of the XTS key are equal"),
            XtsError::Misaligned(n) => write!(
                f,
                "{n} bytes is not a whole number of {DATA_UNIT}-byte data units"
            ),
            XtsError::UnitLength(n) => write!(
                f,
                "a data unit is 16 to {DATA_UNIT} bytes in whole AES blocks, not {n}"
            ),
        }
    }
}

impl std::error::Error for XtsError {}

/// An XTS-AES-256 key schedule (both halves zeroized on drop).
pub struct Xts {
    data: Aes256,
    tweak: Aes256,
    /// The fused VAES path (src/crypto/xts_vaes.rs) when the CPU has it.
    #[cfg(target_arch = "x86_64")]
    vaes: Option<super::xts_vaes::Keys>,
}

impl std::fmt::Debug for Xts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Xts([REDACTED])")
    }
}

/// Multiplies a tweak by α in GF(2^128) (little-endian, polynomial x^128+x^7+x^2+x+1).
#[inline(always)]
fn mul_alpha(t: u128) -> u128 {
    (t << 1) ^ ((t >> 127) * 0x87)
}

impl Xts {
    /// `key` is K1 (data) || K2 (tweak), 32 bytes each.
    pub fn new(key: &[u8]) -> Result<Self, XtsError> {
        if key.len() != KEY_LEN {
            return Err(XtsError::KeyLength(key.len()));
        }
        let (k1, k2) = key.split_at(32);
        let diff = k1.iter().zip(k2).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if std::hint::black_box(diff) == 0 {
            return Err(XtsError::WeakKey);
        }
        Ok(Xts {
            data: Aes256::new_from_slice(k1).expect("32-byte key"),
            tweak: Aes256::new_from_slice(k2).expect("32-byte key"),
            #[cfg(target_arch = "x86_64")]
            vaes: super::xts_vaes::Keys::new(k1.try_into().expect("32 bytes")),
        })
    }

    /// The same cipher without the VAES path, whatever the CPU: for tests and
    /// benchmarks that compare the two.
    #[doc(hidden)]
    pub fn portable(key: &[u8]) -> Result<Self, XtsError> {
        #[allow(unused_mut)]
        let mut x = Self::new(key)?;
        #[cfg(target_arch = "x86_64")]
        {
            x.vaes = None;
        }
        Ok(x)
    }

    /// Which implementation runs: `vaes-avx2` or `portable`.
    pub fn engine(&self) -> &'static str {
        #[cfg(target_arch = "x86_64")]
        if self.vaes.is_some() {
            return "vaes-avx2";
        }
        "portable"
    }

    /// Encrypts `data` in place; its first byte is the start of unit `first_unit`.
    pub fn encrypt(&self, first_unit: u64, data: &mut [u8]) -> Result<(), XtsError> {
        self.run(first_unit, data, true)
    }

    /// Encrypts `src` into `dst` (same length, whole units); the first byte is the
    /// start of unit `first_unit`. Saves the copy that encrypting in place would
    /// need when the plaintext must stay untouched (a write's data).
    pub fn encrypt_to(&self, first_unit: u64, src: &[u8], dst: &mut [u8]) -> Result<(), XtsError> {
        if !src.len().is_multiple_of(DATA_UNIT) || src.len() != dst.len() {
            return Err(XtsError::Misaligned(src.len()));
        }
        let one = |first: u64, s: &[u8], d: &mut [u8]| {
            #[cfg(target_arch = "x86_64")]
            if let Some(v) = &self.vaes {
                for (b, (sb, db)) in s
                    .chunks(TWEAK_BATCH * DATA_UNIT)
                    .zip(d.chunks_mut(TWEAK_BATCH * DATA_UNIT))
                    .enumerate()
                {
                    let base = first.wrapping_add((b * TWEAK_BATCH) as u64);
                    let units = sb.len() / DATA_UNIT;
                    let mut t0 = [Block::default(); TWEAK_BATCH];
                    for (i, t) in t0[..units].iter_mut().enumerate() {
                        *t = u128::from(base.wrapping_add(i as u64)).to_le_bytes().into();
                    }
                    self.tweak.encrypt_blocks(&mut t0[..units]);
                    for ((su, du), t) in sb
                        .chunks_exact(DATA_UNIT)
                        .zip(db.chunks_exact_mut(DATA_UNIT))
                        .zip(&t0)
                    {
                        v.unit_to(u128::from_le_bytes((*t).into()), su, du);
                    }
                }
                return;
            }
            d.copy_from_slice(s);
            self.serial(first, d, true);
        };
        if src.len() >= PARALLEL_THRESHOLD {
            let per_task = TWEAK_BATCH * DATA_UNIT;
            src.par_chunks(per_task)
                .zip(dst.par_chunks_mut(per_task))
                .enumerate()
                .for_each(|(i, (s, d))| {
                    one(first_unit.wrapping_add((i * TWEAK_BATCH) as u64), s, d)
                });
        } else {
            one(first_unit, src, dst);
        }
        Ok(())
    }

    /// Decrypts `data` in place; its first byte is the start of unit `first_unit`.
    pub fn decrypt(&self, first_unit: u64, data: &mut [u8]) -> Result<(), XtsError> {
        self.run(first_unit, data, false)
    }

    fn run(&self, first_unit: u64, data: &mut [u8], encrypt: bool) -> Result<(), XtsError> {
        if !data.len().is_multiple_of(DATA_UNIT) {
            return Err(XtsError::Misaligned(data.len()));
        }
        if data.len() >= PARALLEL_THRESHOLD {
            let per_task = TWEAK_BATCH * DATA_UNIT;
            data.par_chunks_mut(per_task)
                .enumerate()
                .for_each(|(i, chunk)| {
                    self.serial(
                        first_unit.wrapping_add((i * TWEAK_BATCH) as u64),
                        chunk,
                        encrypt,
                    )
                });
        } else {
            self.serial(first_unit, data, encrypt);
        }
        Ok(())
    }

    fn serial(&self, first_unit: u64, data: &mut [u8], encrypt: bool) {
        for (b, batch) in data.chunks_mut(TWEAK_BATCH * DATA_UNIT).enumerate() {
            let units = batch.len() / DATA_UNIT;
            let base = first_unit.wrapping_add((b * TWEAK_BATCH) as u64);
            let mut t0 = [Block::default(); TWEAK_BATCH];
            for (i, t) in t0[..units].iter_mut().enumerate() {
                *t = u128::from(base.wrapping_add(i as u64)).to_le_bytes().into();
            }
            self.tweak.encrypt_blocks(&mut t0[..units]);
            for (unit, t) in batch.chunks_exact_mut(DATA_UNIT).zip(&t0) {
                self.unit(t, unit, encrypt);
            }
        }
    }

    /// One data unit of at most [`DATA_UNIT`] bytes (a whole number of AES blocks)
    /// whose encrypted tweak is `t0`.
    #[inline(always)]
    fn unit(&self, t0: &Block, unit: &mut [u8], encrypt: bool) {
        #[cfg(target_arch = "x86_64")]
        if let Some(v) = &self.vaes
            && unit.len().is_multiple_of(super::xts_vaes::CHUNK)
        {
            v.unit(u128::from_le_bytes((*t0).into()), unit, encrypt);
            return;
        }
        let (blocks, rest) = Block::slice_as_chunks_mut(unit);
        debug_assert!(rest.is_empty() && blocks.len() <= BLOCKS);
        let mut tweaks = [0u128; BLOCKS];
        let tweaks = &mut tweaks[..blocks.len()];
        let mut x = u128::from_le_bytes((*t0).into());
        for tw in tweaks.iter_mut() {
            *tw = x;
            x = mul_alpha(x);
        }
        xor(blocks, tweaks);
        if encrypt {
            self.data.encrypt_blocks(blocks);
        } else {
            self.data.decrypt_blocks(blocks);
        }
        xor(blocks, tweaks);
    }

    /// Encrypts one data unit of any whole number of AES blocks up to
    /// [`DATA_UNIT`] bytes, with tweak value `tweak` (IEEE 1619's data unit sequence
    /// number). Volumes use [`Xts::encrypt`]; this exists for IEEE 1619's 512-byte
    /// test vectors.
    pub fn encrypt_unit(&self, tweak: u128, unit: &mut [u8]) -> Result<(), XtsError> {
        self.one_unit(tweak, unit, true)
    }

    /// The inverse of [`Xts::encrypt_unit`].
    pub fn decrypt_unit(&self, tweak: u128, unit: &mut [u8]) -> Result<(), XtsError> {
        self.one_unit(tweak, unit, false)
    }

    fn one_unit(&self, tweak: u128, unit: &mut [u8], encrypt: bool) -> Result<(), XtsError> {
        if unit.is_empty() || unit.len() > DATA_UNIT || !unit.len().is_multiple_of(16) {
            return Err(XtsError::UnitLength(unit.len()));
        }
        let mut t0: Block = tweak.to_le_bytes().into();
        self.tweak.encrypt_block(&mut t0);
        self.unit(&t0, unit, encrypt);
        Ok(())
    }
}

#[inline(always)]
fn xor(blocks: &mut [Block], tweaks: &[u128]) {
    for (b, t) in blocks.iter_mut().zip(tweaks) {
        let v = u128::from_le_bytes((*b).into()) ^ t;
        *b = v.to_le_bytes().into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Vec<u8> {
        (0..64u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(11))
            .collect()
    }

    fn oracle(key: &[u8], first: u64, data: &mut [u8], encrypt: bool) {
        let x = xts_mode::Xts128::new(
            Aes256::new_from_slice(&key[..32]).unwrap(),
            Aes256::new_from_slice(&key[32..]).unwrap(),
        );
        if encrypt {
            x.encrypt_area(
                data,
                DATA_UNIT,
                u128::from(first),
                xts_mode::get_tweak_default,
            );
        } else {
            x.decrypt_area(
                data,
                DATA_UNIT,
                u128::from(first),
                xts_mode::get_tweak_default,
            );
        }
    }

    #[test]
    fn matches_the_xts_mode_oracle_and_round_trips() {
        let k = key();
        let xts = Xts::new(&k).unwrap();
        for (first, units) in [(0u64, 1usize), (7, 3), (u64::MAX - 20, 17), (1 << 40, 70)] {
            let plain: Vec<u8> = crate::crypto::random_bytes(units * DATA_UNIT);
            let mut ours = plain.clone();
            let mut theirs = plain.clone();
            xts.encrypt(first, &mut ours).unwrap();
            oracle(&k, first, &mut theirs, true);
            assert_eq!(ours, theirs, "first unit {first}, {units} units");
            xts.decrypt(first, &mut ours).unwrap();
            assert_eq!(ours, plain);
        }
    }

    #[test]
    fn vaes_path_equals_portable_path() {
        let k = key();
        let fast = Xts::new(&k).unwrap();
        let slow = Xts::portable(&k).unwrap();
        eprintln!("engine: {}", fast.engine());
        for (first, units) in [(0u64, 1usize), (u64::MAX - 3, 9), (1 << 33, 40)] {
            let plain = crate::crypto::random_bytes(units * DATA_UNIT);
            let (mut a, mut b) = (plain.clone(), plain.clone());
            fast.encrypt(first, &mut a).unwrap();
            slow.encrypt(first, &mut b).unwrap();
            assert_eq!(a, b);
            fast.decrypt(first, &mut a).unwrap();
            assert_eq!(a, plain);
        }
        let mut a = vec![0x11u8; 512];
        let mut b = a.clone();
        fast.encrypt_unit(0xff, &mut a).unwrap();
        slow.encrypt_unit(0xff, &mut b).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn out_of_place_encryption_equals_in_place() {
        for xts in [Xts::new(&key()).unwrap(), Xts::portable(&key()).unwrap()] {
            for units in [1usize, 3, 17, 80] {
                let plain = crate::crypto::random_bytes(units * DATA_UNIT);
                let mut inplace = plain.clone();
                xts.encrypt(77, &mut inplace).unwrap();
                let mut out = vec![0u8; plain.len()];
                xts.encrypt_to(77, &plain, &mut out).unwrap();
                assert_eq!(out, inplace, "{} {units}", xts.engine());
            }
            assert!(xts.encrypt_to(0, &[0u8; 4096], &mut [0u8; 8192]).is_err());
        }
    }

    #[test]
    fn parallel_path_equals_serial_path() {
        let xts = Xts::new(&key()).unwrap();
        let plain = crate::crypto::random_bytes(PARALLEL_THRESHOLD + 5 * DATA_UNIT);
        let mut big = plain.clone();
        xts.encrypt(99, &mut big).unwrap();
        let mut serial = plain.clone();
        for (i, unit) in serial.chunks_exact_mut(DATA_UNIT).enumerate() {
            xts.encrypt(99 + i as u64, unit).unwrap();
        }
        assert_eq!(big, serial);
    }

    #[test]
    fn refuses_bad_keys_and_partial_units() {
        assert_eq!(Xts::new(&[0u8; 32]).unwrap_err(), XtsError::KeyLength(32));
        let mut same = vec![7u8; 64];
        assert_eq!(Xts::new(&same).unwrap_err(), XtsError::WeakKey);
        same[63] = 8;
        let xts = Xts::new(&same).unwrap();
        let mut buf = vec![0u8; DATA_UNIT + 512];
        let before = buf.clone();
        assert_eq!(
            xts.encrypt(0, &mut buf).unwrap_err(),
            XtsError::Misaligned(DATA_UNIT + 512)
        );
        assert_eq!(buf, before, "a refused request changes nothing");
        assert_eq!(format!("{xts:?}"), "Xts([REDACTED])");
        assert!(["vaes-avx2", "portable"].contains(&xts.engine()));
    }

    #[test]
    fn alpha_multiplication_reduces_by_the_xts_polynomial() {
        assert_eq!(mul_alpha(1), 2);
        assert_eq!(mul_alpha(1u128 << 127), 0x87);
        assert_eq!(mul_alpha((1u128 << 127) | 1), 0x87 ^ 2);
    }
}
