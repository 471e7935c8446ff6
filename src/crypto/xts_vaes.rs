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
//! The expanded round keys live in [`Keys`], zeroized on drop and kept (inside
//! `Xts`, inside `Locked`) on mlock'ed pages. Round keys and data also pass through
//! vector registers and, where the compiler spills them, the stack, as with any AES
//! implementation in a high-level language.
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

/// The AES-256 round keys of the data key (K1), for encryption and decryption.
pub struct Keys {
    enc: [[u8; 16]; 15],
    dec: [[u8; 16]; 15],
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.enc.zeroize();
        self.dec.zeroize();
    }
}

impl Keys {
    /// Expands K1, or None when the CPU lacks the features.
    pub fn new(k1: &[u8; 32]) -> Option<Keys> {
        if !available() {
            return None;
        }
        let mut keys = Keys {
            enc: [[0; 16]; 15],
            dec: [[0; 16]; 15],
        };
        // SAFETY: `available()` confirmed aes, vaes and avx2 on this CPU.
        unsafe { expand(k1, &mut keys) };
        Some(keys)
    }

    /// Encrypts or decrypts one data unit in place. `unit.len()` must be a non-zero
    /// multiple of [`CHUNK`]; `t0` is the unit's encrypted tweak.
    pub fn unit(&self, t0: u128, unit: &mut [u8], encrypt: bool) {
        assert!(!unit.is_empty() && unit.len().is_multiple_of(CHUNK));
        let (len, p) = (unit.len(), unit.as_mut_ptr());
        // SAFETY: `Keys` exists only if `available()` was true (see `new`); `p` is
        // valid for `len` bytes of reads and writes (a multiple of CHUNK, just
        // asserted), and `run` may be given the same buffer as source and destination.
        unsafe {
            if encrypt {
                run::<true>(self, t0, p, p, len)
            } else {
                run::<false>(self, t0, p, p, len)
            }
        }
    }

    /// Encrypts one data unit from `src` into `dst` (no copy first). Both are the
    /// same non-zero multiple of [`CHUNK`] long.
    pub fn unit_to(&self, t0: u128, src: &[u8], dst: &mut [u8]) {
        assert!(!src.is_empty() && src.len().is_multiple_of(CHUNK) && src.len() == dst.len());
        // SAFETY: as in `unit`; `src` is valid for reads and `dst` for writes of
        // `src.len()` bytes, and a `&[u8]` and a `&mut [u8]` cannot overlap.
        unsafe { run::<true>(self, t0, src.as_ptr(), dst.as_mut_ptr(), src.len()) }
    }
}

#[inline(always)]
fn mul_alpha(t: u128) -> u128 {
    (t << 1) ^ ((t >> 127) * 0x87)
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

/// FIPS-197 AES-256 key expansion with AESKEYGENASSIST; decryption keys by AESIMC
/// (the equivalent inverse cipher).
#[target_feature(enable = "aes,sse2")]
unsafe fn expand(key: &[u8; 32], out: &mut Keys) {
    let mut rk = [_mm_setzero_si128(); 15];
    // SAFETY: `key` is 32 bytes; both 16-byte loads are in bounds and unaligned loads
    // are allowed.
    let (mut k0, mut k1) = unsafe {
        (
            _mm_loadu_si128(key.as_ptr().cast()),
            _mm_loadu_si128(key.as_ptr().add(16).cast()),
        )
    };
    rk[0] = k0;
    rk[1] = k1;
    // Round keys 2i (from k1 via RotWord/SubWord and rcon) and 2i+1 (from k0 via
    // SubWord); the last step makes key 14 only.
    macro_rules! even {
        ($i:literal, $rcon:literal) => {
            k0 = step(
                k0,
                _mm_shuffle_epi32::<0xff>(_mm_aeskeygenassist_si128::<$rcon>(k1)),
            );
            rk[2 * $i] = k0;
        };
    }
    macro_rules! odd {
        ($i:literal) => {
            k1 = step(
                k1,
                _mm_shuffle_epi32::<0xaa>(_mm_aeskeygenassist_si128::<0>(k0)),
            );
            rk[2 * $i + 1] = k1;
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
    for (i, k) in rk.iter().enumerate() {
        let d = match i {
            0 | 14 => *k,
            _ => _mm_aesimc_si128(*k),
        };
        // SAFETY: each destination is a 16-byte array; unaligned stores are allowed.
        unsafe {
            _mm_storeu_si128(out.enc[i].as_mut_ptr().cast(), *k);
            _mm_storeu_si128(out.dec[14 - i].as_mut_ptr().cast(), d);
        }
    }
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
/// writes; they are either the same pointer or do not overlap.
#[target_feature(enable = "aes,avx2,vaes")]
unsafe fn run<const ENC: bool>(keys: &Keys, t0: u128, src: *const u8, dst: *mut u8, len: usize) {
    let schedule = if ENC { &keys.enc } else { &keys.dec };
    let mut rk = [_mm256_setzero_si256(); 15];
    for (r, k) in rk.iter_mut().zip(schedule) {
        // SAFETY: `k` is a 16-byte array.
        *r = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(k.as_ptr().cast()) });
    }
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
    first.zeroize();
    for c in (0..len).step_by(CHUNK) {
        let mut x = [_mm256_setzero_si256(); 8];
        for i in 0..8 {
            // SAFETY: c + 32·i + 32 <= len (len is a multiple of CHUNK = 8·32), and
            // `src` is valid for `len` bytes.
            let v = unsafe { _mm256_loadu_si256(src.add(c + 32 * i).cast()) };
            x[i] = _mm256_xor_si256(_mm256_xor_si256(v, tw[i]), rk[0]);
        }
        for k in &rk[1..14] {
            for v in x.iter_mut() {
                *v = if ENC {
                    _mm256_aesenc_epi128(*v, *k)
                } else {
                    _mm256_aesdec_epi128(*v, *k)
                };
            }
        }
        for i in 0..8 {
            let last = if ENC {
                _mm256_aesenclast_epi128(x[i], rk[14])
            } else {
                _mm256_aesdeclast_epi128(x[i], rk[14])
            };
            // SAFETY: as for the load above, with `dst` valid for `len` bytes. When
            // `dst` is `src`, these 32 bytes were already loaded into `x[i]`.
            unsafe {
                _mm256_storeu_si256(dst.add(c + 32 * i).cast(), _mm256_xor_si256(last, tw[i]))
            };
            tw[i] = mul_alpha16(tw[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha16_in_vectors_equals_sixteen_scalar_doublings() {
        if !available() {
            eprintln!("SKIP: this CPU has no VAES/AVX2");
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
    fn key_expansion_matches_the_aes_crate() {
        use aes::cipher::{BlockCipherEncrypt, KeyInit};
        let Some(keys) = Keys::new(&[7u8; 32]) else {
            eprintln!("SKIP: this CPU has no VAES/AVX2");
            return;
        };
        // With a zero tweak on every block, one 256-byte chunk is AES-ECB of (P ^ T) ^ T;
        // compare a unit encrypted here against the aes crate block by block.
        let aes = aes::Aes256::new_from_slice(&[7u8; 32]).unwrap();
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
    }
}
