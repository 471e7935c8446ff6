//! The volume header (docs/FORMAT.md §2): encoding, a bounds-checked parser that
//! cannot read past its 4096-byte slot, feature bits, and the MAC.

use crate::crypto::SecretBytes;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::fmt;

/// `EBSIMVOL`.
pub const MAGIC: [u8; 8] = *b"EBSIMVOL";
pub const VERSION: u16 = 1;
/// Bytes per header slot; copy A is at 0, copy B at `SLOT`.
pub const SLOT: usize = 4096;
/// Where the data area starts.
pub const DATA_OFFSET: u64 = 1 << 20;
/// Bytes per data unit (one XTS tweak each).
pub const DATA_UNIT: u64 = 4096;
/// [`DATA_UNIT`] as the header's 32-bit field holds it.
const DATA_UNIT_U32: u32 = 4096;
const _: () = assert!(DATA_UNIT_U32 as u64 == DATA_UNIT);
const FIXED: usize = 72;
const FIELDS: usize = 6;
const MAC_LEN: usize = 32;
/// The smallest possible header: fixed part, six empty fields, MAC.
pub const MIN_LEN: usize = FIXED + 2 * FIELDS + MAC_LEN;

/// Incompat feature: an all-zero stored unit reads as zeros (FORMAT.md §4).
pub const ZERO_UNIT_IS_HOLE: u64 = 1;
/// Incompat feature: a re-key is in progress (FORMAT.md §9); the header carries the
/// new key and the boundary below which units are under it.
pub const REKEY: u64 = 1 << 1;
/// Incompat features this build understands.
pub const SUPPORTED_INCOMPAT: u64 = ZERO_UNIT_IS_HOLE | REKEY;

const MAC_SALT: &[u8] = b"ebsim volume header v1";

/// How data units are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    /// Plaintext (an unencrypted volume).
    None,
    /// AES-256-XTS, plain64 tweak over 4096-byte units, 512-bit key.
    AesXtsPlain64,
}

impl Cipher {
    pub fn name(self) -> &'static str {
        match self {
            Cipher::None => "none",
            Cipher::AesXtsPlain64 => "aes-xts-plain64",
        }
    }
}

/// The fields of one header (FORMAT.md §2).
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    pub sequence: u64,
    pub incompat_features: u64,
    pub compat_features: u64,
    pub size: u64,
    pub cipher: Cipher,
    /// Milliseconds since the Unix epoch.
    pub created_ms: i64,
    pub volume_id: String,
    pub region: String,
    pub kms_key_arn: String,
    /// Canonical JSON, e.g. `{"aws:ebs:id":"vol-…"}`.
    pub encryption_context: String,
    pub source_snapshot_id: String,
    /// The CiphertextBlob KMS returned for the data key.
    pub wrapped_key: Vec<u8>,
    /// A re-key in progress (the REKEY feature).
    pub rekey: Option<Rekey>,
}

/// The state of a re-key in progress (FORMAT.md §9).
#[derive(Clone, PartialEq, Eq)]
pub struct Rekey {
    /// The key the volume is moving to.
    pub kms_key_arn: String,
    /// The new data key, wrapped under it with the volume's context.
    pub wrapped_key: Vec<u8>,
    /// Units below this index are already under the new data key.
    pub boundary: u64,
}

impl fmt::Debug for Rekey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rekey")
            .field("kms_key_arn", &self.kms_key_arn)
            .field("boundary", &self.boundary)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Header")
            .field("sequence", &self.sequence)
            .field("volume_id", &self.volume_id)
            .field("size", &self.size)
            .field("cipher", &self.cipher.name())
            .field("kms_key_arn", &self.kms_key_arn)
            .field(
                "wrapped_key",
                &format_args!("<{} bytes>", self.wrapped_key.len()),
            )
            .finish_non_exhaustive()
    }
}

/// Why one header copy was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Structure: magic, version, lengths, reserved fields, field values.
    Malformed(String),
    /// Incompat feature bits this build does not know.
    Unsupported(u64),
    /// The MAC (or checksum) does not match.
    Authentication,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Malformed(m) => f.write_str(m),
            HeaderError::Unsupported(bits) => write!(
                f,
                "the image uses incompatible features {bits:#x} that this ebsim does not support \
                 (supported: {SUPPORTED_INCOMPAT:#x})"
            ),
            HeaderError::Authentication => {
                f.write_str("header authentication failed (wrong data key or tampered header)")
            }
        }
    }
}

/// The key that authenticates headers: HKDF-SHA-256 of the data key (FORMAT.md §2),
/// written by HKDF straight into a locked page (HKDF's and HMAC's working state
/// stays in callee frames, scrubbed after the image is opened).
pub struct MacKey(SecretBytes);

