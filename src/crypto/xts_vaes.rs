//! AES-256-XTS with VAES + AVX2 on x86-64: the one place in ebsim with `unsafe`.
//!
//! Why by hand: the aes crate's `encrypt_blocks` reaches the VAES kernel, but XTS
//! needs a tweak XORed in before and after every block; done outside the kernel
//! (src/crypto/xts.rs, the portable path) those passes and the scalar tweak chain
//! cost as much as the AES itself (docs/BENCHMARKS.md). No crate offers a fused XTS
//! on VAES, so this module does what OpenSSL's assembly does: 16 blocks in flight
//! in eight 256-bit registers, tweaks computed in vector registers (T·α¹⁶ per lane
//! with shifts, no table), XORed in the same pass as the AES rounds.
//!
//! What needs `unsafe`, and nothing else does: calling `#[target_feature]`
//! functions (sound only after [`available`] said the CPU has the features), and
//! unaligned 256-bit loads and stores through raw pointers into a slice whose
//! length was checked. Every block is `// SAFETY:`-commented.
//!
//! Where the key is: the round keys of K1 (encryption and decryption) and K2 (the
//! tweaks) live in [`Keys`], inside `Xts`, on mlock'ed pages, written there in place
//! by [`Keys::expand`] (no schedule is ever returned by value). The round loops read
//! each round key from those pages with a volatile load where it is used. Keeping
//! the fifteen keys in registers across a chunk needs more than the sixteen vector
//! registers AVX2 has, so the compiler spilled them to the stack, which is what
//! issue 14 found (every thread that encrypted had K1 on its stack: round keys 0 and
//! 1 of AES-256 are K1 verbatim). A volatile load cannot be hoisted out of the loop,
//! so no long-lived copy exists to spill; in the optimized build no vector register
//! holding a round key is ever stored to the stack (checked in the disassembly), and
//! every function here ends with VZEROALL so none stays in a register either. The
//! cost, one load per round per 256 bytes next to eight VAESENCs, did not show: the
//! engine measured faster than before (docs/BENCHMARKS.md). Unoptimized builds still
//! pass intrinsic arguments through the stack; `Xts` runs this code inside
//! `stack::with_keys`, which locks that part of the stack and zeroizes it after.
#![allow(unsafe_code)]

use core::arch::x86_64::*;
use zeroize::Zeroize;

/// Bytes processed per step: 16 blocks in eight 256-bit registers.
pub const CHUNK: usize = 256;

/// True if this CPU has AES-NI, VAES and AVX2.
pub fn available() -> bool {
    std::is_x86_feature_detected!("aes")
        && std::is_x86_feature_detected!("vaes")
        && std::is_x86_feature_detected!("avx2")
}

/// One round key in both 128-bit lanes; 32-byte aligned for the volatile loads.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct RoundKey([u8; 32]);

type Schedule = [RoundKey; 15];

/// The AES-256 round keys of an XTS key: K1 for encryption and decryption, K2 for
/// the tweaks. Zeroized on drop.
#[repr(C, align(64))]
pub struct Keys {
    enc: Schedule,
    dec: Schedule,
    tweak: Schedule,
}

impl Drop for Keys {
    fn drop(&mut self) {
        for s in [&mut self.enc, &mut self.dec, &mut self.tweak] {
            for k in s.iter_mut() {
                k.0.as_mut_slice().zeroize();
            }
        }
    }
}

impl Keys {
    /// Keys of all zeros, to be expanded in place.
    pub const fn zeroed() -> Keys {
        const Z: Schedule = [RoundKey([0; 32]); 15];
        Keys {
            enc: Z,
            dec: Z,
            tweak: Z,
        }
    }

