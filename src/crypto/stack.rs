//! Key material on thread stacks: scrubbed after key setup, locked and scrubbed
//! where XTS runs.
//!
//! Key schedules are built in place in locked pages ([`super::secret::Locked`]), but
//! whatever runs while keys are set up or used leaves temporaries below the stack
//! pointer: the KMS's AES-GCM blocks and the MAC key's HKDF state while a volume is
//! opened, AES key expansion, the aes crate's round keys (its VAES backend copies
//! all fifteen, broadcast, into its frame on every call), and, in unoptimized
//! builds, every intrinsic's arguments. A residue does not stay where it was left
//! either: a value later built in the same place and moved to the heap with
//! uninitialized bytes in it (a future moved into its tokio task) carries it into
//! unlocked memory. tests/key_memory.rs found exactly that. Three tools, none
//! needing `unsafe`:
//!
//! * [`scrub`] zeroizes `SCRUB_BYTES` (128 KiB) of stack just below its caller's frame,
//!   where the frames of what it called were. It runs after key setup on the same
//!   thread (`Locked::new_in_place`, `Image::open`). It cannot reach its caller's
//!   own frame, which is why no secret is ever held there by value.
//! * [`with_keys`] runs the XTS work of one call: on a thread's first call, and on
//!   any call whose stack pointer lies outside what is locked, it mlocks a window of
//!   that thread's stack below the stack pointer ([`lock_for_keys`]), so that
//!   whatever spills there cannot be swapped out; after the call it zeroizes the
//!   depth the work used. The window costs one comparison per call; the zeroizing
//!   13–22 ns per KiB, which is why callers pass the depth they measured.
//! * When a thread that locked a window exits, the window is zeroized, then
//!   unlocked (glibc keeps exited threads' stacks for reuse).
//!
//! Why not `mlockall`: it would lock every page the process ever maps (I/O buffers,
//! page-aligned pools), beyond `RLIMIT_MEMLOCK` for ordinary users, and it would
//! not remove a single copy: the issue is copies, not only swap.

use std::cell::RefCell;
use std::sync::Once;
use zeroize::Zeroize;

const PAGE: usize = 4096;

/// How far below a call to [`lock_for_keys`] the XTS code may write: 0.9 KiB for the
/// VAES engine and 4.8 KiB for the portable path in optimized builds (frame sizes),
/// 11 KiB unoptimized (the deepest local of the VAES rounds, 10.3 KiB below, plus
/// the intrinsics' own frames).
const DEPTH: usize = if cfg!(debug_assertions) {
    24 << 10
} else {
    8 << 10
};
/// A window spans this much below the stack pointer that made it, up to the end of
/// that stack pointer's page. Never further up: above a thread's stack there may be
/// another mapping, which must be neither locked nor, later, unlocked by us.
const BELOW: usize = 2 * DEPTH;
/// Windows stay this far above the end of the stack mapping, so that the scrub at
/// thread exit (frames of [`SCRUB_STEP`] bytes down to the window's bottom) stays
/// inside it.
const MARGIN: usize = 32 << 10;
/// Bytes zeroized per scrub frame.
const SCRUB_STEP: usize = 16 << 10;
/// Windows one thread may lock before giving up (each costs up to `BELOW` + a page of
/// `RLIMIT_MEMLOCK`; they overlap, and overlapping pages count once).
const MAX_WINDOWS: usize = 8;
/// What [`scrub`] clears below its caller. Before it existed, the deepest copies of
/// the key that opening a volume left on the main thread's stack lay 85 KiB below
/// the top of that stack in an unoptimized build (36 KiB optimized), so well under
/// this below `Image::open`, which sits deeper than that top.
const SCRUB_BYTES: usize = 128 << 10;

/// The address of a local in the caller's frame: near the stack pointer.
#[inline(always)]
fn stack_pointer() -> usize {
    let probe = 0u8;
    std::hint::black_box(&probe) as *const u8 as usize
}

/// Zeroizes the `SCRUB_BYTES` of stack below the caller's frame, where the
/// frames of the functions it called were. Call it after key setup, on the thread
/// that did it, from the function that called the key setup. (`zeroize` writes
/// behind an optimization barrier, so the stores are not elided.)
#[inline(never)]
pub fn scrub() {
    scrub_down_to(stack_pointer().saturating_sub(SCRUB_BYTES));
}

/// Zeroizes stack frames of [`SCRUB_STEP`] bytes, one below the other, until one
/// reaches `bottom`.
#[inline(never)]
fn scrub_down_to(bottom: usize) {
    let mut buf = [0u64; SCRUB_STEP / 8];
    buf.as_mut_slice().zeroize();
    let here = buf.as_ptr() as usize;
    if here > bottom {
        scrub_down_to(bottom);
    }
    // Keeps this frame (and `buf`) alive across the call: no tail call reusing it.
    std::hint::black_box(&buf);
}

