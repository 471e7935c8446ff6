//! The batched XTS engine against an independent implementation: OpenSSL's EVP
//! `aes-256-xts`, driven through pyca/cryptography (`openssl enc` refuses XTS),
//! with the tweak set to the little-endian unit index (plain64).

mod common;

use ebsim::crypto::xts::{DATA_UNIT, Xts};
use std::process::Command;

const SCRIPT: &str = r#"
import sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
key, tweak, src, dst = bytes.fromhex(sys.argv[1]), bytes.fromhex(sys.argv[2]), sys.argv[3], sys.argv[4]
enc = Cipher(algorithms.AES(key), modes.XTS(tweak)).encryptor()
open(dst, "wb").write(enc.update(open(src, "rb").read()) + enc.finalize())
"#;

#[test]
fn batched_xts_equals_openssl_on_random_units() {
    let probe = Command::new("python3")
        .args(["-c", "import cryptography"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        common::skip(
            "python3 with pyca/cryptography is not installed (scripts/test.sh installs it)",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = ebsim::crypto::random_bytes(64);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let xts = Xts::new(&key).unwrap();
    for unit in [0u64, 1, 255, 256, 65_537, 1 << 33, u64::MAX] {
        let plain = ebsim::crypto::random_bytes(DATA_UNIT);
        let input = dir.path().join("in");
        let output = dir.path().join("out");
        std::fs::write(&input, &plain).unwrap();
        let tweak = hex(&u128::from(unit).to_le_bytes());
        let status = Command::new("python3")
            .args(["-c", SCRIPT, &hex(&key), &tweak])
            .arg(&input)
            .arg(&output)
            .status()
            .unwrap();
        assert!(status.success());
        let theirs = std::fs::read(&output).unwrap();
        let mut ours = plain.clone();
        xts.encrypt(unit, &mut ours).unwrap();
        assert_eq!(ours, theirs, "unit {unit}");
    }
}