    /// Expands `key` (K1 || K2, 64 bytes) into `self`, in place.
    ///
    /// # Panics
    /// If the CPU lacks the features ([`available`]) or `key` is not 64 bytes.
    pub fn expand(&mut self, key: &[u8]) {
        assert!(available(), "VAES keys on a CPU without VAES");
        let (k1, k2) = key.split_at(32);
        let (k1, k2): (&[u8; 32], &[u8; 32]) = (
            k1.try_into().expect("a 64-byte key"),
            k2.try_into().expect("a 64-byte key"),
        );
        // SAFETY: `available()` confirmed aes, vaes and avx2 on this CPU.
        unsafe {
            expand(k1, &mut self.enc, Some(&mut self.dec));
            expand(k2, &mut self.tweak, None);
        }
    }

    /// Encrypts tweak values in place with K2: each (at most 16) becomes its
    /// T0 = AES-K2(le128(value)).
    pub fn tweaks(&self, values: &mut [u128]) {
        assert!(values.len() <= 16);
        // SAFETY: `Keys` are expanded only after `available()` (see `expand`).
        unsafe {
            match values.len() {
                0 => {}
                1..=2 => ecb::<1>(&self.tweak, values),
                3..=4 => ecb::<2>(&self.tweak, values),
                5..=8 => ecb::<4>(&self.tweak, values),
                _ => ecb::<8>(&self.tweak, values),
            }
        }
    }

    /// Encrypts or decrypts one data unit in place: any non-zero whole number of
    /// AES blocks; `t0` is the unit's encrypted tweak.
    pub fn unit(&self, t0: u128, unit: &mut [u8], encrypt: bool) {
        assert!(!unit.is_empty() && unit.len().is_multiple_of(16));
        let full = unit.len() - unit.len() % CHUNK;
        if full > 0 {
            let p = unit.as_mut_ptr();
            // SAFETY: `Keys` exist only expanded after `available()`; `p` is valid for
            // `full` bytes of reads and writes (a multiple of CHUNK within `unit`), and
            // `run` may be given the same buffer as source and destination.
            unsafe {
                if encrypt {
                    run::<true>(&self.enc, t0, p, p, full)
                } else {
                    run::<false>(&self.dec, t0, p, p, full)
                }
            }
        }
        if full < unit.len() {
            // Fewer than 16 blocks left (only IEEE 1619's short units): through a
            // chunk-sized buffer, with the tweak the next block would have had.
            let mut t = t0;
            for _ in 0..full / 16 {
                t = mul_alpha(t);
            }
            let rest = &mut unit[full..];
            let mut tail = [0u8; CHUNK];
            tail[..rest.len()].copy_from_slice(rest);
            let p = tail.as_mut_ptr();
            // SAFETY: as above; `tail` is CHUNK bytes.
            unsafe {
                if encrypt {
                    run::<true>(&self.enc, t, p, p, CHUNK)
                } else {
                    run::<false>(&self.dec, t, p, p, CHUNK)
                }
            }
            rest.copy_from_slice(&tail[..rest.len()]);
            tail.as_mut_slice().zeroize();
        }
    }

    /// Encrypts one data unit from `src` into `dst` (no copy first). Both are the
    /// same non-zero multiple of [`CHUNK`] long.
    pub fn unit_to(&self, t0: u128, src: &[u8], dst: &mut [u8]) {
        assert!(!src.is_empty() && src.len().is_multiple_of(CHUNK) && src.len() == dst.len());
        // SAFETY: as in `unit`; `src` is valid for reads and `dst` for writes of
        // `src.len()` bytes, and a `&[u8]` and a `&mut [u8]` cannot overlap.
        unsafe { run::<true>(&self.enc, t0, src.as_ptr(), dst.as_mut_ptr(), src.len()) }
    }
}

#[inline(always)]
fn mul_alpha(t: u128) -> u128 {
    (t << 1) ^ ((t >> 127) * 0x87)
}

/// Round key `i` of `s`, read from the schedule's (locked) memory each time.
#[inline(always)]
fn round_key(s: &Schedule, i: usize) -> __m256i {
    let k: *const RoundKey = &s[i];
    // SAFETY: `k` points to a live, 32-byte aligned 32-byte value (`RoundKey` is
    // `align(32)`), which is exactly an `__m256i`; every bit pattern is valid.
    unsafe { core::ptr::read_volatile(k.cast::<__m256i>()) }
}

