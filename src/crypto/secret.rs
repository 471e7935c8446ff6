//! [`SecretBytes`]: key material that never leaves locked memory unzeroized.
//!
//! Each secret gets a page of its own, locked with `mlock` so it is never written
//! to swap, and the page is zeroized before it is unlocked and freed. Giving each
//! secret its own page is what makes `munlock` on drop safe: unlocking a page that
//! another secret still lived on would silently unlock that secret too.
//!
//! The page is found inside an owned two-page buffer (one full, aligned page always
//! lies within any two-page allocation), which keeps this module free of `unsafe`.

use std::fmt;
use std::sync::Once;
use zeroize::Zeroize;

const PAGE: usize = 4096;

/// Secret bytes (at most one page) in locked, zeroize-on-drop memory.
pub struct SecretBytes {
    buf: Box<[u8]>,
    start: usize,
    len: usize,
    _lock: Option<region::LockGuard>,
}

impl SecretBytes {
    /// The largest secret: one page.
    pub const MAX_LEN: usize = PAGE;

    /// A zero-filled secret of `len` bytes, ready to be written through [`Self::expose_mut`].
    ///
    /// # Panics
    /// If `len` is larger than one page (4096 bytes); no key in ebsim is.
    pub fn zeroed(len: usize) -> Self {
        assert!(len <= PAGE, "a secret is at most {PAGE} bytes, not {len}");
        let buf = vec![0u8; 2 * PAGE].into_boxed_slice();
        let addr = buf.as_ptr() as usize;
        let start = (PAGE - addr % PAGE) % PAGE;
        let lock = match region::lock(buf[start..].as_ptr(), PAGE) {
            Ok(guard) => Some(guard),
            Err(e) => {
                static WARN: Once = Once::new();
                WARN.call_once(|| {
                    tracing::warn!(
                        "cannot lock key memory ({e}); keys may be swapped out. \
                         Raise RLIMIT_MEMLOCK (ulimit -l) or run with CAP_IPC_LOCK."
                    )
                });
                None
            }
        };
        SecretBytes {
            buf,
            start,
            len,
            _lock: lock,
        }
    }

    /// A secret holding a copy of `bytes`. The caller remains responsible for
    /// zeroizing its own copy.
    pub fn from_slice(bytes: &[u8]) -> Self {
        let mut s = Self::zeroed(bytes.len());
        s.expose_mut().copy_from_slice(bytes);
        s
    }

    /// A fresh random secret of `len` bytes.
    pub fn random(len: usize) -> Self {
        let mut s = Self::zeroed(len);
        super::random_fill(s.expose_mut());
        s
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The secret bytes. Keep the borrow short and never copy them into ordinary memory
    /// that outlives the call.
    pub fn expose(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    pub fn expose_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }

    /// A second, independently locked copy.
    pub fn duplicate(&self) -> Self {
        Self::from_slice(self.expose())
    }

    /// Whether the page is locked in memory (false when `mlock` was refused).
    pub fn is_locked(&self) -> bool {
        self._lock.is_some()
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        // Zeroize while still locked; the LockGuard unlocks after this body runs.
        self.buf.zeroize();
    }
}

/// Page-aligned and a whole number of pages long, so its memory is its own.
#[repr(C, align(4096))]
struct PageAligned<T>(T);

/// A value (an expanded key schedule such as the one inside
/// [`crate::crypto::xts::Xts`]) on pages of its own, locked with `mlock` while it
/// lives. `T` is responsible for zeroizing itself on drop (the aes crate's `zeroize`
/// feature does, and so do ebsim's own schedules); the pages are unlocked after that.
///
/// There is deliberately no `Locked::new(value)`: a value built by the caller and
/// moved in leaves copies in the caller's stack frame, which no scrub can reach.
/// [`Locked::new_in_place`] allocates and locks the pages first, holding an empty
/// value, and the secret is written there through `&mut`; temporaries of that work
/// lie in callee frames, which it scrubs ([`super::stack::scrub`]).
pub struct Locked<T> {
    inner: Box<PageAligned<T>>,
    _lock: Option<region::LockGuard>,
}

impl<T> Locked<T> {
    /// Locks pages holding `empty` (which must hold no secret), then runs `fill` on
    /// them to write the secret in place, then scrubs the stack below this call.
    pub fn new_in_place<E>(
        empty: T,
        fill: impl FnOnce(&mut T) -> Result<(), E>,
    ) -> Result<Self, E> {
        let mut inner = Box::new(PageAligned(empty));
        let lock = region::lock(
            &*inner as *const PageAligned<T>,
            std::mem::size_of::<PageAligned<T>>(),
        )
        .ok();
        let filled = fill_in_place(&mut inner.0, fill);
        super::stack::scrub();
        filled?;
        Ok(Locked { inner, _lock: lock })
    }

    /// True if the pages are locked (false when RLIMIT_MEMLOCK is exhausted).
    pub fn is_locked(&self) -> bool {
        self._lock.is_some()
    }
}

/// Runs `fill` in a frame of its own, below [`Locked::new_in_place`]'s, so that the
/// scrub after it covers every temporary `fill` made.
#[inline(never)]
fn fill_in_place<T, E>(slot: &mut T, fill: impl FnOnce(&mut T) -> Result<(), E>) -> Result<(), E> {
    fill(slot)
}

impl<T> std::ops::Deref for Locked<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner.0
    }
}

impl<T> fmt::Debug for Locked<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Locked([REDACTED])")
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([REDACTED; {}])", self.len)
    }
}

impl PartialEq for SecretBytes {
    /// Constant-time comparison.
    fn eq(&self, other: &Self) -> bool {
        use subtle_eq::ct_eq;
        ct_eq(self.expose(), other.expose())
    }
}

mod subtle_eq {
    /// Length-revealing, content-constant-time equality.
    pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        let mut diff = 0u8;
        for (x, y) in a.iter().zip(b) {
            diff |= x ^ y;
        }
        std::hint::black_box(diff) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_lives_on_its_own_aligned_page() {
        let s = SecretBytes::random(64);
        assert_eq!(s.expose().as_ptr() as usize % PAGE, 0);
        assert_eq!(s.len(), 64);
    }

    #[test]
    fn debug_never_prints_the_bytes() {
        let s = SecretBytes::from_slice(&[0xAB; 32]);
        let text = format!("{s:?}");
        assert!(!text.contains("171") && !text.to_lowercase().contains("ab,"));
        assert_eq!(text, "SecretBytes([REDACTED; 32])");
    }

    #[test]
    fn duplicate_is_equal_and_independent() {
        let a = SecretBytes::random(32);
        let mut b = a.duplicate();
        assert_eq!(a, b);
        b.expose_mut()[0] ^= 1;
        assert_ne!(a, b);
    }
}
