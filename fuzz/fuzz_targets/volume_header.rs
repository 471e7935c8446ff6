//! The volume header parser (docs/FORMAT.md §2) on arbitrary slots: it must never
//! panic or read past the slot; what parses re-encodes to the same bytes, and random
//! bytes never authenticate.
#![no_main]
use ebsim::volume::header::{Header, MacKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = Header::parse(data) else { return };
    let key = MacKey::derive(&[0x22; 64], &parsed.header.volume_id);
    // The fuzzer does not know the key: an encrypted header it made up never verifies.
    if parsed.header.cipher == ebsim::volume::header::Cipher::AesXtsPlain64 {
        assert!(parsed.verify(Some(&key)).is_err());
    }
    // Everything the parser accepted encodes back to the same body.
    let again = parsed.header.encode(Some(&key)).expect("a parsed header encodes");
    let reparsed = Header::parse(&again).expect("re-encoded header parses");
    assert_eq!(reparsed.header, parsed.header);
    reparsed.verify(Some(&key)).expect("re-encoded header verifies");
});