/// `a` with `a << 32`, `a << 64`, `a << 96` XORed in, then `t`: one AES-256 key
/// schedule step.
#[inline]
#[target_feature(enable = "aes,sse2")]
fn step(a: __m128i, t: __m128i) -> __m128i {
    let mut a = a;
    a = _mm_xor_si128(a, _mm_slli_si128::<4>(a));
    a = _mm_xor_si128(a, _mm_slli_si128::<4>(a));
    a = _mm_xor_si128(a, _mm_slli_si128::<4>(a));
    _mm_xor_si128(a, t)
}

/// Stores `k` as round key `i` of `s`, in both lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn put(s: &mut Schedule, i: usize, k: __m128i) {
    let p: *mut RoundKey = &mut s[i];
    // SAFETY: `p` points to 32 writable bytes; unaligned stores are allowed anyway.
    unsafe { _mm256_storeu_si256(p.cast(), _mm256_broadcastsi128_si256(k)) };
}

/// FIPS-197 AES-256 key expansion with AESKEYGENASSIST, each round key stored into
/// `enc` as soon as it is made (no schedule on the stack); with `dec`, decryption
/// keys by AESIMC (the equivalent inverse cipher), read back from `enc`.
#[target_feature(enable = "aes,avx2")]
unsafe fn expand(key: &[u8; 32], enc: &mut Schedule, dec: Option<&mut Schedule>) {
    // SAFETY: `key` is 32 bytes; both 16-byte loads are in bounds and unaligned loads
    // are allowed.
    let (mut k0, mut k1) = unsafe {
        (
            _mm_loadu_si128(key.as_ptr().cast()),
            _mm_loadu_si128(key.as_ptr().add(16).cast()),
        )
    };
    put(enc, 0, k0);
    put(enc, 1, k1);
    // Round keys 2i (from k1 via RotWord/SubWord and rcon) and 2i+1 (from k0 via
    // SubWord); the last step makes key 14 only.
    macro_rules! even {
        ($i:literal, $rcon:literal) => {
            k0 = step(
                k0,
                _mm_shuffle_epi32::<0xff>(_mm_aeskeygenassist_si128::<$rcon>(k1)),
            );
            put(enc, 2 * $i, k0);
        };
    }
    macro_rules! odd {
        ($i:literal) => {
            k1 = step(
                k1,
                _mm_shuffle_epi32::<0xaa>(_mm_aeskeygenassist_si128::<0>(k0)),
            );
            put(enc, 2 * $i + 1, k1);
        };
    }
    even!(1, 0x01);
    odd!(1);
    even!(2, 0x02);
    odd!(2);
    even!(3, 0x04);
    odd!(3);
    even!(4, 0x08);
    odd!(4);
    even!(5, 0x10);
    odd!(5);
    even!(6, 0x20);
    odd!(6);
    even!(7, 0x40);
    if let Some(dec) = dec {
        for i in 0..15 {
            let k = _mm256_castsi256_si128(round_key(enc, i));
            let d = match i {
                0 | 14 => k,
                _ => _mm_aesimc_si128(k),
            };
            put(dec, 14 - i, d);
        }
    }
    _mm256_zeroall();
}

/// Encrypts `values` (at most 2·R blocks, as little-endian 128-bit numbers) in
/// place with the schedule `s`, two per register.
///
/// # Safety
/// The CPU must have aes, vaes and avx2.
#[target_feature(enable = "aes,avx2,vaes")]
unsafe fn ecb<const R: usize>(s: &Schedule, values: &mut [u128]) {
    debug_assert!(values.len() <= 2 * R);
    let mut blocks = [[0u8; 32]; R];
    for (b, v) in blocks
        .as_flattened_mut()
        .chunks_exact_mut(16)
        .zip(values.iter())
    {
        b.copy_from_slice(&v.to_le_bytes());
    }
    let mut x = [_mm256_setzero_si256(); R];
    let k = round_key(s, 0);
    for (v, b) in x.iter_mut().zip(&blocks) {
        // SAFETY: `b` is 32 readable bytes; unaligned loads are allowed.
        *v = _mm256_xor_si256(unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }, k);
    }
    for i in 1..14 {
        let k = round_key(s, i);
        for v in x.iter_mut() {
            *v = _mm256_aesenc_epi128(*v, k);
        }
    }
    let k = round_key(s, 14);
    for (b, v) in blocks.iter_mut().zip(&x) {
        let last = _mm256_aesenclast_epi128(*v, k);
        // SAFETY: `b` is 32 writable bytes; unaligned stores are allowed.
        unsafe { _mm256_storeu_si256(b.as_mut_ptr().cast(), last) };
    }
    for (v, b) in values
        .iter_mut()
        .zip(blocks.as_flattened().chunks_exact(16))
    {
        *v = u128::from_le_bytes(b.try_into().expect("16 bytes"));
    }
    // Round keys stay in vector registers after a return; whatever saves registers
    // to memory later (a signal frame) would write them out. Clear all of them.
    _mm256_zeroall();
}

