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

use super::secret::Locked;
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

/// An XTS-AES-256 key schedule on locked pages of its own, built there in place and
/// zeroized on drop (src/crypto/stack.rs, docs/EBS.md "Keys in memory").
pub struct Xts {
    s: Locked<Schedules>,
}

/// What one engine needs: the VAES engine's own round keys, or the aes crate's.
struct Schedules {
    /// The fused VAES path (src/crypto/xts_vaes.rs) when the CPU has it.
    #[cfg(target_arch = "x86_64")]
    vaes: Option<super::xts_vaes::Keys>,
    /// The portable path: data key (K1) and tweak key (K2) schedules.
    portable: Option<(Aes256, Aes256)>,
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
    /// `key` is K1 (data) || K2 (tweak), 32 bytes each. The schedules are written
    /// straight into locked pages; no copy of them or of the key is left on the
    /// stack (the key setup is followed by a scrub).
    pub fn new(key: &[u8]) -> Result<Self, XtsError> {
        Self::build(key, true)
    }

    /// The same cipher without the VAES path, whatever the CPU: for tests and
    /// benchmarks that compare the two.
    #[cfg(any(test, feature = "test-support"))]
    pub fn portable(key: &[u8]) -> Result<Self, XtsError> {
        Self::build(key, false)
    }

    fn build(key: &[u8], fast: bool) -> Result<Self, XtsError> {
        if key.len() != KEY_LEN {
            return Err(XtsError::KeyLength(key.len()));
        }
        let (k1, k2) = key.split_at(32);
        let diff = k1.iter().zip(k2).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if std::hint::black_box(diff) == 0 {
            return Err(XtsError::WeakKey);
        }
        let empty = Schedules {
            #[cfg(target_arch = "x86_64")]
            vaes: None,
            portable: None,
        };
        let s = Locked::new_in_place(empty, |s: &mut Schedules| {
            #[cfg(target_arch = "x86_64")]
            if fast && super::xts_vaes::available() {
                s.vaes.insert(super::xts_vaes::Keys::zeroed()).expand(key);
                return Ok::<(), XtsError>(());
            }
            let _ = fast;
            // The aes crate builds a schedule only by value: it is made in this
            // closure's frame, below `new_in_place`, which scrubs it after the move.
            s.portable = Some((
                Aes256::new_from_slice(k1).expect("32-byte key"),
                Aes256::new_from_slice(k2).expect("32-byte key"),
            ));
            Ok(())
        })?;
        Ok(Xts { s })
    }

    /// True if the schedule's pages are mlock'ed.
    pub fn is_locked(&self) -> bool {
        self.s.is_locked()
    }

    #[cfg(target_arch = "x86_64")]
    fn vaes(&self) -> Option<&super::xts_vaes::Keys> {
        self.s.vaes.as_ref()
    }

    fn aes(&self) -> &(Aes256, Aes256) {
        self.s
            .portable
            .as_ref()
            .expect("an Xts has one engine's schedule")
    }

    /// Runs `f`, the XTS work of one call, with this thread's stack locked where it
    /// runs and zeroized after it (src/crypto/stack.rs), as deep as the engine's
    /// frames go. Measured from the frame sizes of an optimized x86-64 build: under
    /// `f`, the VAES engine's frames take 0.9 KiB; the portable path's 4.8 KiB (the
    /// aes crate's tweak batch, then its VAES backend, which copies the 15 round
    /// keys, broadcast, into a 32-byte aligned frame of its own). Unoptimized builds,
    /// where every intrinsic is a call with its arguments on the stack, went 11 KiB
    /// deep. Zeroizing costs 13–22 ns per KiB here, once per call (a 4 KiB unit takes
    /// 0.7 µs), which is why the depth is not simply generous.
    #[inline(always)]
    fn keyed<R>(&self, f: impl FnOnce() -> R) -> R {
        const DEBUG: usize = 16 << 10;
        const VAES: usize = if cfg!(debug_assertions) {
            DEBUG
        } else {
            2 << 10
        };
        const PORTABLE: usize = if cfg!(debug_assertions) {
            DEBUG
        } else {
            6 << 10
        };
        #[cfg(target_arch = "x86_64")]
        if self.vaes().is_some() {
            return super::stack::with_keys::<VAES, R>(f);
        }
        super::stack::with_keys::<PORTABLE, R>(f)
    }

