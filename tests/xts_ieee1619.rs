//! IEEE Std 1619-2007 Annex B, XTS-AES-256 vectors 10–14 (512-byte data units,
//! sequence numbers 0xff … 0xffffffffff), read from `tests/vectors/`.

use ebsim::crypto::xts::Xts;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn ieee_1619_xts_aes_256_vectors() {
    let text = include_str!("vectors/ieee1619_xts_aes256.txt");
    let mut key = None;
    let mut seen = 0;
    let plain: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["key", k] => key = Some(Xts::new(&unhex(k)).unwrap()),
            [n, seq, ct] => {
                let xts = key.as_ref().expect("key line first");
                let seq = u128::from_str_radix(seq, 16).unwrap();
                let mut buf = plain.clone();
                xts.encrypt_unit(seq, &mut buf).unwrap();
                assert_eq!(buf, unhex(ct), "vector {n}: ciphertext");
                xts.decrypt_unit(seq, &mut buf).unwrap();
                assert_eq!(buf, plain, "vector {n}: plaintext");
                seen += 1;
            }
            other => panic!("bad vector line {other:?}"),
        }
    }
    assert_eq!(seen, 5);
}

#[test]
fn a_4096_byte_unit_through_encrypt_unit_equals_the_volume_path() {
    let key: Vec<u8> = (0..64u8).collect();
    let xts = Xts::new(&key).unwrap();
    let plain = ebsim::crypto::random_bytes(4096 * 3);
    let mut whole = plain.clone();
    xts.encrypt(41, &mut whole).unwrap();
    for (i, unit) in plain.chunks(4096).enumerate() {
        let mut one = unit.to_vec();
        xts.encrypt_unit(41 + i as u128, &mut one).unwrap();
        assert_eq!(one, whole[i * 4096..(i + 1) * 4096]);
    }
    for bad in [0usize, 15, 4097, 8192] {
        let mut b = vec![0u8; bad];
        assert!(xts.encrypt_unit(0, &mut b).is_err(), "{bad} bytes");
    }
}
