//! The changed-block tracking file (docs/FORMAT.md §8) is read back from disk: any
//! bytes must open without a panic (a damaged file means "no base", a full next
//! snapshot), and marks made afterwards must be kept.
#![no_main]
use ebsim::volume::cbt::{BLOCK, Cbt};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("vol-0123456789abcdef0.img");
    std::fs::write(Cbt::path_for(&image), data).unwrap();
    let size = 16 * BLOCK;
    let cbt = Cbt::open(&image, size).expect("any file opens");
    let before = cbt.changes();
    assert!(before.blocks.iter().all(|b| *b < 16));
    cbt.mark(3 * BLOCK, 1).unwrap();
    let after = Cbt::open(&image, size).unwrap().changes();
    assert!(after.blocks.contains(&3));
    assert_eq!(after.base, before.base);
});