/// Multiplies the tweak in each 128-bit lane by α¹⁶: shift each lane left by 16
/// bits; the 16 bits leaving the low qword enter the high one; the 16 bits `c`
/// leaving the lane come back as c·(x⁷+x²+x+1), i.e. c ^ c<<1 ^ c<<2 ^ c<<7.
#[inline]
#[target_feature(enable = "avx2")]
fn mul_alpha16(t: __m256i) -> __m256i {
    let out = _mm256_srli_epi64::<48>(t);
    let swapped = _mm256_shuffle_epi32::<0x4e>(out);
    let reduced = _mm256_xor_si256(
        _mm256_xor_si256(swapped, _mm256_slli_epi64::<1>(swapped)),
        _mm256_xor_si256(
            _mm256_slli_epi64::<2>(swapped),
            _mm256_slli_epi64::<7>(swapped),
        ),
    );
    // Low qwords take the reduced carry, high qwords the plain one.
    let fix = _mm256_blend_epi32::<0b1100_1100>(reduced, swapped);
    _mm256_xor_si256(_mm256_slli_epi64::<16>(t), fix)
}

/// # Safety
/// The CPU must have aes, vaes and avx2; `len` must be a multiple of [`CHUNK`];
/// `src` must be valid for `len` bytes of reads and `dst` for `len` bytes of
/// writes; they are either the same pointer or do not overlap. `s` is the
/// encryption schedule when `ENC`, else the decryption one.
#[target_feature(enable = "aes,avx2,vaes")]
unsafe fn run<const ENC: bool>(s: &Schedule, t0: u128, src: *const u8, dst: *mut u8, len: usize) {
    // The first 16 tweaks one by one; every later group of 16 is the previous ·α¹⁶.
    let mut first = [0u8; CHUNK];
    let mut t = t0;
    for b in first.chunks_exact_mut(16) {
        b.copy_from_slice(&t.to_le_bytes());
        t = mul_alpha(t);
    }
    let mut tw = [_mm256_setzero_si256(); 8];
    for (i, w) in tw.iter_mut().enumerate() {
        // SAFETY: `first` is 256 bytes; bytes 32·i .. 32·i+32 are in bounds.
        *w = unsafe { _mm256_loadu_si256(first.as_ptr().add(32 * i).cast()) };
    }
    first.as_mut_slice().zeroize();
    for c in (0..len).step_by(CHUNK) {
        let mut x = [_mm256_setzero_si256(); 8];
        let k = round_key(s, 0);
        for i in 0..8 {
            // SAFETY: c + 32·i + 32 <= len (len is a multiple of CHUNK = 8·32), and
            // `src` is valid for `len` bytes.
            let v = unsafe { _mm256_loadu_si256(src.add(c + 32 * i).cast()) };
            x[i] = _mm256_xor_si256(_mm256_xor_si256(v, tw[i]), k);
        }
        for r in 1..14 {
            let k = round_key(s, r);
            for v in x.iter_mut() {
                *v = if ENC {
                    _mm256_aesenc_epi128(*v, k)
                } else {
                    _mm256_aesdec_epi128(*v, k)
                };
            }
        }
        let k = round_key(s, 14);
        for i in 0..8 {
            let last = if ENC {
                _mm256_aesenclast_epi128(x[i], k)
            } else {
                _mm256_aesdeclast_epi128(x[i], k)
            };
            // SAFETY: as for the load above, with `dst` valid for `len` bytes. When
            // `dst` is `src`, these 32 bytes were already loaded into `x[i]`.
            unsafe {
                _mm256_storeu_si256(dst.add(c + 32 * i).cast(), _mm256_xor_si256(last, tw[i]))
            };
            tw[i] = mul_alpha16(tw[i]);
        }
    }
    // As in `ecb`: no round key (the decryption schedule ends with K1's first half)
    // left in a register.
    _mm256_zeroall();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha16_in_vectors_equals_sixteen_scalar_doublings() {
        if !available() {
            crate::test_skip::skip("this CPU has no VAES/AVX2");
            return;
        }
        for t in [
            1u128,
            u128::MAX,
            1 << 127,
            0xdead_beef_0123_4567_89ab_cdef_f00d_cafe,
        ] {
            let mut want = t;
            for _ in 0..16 {
                want = mul_alpha(want);
            }
            let mut lanes = [0u8; 32];
            lanes[..16].copy_from_slice(&t.to_le_bytes());
            lanes[16..].copy_from_slice(&(!t).to_le_bytes());
            let mut want2 = !t;
            for _ in 0..16 {
                want2 = mul_alpha(want2);
            }
            // SAFETY: avx2 checked above; `lanes` is 32 bytes.
            let got = unsafe {
                #[target_feature(enable = "avx2")]
                unsafe fn go(l: &mut [u8; 32]) {
                    // SAFETY: `l` is 32 bytes; unaligned loads and stores are allowed.
                    let v = unsafe { _mm256_loadu_si256(l.as_ptr().cast()) };
                    // SAFETY: as above.
                    unsafe { _mm256_storeu_si256(l.as_mut_ptr().cast(), mul_alpha16(v)) };
                }
                go(&mut lanes);
                lanes
            };
            assert_eq!(u128::from_le_bytes(got[..16].try_into().unwrap()), want);
            assert_eq!(u128::from_le_bytes(got[16..].try_into().unwrap()), want2);
        }
    }

    #[test]
    fn key_expansion_and_tweaks_match_the_aes_crate() {
        use aes::cipher::{BlockCipherEncrypt, KeyInit};
        if !available() {
            crate::test_skip::skip("this CPU has no VAES/AVX2");
            return;
        }
        let mut key = [7u8; 64];
        key[32..].fill(9);
        let mut keys = Keys::zeroed();
        keys.expand(&key);
        // With a zero tweak on every block, one 256-byte chunk is AES-ECB of (P ^ T) ^ T;
        // compare a unit encrypted here against the aes crate block by block.
        let aes = aes::Aes256::new_from_slice(&key[..32]).unwrap();
        let mut data = [0x3cu8; CHUNK];
        keys.unit(0, &mut data, true);
        let mut block = aes::Block::from([0x3cu8; 16]);
        aes.encrypt_block(&mut block);
        assert_eq!(
            &data[..16],
            block.as_slice(),
            "T0 = 0 leaves block 0 plain ECB"
        );
        keys.unit(0, &mut data, false);
        assert_eq!(data, [0x3cu8; CHUNK]);
        // Tweaks: AES-K2 of consecutive unit numbers, for every batch size.
        let k2 = aes::Aes256::new_from_slice(&key[32..]).unwrap();
        for n in 0..=16usize {
            let values: Vec<u128> = (0..n as u128)
                .map(|i| (u128::MAX - 5).wrapping_add(i))
                .collect();
            let mut got = values.clone();
            keys.tweaks(&mut got);
            for (i, g) in got.iter().enumerate() {
                let mut b = aes::Block::from(values[i].to_le_bytes());
                k2.encrypt_block(&mut b);
                assert_eq!(g.to_le_bytes(), b.as_slice(), "{n} tweaks, number {i}");
            }
        }
    }
}
