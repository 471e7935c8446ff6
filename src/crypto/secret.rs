//! [`SecretBytes`]: key material that never leaves locked memory unzeroized.
//!
//! Each secret gets a page of its own, locked with `mlock` so it is never written
//! to swap, and the page is zeroized before it is unlocked and freed. Giving each
//! secret its own page is what makes `munlock` on drop safe: unlocking a page that
//! another secret still lived on would silently unlock that secret too.
//!
//! Locking and unlocking a page are system calls that also split and merge the
//! process's memory map, which made them a tenth of a KMS request's CPU time over
//! HTTP (docs/BENCHMARKS.md). So a secret's page, once zeroized, goes back to a
//! small pool of pages that stay locked and is handed to the next secret: at most
//! [`POOL_PAGES`] pages, each of them zero while it waits, none of them ever
//! holding more than the one secret it lent itself to. The pool never holds more
//! pages than were once in use at the same time, so it locks no more memory than
//! the secrets themselves did.

use std::fmt;
use std::sync::{Mutex, Once};
use zeroize::Zeroize;

const PAGE: usize = 4096;

/// Zeroized locked pages kept for the next secret.
const POOL_PAGES: usize = 32;

/// One page of its own, locked while it lives (`lock` is `None` when `mlock` was
/// refused; such a page is never pooled).
struct Page {
    buf: Box<PageAligned<[u8; PAGE]>>,
    lock: Option<region::LockGuard>,
}

static POOL: Mutex<Vec<Page>> = Mutex::new(Vec::new());

impl Page {
    /// A zero page: from the pool, or allocated and locked now.
    fn take() -> Page {
        if let Some(page) = POOL.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return page;
        }
        let buf = Box::new(PageAligned([0u8; PAGE]));
        let lock = match region::lock(buf.0.as_ptr(), PAGE) {
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
        Page { buf, lock }
    }

    /// Zeroizes the first `used` bytes (still locked; a secret is only ever
    /// given the first `len` bytes of its page, the rest stays zero), then pools
    /// the page or, past the pool's size, frees it (unlocking after the zeroize).
    fn give_back(mut self, used: usize) {
        self.buf.0[..used].zeroize();
        if self.lock.is_none() {
            return;
        }
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL_PAGES {
            pool.push(self);
        }
    }
}

/// Secret bytes (at most one page) in locked, zeroize-on-drop memory.
pub struct SecretBytes {
    /// Always `Some` but inside `drop`.
    page: Option<Page>,
    len: usize,
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
        SecretBytes {
            page: Some(Page::take()),
            len,
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

    fn page(&self) -> &Page {
        self.page.as_ref().expect("a live secret has its page")
    }

    /// The secret bytes. Keep the borrow short and never copy them into ordinary memory
    /// that outlives the call.
    pub fn expose(&self) -> &[u8] {
        &self.page().buf.0[..self.len]
    }

    pub fn expose_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self
            .page
            .as_mut()
            .expect("a live secret has its page")
            .buf
            .0[..len]
    }

    /// A second, independently locked copy.
    pub fn duplicate(&self) -> Self {
        Self::from_slice(self.expose())
    }

    /// Whether the page is locked in memory (false when `mlock` was refused).
    pub fn is_locked(&self) -> bool {
        self.page().lock.is_some()
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        if let Some(page) = self.page.take() {
            page.give_back(self.len);
        }
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
    fn a_pooled_page_comes_back_zeroed_and_locked() {
        // Fill more pages than the pool keeps, drop them, and take them again:
        // every page handed out is zero, whoever held it before.
        let held: Vec<SecretBytes> = (0..POOL_PAGES + 4)
            .map(|_| SecretBytes::from_slice(&[0x5A; PAGE]))
            .collect();
        let locked = held.iter().all(SecretBytes::is_locked);
        drop(held);
        for _ in 0..POOL_PAGES + 4 {
            let s = SecretBytes::zeroed(PAGE);
            assert!(s.expose().iter().all(|&b| b == 0));
            assert_eq!(s.expose().as_ptr() as usize % PAGE, 0);
            if locked {
                assert!(s.is_locked());
            }
        }
        assert!(POOL.lock().unwrap().len() <= POOL_PAGES);
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