/// The windows of this thread's stack that are locked.
struct Windows {
    /// `(low, high)` of each window; the guards unlock them.
    ranges: Vec<(usize, usize)>,
    guards: Vec<region::LockGuard>,
    /// The lowest address locked: the scrub at exit goes down to it.
    bottom: usize,
    gave_up: bool,
}

impl Drop for Windows {
    fn drop(&mut self) {
        if self.ranges.is_empty() {
            return;
        }
        // The thread is exiting: nothing below this frame is in use. Zeroize down to
        // the lowest window while it is still locked; the guards unlock after.
        if stack_pointer() > self.bottom {
            scrub_down_to(self.bottom);
        }
        self.guards.clear();
    }
}

thread_local! {
    static WINDOWS: RefCell<Windows> = const {
        RefCell::new(Windows { ranges: Vec::new(), guards: Vec::new(), bottom: usize::MAX, gave_up: false })
    };
}

/// Makes sure the stack from the caller's frame down to `DEPTH` below it is
/// mlock'ed (see the module documentation). Cheap after the first call on a thread:
/// a comparison with the windows already locked.
#[inline]
pub fn lock_for_keys() {
    let sp = stack_pointer();
    let covered = WINDOWS.with(|w| match w.try_borrow() {
        Ok(w) => w.gave_up || w.ranges.iter().any(|&(lo, hi)| lo + DEPTH <= sp && sp < hi),
        // Re-entered from the lock below (cannot happen): nothing to do.
        Err(_) => true,
    });
    if !covered {
        lock_window(sp);
    }
}

#[cold]
#[inline(never)]
fn lock_window(sp: usize) {
    // From the end of sp's page down through the read-write mappings below it (mlock
    // splits one stack mapping into several) as far as BELOW, stopping MARGIN short
    // of the guard page or unmapped gap that ends the stack.
    let hi = (sp & !(PAGE - 1)) + PAGE;
    let want_lo = sp.saturating_sub(BELOW) & !(PAGE - 1);
    let from = want_lo.saturating_sub(MARGIN);
    let mut lo = hi;
    if let Ok(regions) = region::query_range(from as *const u8, hi - from) {
        let mut rw: Vec<std::ops::Range<usize>> = regions
            .flatten()
            .filter(|r| {
                r.protection()
                    .contains(region::Protection::READ | region::Protection::WRITE)
            })
            .map(|r| r.as_range())
            .collect();
        rw.sort_by_key(|r| r.start);
        if let Some(i) = rw.iter().position(|r| r.contains(&sp)) {
            let mut bottom = rw[i].start;
            for r in rw[..i].iter().rev() {
                if r.end != bottom {
                    break;
                }
                bottom = r.start;
            }
            lo = want_lo.max(bottom.saturating_add(MARGIN));
        }
    }
    WINDOWS.with(|w| {
        let mut w = w.borrow_mut();
        if lo + DEPTH > sp {
            // Too close to the end of the stack to be worth it (cannot happen on a
            // thread that encrypts, whose stack is 2 MiB): do not try again.
            w.gave_up = true;
            return;
        }
        match region::lock(lo as *const u8, hi - lo) {
            Ok(guard) => {
                w.guards.push(guard);
                w.ranges.push((lo, hi));
                w.bottom = w.bottom.min(lo);
            }
            Err(e) => {
                static WARN: Once = Once::new();
                WARN.call_once(|| {
                    tracing::warn!(
                        "cannot lock the stack of a thread that encrypts ({e}); \
                         spilled round keys may be swapped out. Raise RLIMIT_MEMLOCK (ulimit -l) \
                         or run with CAP_IPC_LOCK."
                    )
                });
                w.gave_up = true;
            }
        }
        if w.ranges.len() >= MAX_WINDOWS {
            w.gave_up = true;
        }
    });
}

/// Runs `f`, which works with key schedules, in frames below this one, on a part of
/// the stack that is locked ([`lock_for_keys`]); then zeroizes the `DEPTH` bytes of
/// stack below this frame, where `f`'s frames were. The caller knows how deep its
/// key work goes (src/crypto/xts.rs measures it per engine).
///
/// Why zeroize after every call and not only at thread exit: anything later built
/// on the stack and copied to the heap with uninitialized bytes in it (a future
/// moved into its task, padding) carries whatever the stack held there into
/// unlocked memory. tests/key_memory.rs saw exactly that in an unoptimized build:
/// round keys from the AES intrinsics' arguments, inside a freed tokio task.
#[inline]
pub fn with_keys<const DEPTH: usize, R>(f: impl FnOnce() -> R) -> R {
    lock_for_keys();
    let r = below(f);
    scrub_keyed::<DEPTH>();
    r
}

