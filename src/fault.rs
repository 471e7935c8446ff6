//! Crash points for the crash tests and the soak runner (scripts/soak/).
//!
//! `EBSIM_FAULT=<point>` makes the process kill itself with SIGKILL when it
//! reaches `<point>`, exactly as `kill -9` or a power cut between two steps would
//! (no destructor, no cleanup); `<point>@N` when it reaches it the Nth time (points
//! inside loops). Without the variable a point costs one load of a cached value.
//! The points:
//!
//! | point | where |
//! |---|---|
//! | `create-volume:before-commit` | the new image is complete, not yet named or recorded |
//! | `delete-volume:after-rename` | the image is under its tombstone name, the record still there |
//! | `delete-volume:after-commit` | the record is gone, the tombstone not yet removed |
//! | `grow:after-set-len` | the image file is longer, the headers still say the old size |
//! | `grow:after-header-a` | header copy A has the new size, copy B the old |
//! | `modify-volume:after-header` | both headers have the new size, the record the old |
//! | `snapshot:after-blocks` | a snapshot's blocks are stored, its manifest not committed |
//! | `copy:after-blocks` | a copy's blocks are stored, its manifest not committed |
//! | `put-block:after-store` | a PutSnapshotBlock's block is stored, not yet named by its snapshot |
//! | `rekey:started` | the header names the new key (boundary 0), no unit moved yet |
//! | `rekey:after-journal` | a chunk's journal is durable, its new ciphertext not written |
//! | `rekey:after-data` | a chunk's new ciphertext is durable, the boundary not moved past it |
//! | `rekey:after-boundary` | the boundary moved past a chunk |
//! | `rekey:before-final-header` | every unit is new, the header still names both keys |
//! | `rekey:after-final-header` | the header names only the new key, the record the old |

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Dies here if `EBSIM_FAULT` names this point (and this is its Nth visit, when
/// it says `@N`).
pub fn point(name: &str) {
    static WANT: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static VISITS: AtomicU64 = AtomicU64::new(0);
    let want = WANT.get_or_init(|| {
        let v = std::env::var("EBSIM_FAULT")
            .ok()
            .filter(|v| !v.is_empty())?;
        Some(match v.rsplit_once('@') {
            Some((p, n)) => (p.to_string(), n.parse().unwrap_or(1)),
            None => (v, 1),
        })
    });
    if let Some((p, n)) = want
        && p == name
        && VISITS.fetch_add(1, Ordering::SeqCst) + 1 == *n
    {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
