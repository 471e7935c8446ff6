//! AWS-CLI parameter values (maps in shorthand or JSON, lists of structures, inline
//! base64 blobs, timestamps, JMESPath queries) on arbitrary strings: never a panic.
#![no_main]
use ebsim::cli::input::{self, BinaryFormat};
use ebsim::kms::model::Tag;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    // file:// and fileb:// would read the disk; the parsers behind them are what matter.
    if s.contains("file") {
        return;
    }
    let _ = input::map("p", s);
    let _ = input::structs::<Tag>("p", &[s.to_string()]);
    let _ = input::blob("p", s, BinaryFormat::Base64);
    let _ = ebsim::clock::parse_time(s);
    let _ = ebsim::cli::output::query(s, &serde_json::json!({"Keys": [{"KeyId": "k"}]}));
});
