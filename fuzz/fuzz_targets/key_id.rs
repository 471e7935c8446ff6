//! `KeyId` and alias-name parsing on arbitrary strings: typed value or typed error,
//! never a panic. A key id that parses (UUID or multi-Region `mrk-…`) is in its
//! canonical lower-case form and stands for 16 bytes.
#![no_main]
use ebsim::kms::ids::{KeyRef, is_key_id, key_id_bytes, parse_key_ref};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(KeyRef::Key { id, .. }) = parse_key_ref(s) {
            assert!(is_key_id(&id), "{id}");
            assert_eq!(id, id.to_ascii_lowercase());
            assert!(key_id_bytes(&id).is_some(), "{id}");
        }
        let _ = key_id_bytes(s);
        let _ = ebsim::kms::ids::validate_alias_name(s, false);
        let _ = ebsim::home::validate_region(s);
    }
});
