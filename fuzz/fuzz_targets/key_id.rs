//! `KeyId` and alias-name parsing on arbitrary strings: typed value or typed error,
//! never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = ebsim::kms::ids::parse_key_ref(s);
        let _ = ebsim::kms::ids::validate_alias_name(s, false);
        let _ = ebsim::home::validate_region(s);
    }
});
