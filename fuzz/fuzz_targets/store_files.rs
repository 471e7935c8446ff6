//! The data root's store files are read back from disk (docs/DATA-ROOT.md §2):
//! any bytes as `stores.json` and as `ec2.db` must give a store or a damaged-root
//! error — never a panic, and never a write over what was there (a damaged store
//! is not replaced by a fresh one).
#![no_main]
use ebsim::ErrorKind;
use ebsim::home::DataRoot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let cut = rest.len() / 2;
    let (registry, store) = rest.split_at(cut);
    let dir = tempfile::tempdir().unwrap();
    let root = DataRoot::open(dir.path()).unwrap();
    let region = root.region_dir("us-east-1").unwrap();
    let reg_path = dir.path().join("stores.json");
    let db_path = region.join("ec2.db");
    if flags & 1 != 0 {
        std::fs::write(&reg_path, registry).unwrap();
    }
    if flags & 2 != 0 {
        std::fs::write(&db_path, store).unwrap();
    }
    let before = (std::fs::read(&reg_path).ok(), std::fs::read(&db_path).ok());
    match ebsim::ec2::store::Store::open(&root, "us-east-1") {
        Ok(_) => {}
        Err(e) => {
            assert!(
                matches!(e.kind(), ErrorKind::Environment | ErrorKind::Internal),
                "{e}"
            );
            let after = (std::fs::read(&reg_path).ok(), std::fs::read(&db_path).ok());
            assert_eq!(before, after, "a refused store was changed: {e}");
        }
    }
});