#[inline(never)]
fn below<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[inline(never)]
fn scrub_keyed<const DEPTH: usize>() {
    let mut buf = [0u8; DEPTH];
    buf.as_mut_slice().zeroize();
    std::hint::black_box(&buf);
}

/// The windows locked on this thread, for tests.
#[cfg(any(test, feature = "test-support"))]
pub fn locked_windows() -> Vec<(usize, usize)> {
    WINDOWS.with(|w| w.borrow().ranges.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_locks_one_window_around_its_stack_pointer_and_reuses_it() {
        std::thread::spawn(|| {
            lock_for_keys();
            let sp = stack_pointer();
            let w = locked_windows();
            if w.is_empty() {
                crate::test_skip::skip("mlock refused (RLIMIT_MEMLOCK)");
                return;
            }
            assert_eq!(w.len(), 1);
            let (lo, hi) = w[0];
            assert!(lo + DEPTH <= sp && sp < hi, "{lo:#x} {sp:#x} {hi:#x}");
            lock_for_keys();
            assert_eq!(locked_windows().len(), 1);
        })
        .join()
        .unwrap();
    }

    /// Copies `secret` into a frame about 1 KiB below the caller, by value.
    #[inline(never)]
    fn leave(secret: &[u8]) {
        #[inline(never)]
        fn copy(secret: &[u8]) {
            let mut buf = [0u8; 32];
            buf.copy_from_slice(secret);
            std::hint::black_box(&mut buf);
        }
        let mut pad = [0u8; 1024];
        std::hint::black_box(&mut pad);
        copy(secret);
        std::hint::black_box(&mut pad);
    }

    #[test]
    fn what_a_callee_leaves_is_found_until_scrubbed_and_with_keys_leaves_nothing() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let secret = crate::crypto::SecretBytes::random(32);
        let needle = secret.expose().to_vec();
        let step = Arc::new(AtomicUsize::new(0));
        let sp = Arc::new(AtomicUsize::new(0));
        let t = {
            let (step, sp) = (step.clone(), sp.clone());
            let secret = secret.duplicate();
            std::thread::spawn(move || {
                sp.store(stack_pointer(), SeqCst);
                // Each stage, then wait (spinning: no deep calls) for the scan.
                let wait = |n: usize| {
                    step.store(n, SeqCst);
                    while step.load(SeqCst) == n {
                        std::hint::spin_loop();
                    }
                };
                leave(secret.expose());
                wait(1);
                scrub();
                wait(2);
                with_keys::<4096, _>(|| {
                    leave(secret.expose());
                    wait(3);
                });
                wait(4);
            })
        };
        // Copies of the secret on that thread's stack at stage `n`, and whether locked.
        let on_stack = |n: usize| -> Option<Vec<bool>> {
            while step.load(SeqCst) != n {
                std::hint::spin_loop();
            }
            let top = sp.load(SeqCst);
            let r = super::super::memscan::scan(std::process::id(), &[("secret", &needle)]);
            step.store(n + 100, SeqCst);
            let r = r.ok()?;
            Some(
                r.hits
                    .iter()
                    .filter(|h| {
                        crate::num::usize_of(h.addr) <= top
                            && crate::num::usize_of(h.addr) + (256 << 10) > top
                    })
                    .map(|h| h.locked)
                    .collect(),
            )
        };
        let Some(left) = on_stack(1) else {
            crate::test_skip::skip("cannot read this process's memory");
            for n in 2..=4 {
                on_stack(n);
            }
            t.join().unwrap();
            return;
        };
        assert!(!left.is_empty(), "the callee's copy is visible to the scan");
        assert_eq!(on_stack(2), Some(vec![]), "scrub zeroized it");
        let during = on_stack(3).unwrap();
        assert!(!during.is_empty());
        if !locked_windows_of_any_thread_refused() {
            assert!(
                during.iter().all(|&l| l),
                "inside with_keys the stack is locked"
            );
        }
        assert_eq!(on_stack(4), Some(vec![]), "with_keys zeroized what it used");
        t.join().unwrap();
    }

    /// True if mlock is refused here (RLIMIT_MEMLOCK), so locking cannot be checked.
    fn locked_windows_of_any_thread_refused() -> bool {
        let probe = [0u8; 1];
        region::lock(probe.as_ptr(), 1).is_err()
    }
}
