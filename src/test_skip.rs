//! Unit tests that cannot run on this machine (no VAES, no `mlock`, no
//! `/proc/self/mem`) say so here, as the integration tests' `tests/common::skip`
//! does: a line in the target's `tmp/skipped-tests.txt`, which `scripts/test.sh`
//! counts as skipped rather than passed. Built only for `cargo test`.

/// Records the running test as skipped because of `why`.
pub(crate) fn skip(why: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_string();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tmp");
    let _ = std::fs::create_dir_all(&dir);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("skipped-tests.txt"))
    {
        use std::io::Write;
        // One write of the whole line: tests skipping at once must not interleave.
        let _ = f.write_all(format!("{test}\t{why}\n").as_bytes());
    }
}