impl MacKey {
    pub fn derive(data_key: &[u8], volume_id: &str) -> Self {
        let mut k = SecretBytes::zeroed(32);
        crate::crypto::aead::derive_key_into(
            data_key,
            MAC_SALT,
            &[volume_id.as_bytes()],
            k.expose_mut(),
        );
        MacKey(k)
    }
}

fn mac(cipher: Cipher, key: Option<&MacKey>, bytes: &[u8]) -> Result<[u8; MAC_LEN], HeaderError> {
    match (cipher, key) {
        (Cipher::None, _) => Ok(Sha256::digest(bytes).into()),
        (Cipher::AesXtsPlain64, Some(k)) => {
            let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(k.0.expose())
                .expect("HMAC takes any key length");
            m.update(bytes);
            Ok(m.finalize().into_bytes().into())
        }
        (Cipher::AesXtsPlain64, None) => Err(HeaderError::Authentication),
    }
}

impl Header {
    /// The encryption context an EC2 volume's data key is bound to
    /// ([`VolumeOwner::header_context`](super::owner::VolumeOwner::header_context)
    /// for any owner).
    pub fn volume_context(volume_id: &str) -> String {
        super::owner::VolumeOwner::EC2.header_context(volume_id)
    }

    /// Encodes the header with its MAC; `key` is required for an encrypted volume.
    /// The result is at most [`SLOT`] bytes (longer inputs are refused).
    pub fn encode(&self, key: Option<&MacKey>) -> Result<Vec<u8>, HeaderError> {
        let fields: [&[u8]; FIELDS] = [
            self.volume_id.as_bytes(),
            self.region.as_bytes(),
            self.kms_key_arn.as_bytes(),
            self.encryption_context.as_bytes(),
            self.source_snapshot_id.as_bytes(),
            &self.wrapped_key,
        ];
        let extra = self
            .rekey
            .as_ref()
            .map(|r| 2 + r.kms_key_arn.len() + 2 + r.wrapped_key.len() + 8)
            .unwrap_or(0);
        let len = FIXED + fields.iter().map(|f| 2 + f.len()).sum::<usize>() + extra + MAC_LEN;
        if len > SLOT {
            return Err(HeaderError::Malformed(format!(
                "the header would be {len} bytes; at most {SLOT} fit"
            )));
        }
        // Every length below is at most SLOT (checked above), so fits 16 bits.
        let u16_len = |n: usize| u16::try_from(n).expect("header lengths are bounded by SLOT");
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&u16_len(len).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.sequence.to_le_bytes());
        let incompat = if self.rekey.is_some() {
            self.incompat_features | REKEY
        } else {
            self.incompat_features & !REKEY
        };
        out.extend_from_slice(&incompat.to_le_bytes());
        out.extend_from_slice(&self.compat_features.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&DATA_OFFSET.to_le_bytes());
        out.extend_from_slice(&DATA_UNIT_U32.to_le_bytes());
        let (c, m) = match self.cipher {
            Cipher::None => (0u8, 0u8),
            Cipher::AesXtsPlain64 => (1, 1),
        };
        out.extend_from_slice(&[c, m, 0, 0]);
        out.extend_from_slice(&self.created_ms.to_le_bytes());
        debug_assert_eq!(out.len(), FIXED);
        for f in fields {
            out.extend_from_slice(&u16_len(f.len()).to_le_bytes());
            out.extend_from_slice(f);
        }
        if let Some(r) = &self.rekey {
            for f in [r.kms_key_arn.as_bytes(), &r.wrapped_key] {
                out.extend_from_slice(&u16_len(f.len()).to_le_bytes());
                out.extend_from_slice(f);
            }
            out.extend_from_slice(&r.boundary.to_le_bytes());
        }
        let tag = mac(self.cipher, key, &out)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Parses one slot's structure and feature bits. The MAC is checked by
    /// [`Parsed::verify`], which needs the data key.
    pub fn parse(slot: &[u8]) -> Result<Parsed, HeaderError> {
        let bad = |m: &str| Err(HeaderError::Malformed(m.to_string()));
        let slot = &slot[..slot.len().min(SLOT)];
        if slot.len() < MIN_LEN {
            return bad("shorter than a header");
        }
        if slot[..8] != MAGIC {
            return bad("bad magic (not an ebsim volume header)");
        }
        let u16_at = |o: usize| u16::from_le_bytes([slot[o], slot[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(slot[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(slot[o..o + 8].try_into().expect("8 bytes"));
        let version = u16_at(8);
        if version != VERSION {
            return Err(HeaderError::Malformed(format!(
                "format version {version} (this ebsim reads version {VERSION})"
            )));
        }
        let len = usize::from(u16_at(10));
        if !(MIN_LEN..=slot.len()).contains(&len) {
            return Err(HeaderError::Malformed(format!(
                "header length {len} is outside {MIN_LEN}..={SLOT}"
            )));
        }
        if u32_at(12) != 0 || slot[62] != 0 || slot[63] != 0 {
            return bad("reserved header bytes are not zero");
        }
        let incompat = u64_at(24);
        let unknown = incompat & !SUPPORTED_INCOMPAT;
        if unknown != 0 {
            return Err(HeaderError::Unsupported(unknown));
        }
        let body_end = len - MAC_LEN;
        let mut pos = FIXED;
        let count = if incompat & REKEY != 0 {
            FIELDS + 2
        } else {
            FIELDS
        };
        let mut fields: Vec<&[u8]> = Vec::with_capacity(count);
        for _ in 0..count {
            if pos + 2 > body_end {
                return bad("a field length runs past the header");
            }
            let n = usize::from(u16_at(pos));
            pos += 2;
            if pos + n > body_end {
                return bad("a field runs past the header");
            }
            fields.push(&slot[pos..pos + n]);
            pos += n;
        }
        let boundary = if incompat & REKEY != 0 {
            if pos + 8 > body_end {
                return bad("the re-key boundary runs past the header");
            }
            pos += 8;
            Some(u64_at(pos - 8))
        } else {
            None
        };
        if pos != body_end {
            return bad("bytes left between the last field and the MAC");
        }
        let cipher = match (slot[60], slot[61]) {
            (0, 0) => Cipher::None,
            (1, 1) => Cipher::AesXtsPlain64,
            (c, m) => {
                return Err(HeaderError::Malformed(format!(
                    "unknown cipher {c} / MAC {m} combination"
                )));
            }
        };
        if u32_at(56) as u64 != DATA_UNIT {
            return bad("data unit is not 4096 bytes");
        }
        if u64_at(48) != DATA_OFFSET {
            return bad("data offset is not 1 MiB");
        }
        let size = u64_at(40);
        if size == 0 || !size.is_multiple_of(DATA_UNIT) {
            return Err(HeaderError::Malformed(format!(
                "size {size} is not a positive multiple of 4096"
            )));
        }
        let text = |i: usize, name: &str| {
            std::str::from_utf8(fields[i])
                .map(str::to_string)
                .map_err(|_| HeaderError::Malformed(format!("{name} is not UTF-8")))
        };
        let header = Header {
            sequence: u64_at(16),
            incompat_features: u64_at(24),
            compat_features: u64_at(32),
            size,
            cipher,
            created_ms: i64::from_le_bytes(slot[64..72].try_into().expect("8 bytes")),
            volume_id: text(0, "volume id")?,
            region: text(1, "region")?,
            kms_key_arn: text(2, "KMS key ARN")?,
            encryption_context: text(3, "encryption context")?,
            source_snapshot_id: text(4, "source snapshot id")?,
            wrapped_key: fields[5].to_vec(),
            rekey: match boundary {
                Some(b) => Some(Rekey {
                    kms_key_arn: text(6, "new KMS key ARN")?,
                    wrapped_key: fields[7].to_vec(),
                    boundary: b,
                }),
                None => None,
            },
        };
        if !header.volume_id.starts_with("vol-") {
            return bad("the volume id does not start with vol-");
        }
        let keyed = [
            header.kms_key_arn.is_empty(),
            header.encryption_context.is_empty(),
            header.wrapped_key.is_empty(),
        ];
        let consistent = match cipher {
            Cipher::None => keyed.iter().all(|e| *e),
            Cipher::AesXtsPlain64 => keyed.iter().all(|e| !*e),
        };
        if !consistent {
            return bad("key fields do not match the cipher");
        }
        if header.rekey.is_some() && header.cipher != Cipher::AesXtsPlain64 {
            return bad("a re-key needs an encrypted volume");
        }
        if header
            .rekey
            .as_ref()
            .is_some_and(|r| r.boundary > header.size / DATA_UNIT)
        {
            return bad("the re-key boundary is past the end of the volume");
        }
        let mut tag = [0u8; MAC_LEN];
        tag.copy_from_slice(&slot[body_end..len]);
        Ok(Parsed {
            header,
            body: slot[..body_end].to_vec(),
            tag,
        })
    }
}

/// A structurally valid header copy whose MAC is not yet checked.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub header: Header,
    body: Vec<u8>,
    tag: [u8; MAC_LEN],
}

impl Parsed {
    /// Checks the MAC (HMAC under `key` for encrypted volumes, the checksum otherwise).
    pub fn verify(&self, key: Option<&MacKey>) -> Result<(), HeaderError> {
        match (self.header.cipher, key) {
            (Cipher::AesXtsPlain64, Some(k)) => {
                let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(k.0.expose())
                    .expect("HMAC takes any key length");
                m.update(&self.body);
                // Constant-time comparison.
                m.verify_slice(&self.tag)
                    .map_err(|_| HeaderError::Authentication)
            }
            (cipher, key) => {
                if mac(cipher, key, &self.body)? == self.tag {
                    Ok(())
                } else {
                    Err(HeaderError::Authentication)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(cipher: Cipher) -> Header {
        let enc = cipher == Cipher::AesXtsPlain64;
        Header {
            sequence: 3,
            incompat_features: ZERO_UNIT_IS_HOLE,
            compat_features: 0,
            size: 1 << 30,
            cipher,
            created_ms: 1_700_000_000_123,
            volume_id: "vol-0123456789abcdef0".into(),
            region: "us-east-1".into(),
            kms_key_arn: if enc {
                "arn:aws:kms:us-east-1:111122223333:key/k".into()
            } else {
                String::new()
            },
            encryption_context: if enc {
                Header::volume_context("vol-0123456789abcdef0")
            } else {
                String::new()
            },
            source_snapshot_id: String::new(),
            wrapped_key: if enc { vec![9; 150] } else { Vec::new() },
            rekey: None,
        }
    }

    #[test]
    fn round_trips_and_authenticates() {
        let key = MacKey::derive(&[5u8; 64], "vol-0123456789abcdef0");
        for cipher in [Cipher::None, Cipher::AesXtsPlain64] {
            let h = sample(cipher);
            let bytes = h.encode(Some(&key)).unwrap();
            let p = Header::parse(&bytes).unwrap();
            assert_eq!(p.header, h);
            p.verify(Some(&key)).unwrap();
        }
        let enc = sample(Cipher::AesXtsPlain64).encode(Some(&key)).unwrap();
        let other = MacKey::derive(&[6u8; 64], "vol-0123456789abcdef0");
        assert_eq!(
            Header::parse(&enc).unwrap().verify(Some(&other)),
            Err(HeaderError::Authentication)
        );
        let same_key_other_volume = MacKey::derive(&[5u8; 64], "vol-0123456789abcdef1");
        assert!(
            Header::parse(&enc)
                .unwrap()
                .verify(Some(&same_key_other_volume))
                .is_err()
        );
    }

    #[test]
    fn a_rekey_in_progress_round_trips() {
        let key = MacKey::derive(&[5u8; 64], "vol-0123456789abcdef0");
        let mut h = sample(Cipher::AesXtsPlain64);
        h.rekey = Some(Rekey {
            kms_key_arn: "arn:aws:kms:us-east-1:111122223333:key/new".into(),
            wrapped_key: vec![4; 160],
            boundary: 1234,
        });
        let p = Header::parse(&h.encode(Some(&key)).unwrap()).unwrap();
        assert_eq!(p.header.rekey, h.rekey);
        assert_eq!(p.header.incompat_features & REKEY, REKEY);
        p.verify(Some(&key)).unwrap();
        h.rekey = None;
        let p = Header::parse(&h.encode(Some(&key)).unwrap()).unwrap();
        assert_eq!(p.header.incompat_features & REKEY, 0);
    }

    #[test]
    fn every_single_bit_flip_is_refused() {
        let key = MacKey::derive(&[5u8; 64], "vol-0123456789abcdef0");
        let good = sample(Cipher::AesXtsPlain64).encode(Some(&key)).unwrap();
        for bit in 0..good.len() * 8 {
            let mut b = good.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let ok = Header::parse(&b).and_then(|p| p.verify(Some(&key)));
            assert!(ok.is_err(), "bit {bit} flipped and still accepted");
        }
    }

    #[test]
    fn unknown_incompat_bits_are_refused_and_compat_bits_kept() {
        let key = MacKey::derive(&[5u8; 64], "vol-0123456789abcdef0");
        let mut h = sample(Cipher::AesXtsPlain64);
        h.incompat_features |= 0x10;
        let bytes = h.encode(Some(&key)).unwrap();
        assert_eq!(
            Header::parse(&bytes).unwrap_err(),
            HeaderError::Unsupported(0x10)
        );
        h.incompat_features = ZERO_UNIT_IS_HOLE;
        h.compat_features = 0x8000;
        let p = Header::parse(&h.encode(Some(&key)).unwrap()).unwrap();
        assert_eq!(p.header.compat_features, 0x8000);
    }

    #[test]
    fn parser_never_reads_past_the_slot() {
        let key = MacKey::derive(&[5u8; 64], "vol-0123456789abcdef0");
        let good = sample(Cipher::AesXtsPlain64).encode(Some(&key)).unwrap();
        for cut in 0..good.len() {
            assert!(Header::parse(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = good.clone();
        long[10..12].copy_from_slice(&4096u16.to_le_bytes());
        assert!(Header::parse(&long).is_err());
        assert!(Header::parse(&[0u8; 0]).is_err());
    }
}
