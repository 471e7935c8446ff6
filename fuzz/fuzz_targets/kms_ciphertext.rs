//! The ciphertext blob parser (docs/KMS.md §1) on arbitrary bytes: it must never
//! panic or over-read, and nothing but a blob sealed under the key opens.
#![no_main]
use ebsim::kms::ciphertext::Blob;
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 32] = [0x11; 32];

fuzz_target!(|data: &[u8]| {
    if let Ok(blob) = Blob::parse(data) {
        // Random bytes that parse must still fail authentication.
        assert!(blob.open(&KEY, &[0, 0, 0, 0]).is_err());
        let _ = (blob.key_id, blob.material_version);
    }
    // Round trip: whatever the fuzzer gives as plaintext seals and opens.
    if !data.is_empty() && data.len() <= 4096 {
        let id = uuid::Uuid::from_bytes([7; 16]);
        let sealed = ebsim::kms::ciphertext::seal(&id, 3, &KEY, b"aad", data);
        let b = Blob::parse(&sealed).expect("a sealed blob parses");
        assert_eq!(b.open(&KEY, b"aad").expect("opens").expose(), data);
    }
});
