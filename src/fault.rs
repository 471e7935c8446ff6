//! Crash points for the crash tests and the soak runner (scripts/soak/).
//!
//! `EBSIM_FAULT=<point>` makes the process kill itself with SIGKILL when it
//! reaches `<point>`, exactly as `kill -9` or a power cut between two steps would
//! (no destructor, no cleanup). Without the variable a point costs one load of a
//! cached value. The points:
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

use std::sync::OnceLock;

/// Dies here if `EBSIM_FAULT` names this point.
pub fn point(name: &str) {
    static WANT: OnceLock<Option<String>> = OnceLock::new();
    let want = WANT.get_or_init(|| std::env::var("EBSIM_FAULT").ok().filter(|v| !v.is_empty()));
    if want.as_deref() == Some(name) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