    /// Which implementation runs: `vaes-avx2` or `portable`.
    pub fn engine(&self) -> &'static str {
        #[cfg(target_arch = "x86_64")]
        if self.vaes().is_some() {
            return "vaes-avx2";
        }
        "portable"
    }

    /// The encrypted tweaks T0 of `out.len()` (at most [`TWEAK_BATCH`]) units from
    /// `first` (unit numbers wrap at 2^64).
    #[inline(always)]
    fn tweaks(&self, first: u64, out: &mut [u128]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(v) = self.vaes() {
            for (i, o) in out.iter_mut().enumerate() {
                *o = u128::from(first.wrapping_add(i as u64));
            }
            v.tweaks(out);
            return;
        }
        self.portable_tweaks(first, out);
    }

    /// [`Xts::tweaks`] on the portable path, in a frame of its own: inlined, the aes
    /// crate's code would make every caller's frame (and the VAES path's scrub)
    /// deeper.
    #[inline(never)]
    fn portable_tweaks(&self, first: u64, out: &mut [u128]) {
        let mut t0 = [Block::default(); TWEAK_BATCH];
        let t0 = &mut t0[..out.len()];
        for (i, t) in t0.iter_mut().enumerate() {
            *t = u128::from(first.wrapping_add(i as u64))
                .to_le_bytes()
                .into();
        }
        self.aes().1.encrypt_blocks(t0);
        for (o, t) in out.iter_mut().zip(t0.iter()) {
            *o = u128::from_le_bytes((*t).into());
        }
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
            if let Some(v) = self.vaes() {
                for (b, (sb, db)) in s
                    .chunks(TWEAK_BATCH * DATA_UNIT)
                    .zip(d.chunks_mut(TWEAK_BATCH * DATA_UNIT))
                    .enumerate()
                {
                    let base = first.wrapping_add((b * TWEAK_BATCH) as u64);
                    let mut t0 = [0u128; TWEAK_BATCH];
                    let t0 = &mut t0[..sb.len() / DATA_UNIT];
                    self.tweaks(base, t0);
                    for ((su, du), t) in sb
                        .chunks_exact(DATA_UNIT)
                        .zip(db.chunks_exact_mut(DATA_UNIT))
                        .zip(t0.iter())
                    {
                        v.unit_to(*t, su, du);
                    }
                }
                return;
            }
            d.copy_from_slice(s);
            self.serial_here(first, d, true);
        };
        if src.len() >= PARALLEL_THRESHOLD {
            let per_task = TWEAK_BATCH * DATA_UNIT;
            src.par_chunks(per_task)
                .zip(dst.par_chunks_mut(per_task))
                .enumerate()
                .for_each(|(i, (s, d))| {
                    self.keyed(|| one(first_unit.wrapping_add((i * TWEAK_BATCH) as u64), s, d))
                });
        } else {
            self.keyed(|| one(first_unit, src, dst));
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
        self.keyed(|| self.serial_here(first_unit, data, encrypt))
    }

    fn serial_here(&self, first_unit: u64, data: &mut [u8], encrypt: bool) {
        for (b, batch) in data.chunks_mut(TWEAK_BATCH * DATA_UNIT).enumerate() {
            let base = first_unit.wrapping_add((b * TWEAK_BATCH) as u64);
            let mut t0 = [0u128; TWEAK_BATCH];
            let t0 = &mut t0[..batch.len() / DATA_UNIT];
            self.tweaks(base, t0);
            for (unit, t) in batch.chunks_exact_mut(DATA_UNIT).zip(t0.iter()) {
                self.unit(*t, unit, encrypt);
            }
        }
    }

    /// One data unit of at most [`DATA_UNIT`] bytes (a whole number of AES blocks)
    /// whose encrypted tweak is `t0`.
    #[inline(always)]
    fn unit(&self, t0: u128, unit: &mut [u8], encrypt: bool) {
        #[cfg(target_arch = "x86_64")]
        if let Some(v) = self.vaes() {
            v.unit(t0, unit, encrypt);
            return;
        }
        self.portable_unit(t0, unit, encrypt);
    }

    /// [`Xts::unit`] on the portable path. Its 256 tweaks live in thread-local
    /// storage rather than in its frame: 4 KiB on the stack would put the aes
    /// crate's frames (where its VAES backend copies the round keys) that much
    /// deeper, and make [`Xts::keyed`] scrub that much more after every call.
    #[inline(never)]
    fn portable_unit(&self, t0: u128, unit: &mut [u8], encrypt: bool) {
        thread_local! {
            static TWEAKS: std::cell::RefCell<[u128; BLOCKS]> =
                const { std::cell::RefCell::new([0; BLOCKS]) };
        }
        let (blocks, rest) = Block::slice_as_chunks_mut(unit);
        debug_assert!(rest.is_empty() && blocks.len() <= BLOCKS);
        TWEAKS.with_borrow_mut(|tweaks| {
            let tweaks = &mut tweaks[..blocks.len()];
            let mut x = t0;
            for tw in tweaks.iter_mut() {
                *tw = x;
                x = mul_alpha(x);
            }
            xor(blocks, tweaks);
            if encrypt {
                self.aes().0.encrypt_blocks(blocks);
            } else {
                self.aes().0.decrypt_blocks(blocks);
            }
            xor(blocks, tweaks);
        });
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
        self.keyed(|| {
            // IEEE 1619's tweak is a full 128-bit value, not a 64-bit unit number.
            #[cfg(target_arch = "x86_64")]
            if let Some(v) = self.vaes() {
                let mut t = [tweak];
                v.tweaks(&mut t);
                v.unit(t[0], unit, encrypt);
                return;
            }
            let mut t0: Block = tweak.to_le_bytes().into();
            self.aes().1.encrypt_block(&mut t0);
            self.unit(u128::from_le_bytes(t0.into()), unit, encrypt);
        });
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
        for (first, units) in [(0u64, 1usize), (u64::MAX - 3, 9), (1 << 33, 40)] {
            let plain = crate::crypto::random_bytes(units * DATA_UNIT);
            let (mut a, mut b) = (plain.clone(), plain.clone());
            fast.encrypt(first, &mut a).unwrap();
            slow.encrypt(first, &mut b).unwrap();
            assert_eq!(a, b);
            fast.decrypt(first, &mut a).unwrap();
            assert_eq!(a, plain);
        }
        // Units that are not whole 256-byte chunks go through the VAES engine's tail.
        for len in [16usize, 48, 256, 272, 512, 4080, 4096] {
            for tweak in [0xffu128, u128::MAX - 1] {
                let plain = crate::crypto::random_bytes(len);
                let (mut a, mut b) = (plain.clone(), plain.clone());
                fast.encrypt_unit(tweak, &mut a).unwrap();
                slow.encrypt_unit(tweak, &mut b).unwrap();
                assert_eq!(a, b, "{len} bytes");
                fast.decrypt_unit(tweak, &mut a).unwrap();
                assert_eq!(a, plain);
            }
        }
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
