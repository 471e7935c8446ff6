//! What the KMS stores: keys with their backing-key versions, and aliases.
//! These records are serialized to JSON and sealed under the root key by
//! [`super::store`]; they never reach disk in the clear.
//!
//! Stored records outlive the code that wrote them: a field added to a record
//! carries a serde default that means exactly what records without it meant (a
//! key record without `key_spec` is a SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT,
//! single-Region key), and tests below load the older shapes.

use crate::clock::Timestamp;
use crate::crypto::SecretBytes;
use serde::{Deserialize, Serialize};

pub use super::spec::{KeySpec, KeyUsage, MultiRegionKeyType, Origin};

/// `KeyState` as AWS names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyState {
    Enabled,
    Disabled,
    PendingDeletion,
    PendingImport,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Enabled => "Enabled",
            KeyState::Disabled => "Disabled",
            KeyState::PendingDeletion => "PendingDeletion",
            KeyState::PendingImport => "PendingImport",
        }
    }
}

/// `KeyManager`: who manages the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum KeyManager {
    Customer,
    Aws,
}

/// How a backing key came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RotationType {
    Automatic,
    OnDemand,
}

/// One version of a key's key material.
#[derive(Debug, Serialize, Deserialize)]
pub struct KeyMaterial {
    /// `KeyMaterialId`: 64 hex digits, random (never derived from the material).
    pub id: String,
    pub created: Timestamp,
    /// None for the material the key was created with.
    pub rotation: Option<RotationType>,
    pub secret: KeySecret,
}

/// The secret of one key-material version, by kind of key. Stored as base64 text
/// for a symmetric backing key (the shape every record has had), and as an object
/// `{"kind": …, "bytes": …}` for the kinds to come (HMAC keys, asymmetric private
/// keys), so a record never has to guess what its bytes are.
#[derive(Debug)]
pub enum KeySecret {
    /// A 256-bit AES backing key of a SYMMETRIC_DEFAULT key (AWS's HSM backing key).
    Symmetric(SecretBytes),
}

impl KeySecret {
    /// The name of this kind in the object form.
    pub fn kind(&self) -> &'static str {
        match self {
            KeySecret::Symmetric(_) => "SYMMETRIC",
        }
    }

    /// The backing key of a symmetric encryption key.
    pub fn symmetric(&self) -> Option<&SecretBytes> {
        match self {
            KeySecret::Symmetric(s) => Some(s),
        }
    }

    /// The raw bytes, whatever the kind (for scans that look for leaked secrets).
    pub fn expose(&self) -> &[u8] {
        match self {
            KeySecret::Symmetric(s) => s.expose(),
        }
    }

    /// A copy in new locked pages.
    pub fn duplicate(&self) -> KeySecret {
        match self {
            KeySecret::Symmetric(s) => KeySecret::Symmetric(s.duplicate()),
        }
    }

    /// Whether this is key material a key of `spec` can hold.
    pub fn fits(&self, spec: KeySpec) -> bool {
        match self {
            KeySecret::Symmetric(s) => spec == KeySpec::SymmetricDefault && s.expose().len() == 32,
        }
    }
}

/// Multi-Region settings of a key (None on single-Region keys, which are all that
/// ebsim creates today). ARNs follow from the regions: every key of a multi-Region
/// key has the same `mrk-` id and account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MultiRegionConfig {
    pub key_type: MultiRegionKeyType,
    /// The region of the primary key (this key's region if it is the primary).
    pub primary_region: String,
    /// The regions of the replicas.
    pub replica_regions: Vec<String>,
}

/// Automatic-rotation settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Rotation {
    pub enabled: bool,
    pub period_days: u32,
    /// When the next automatic rotation is due (None while disabled).
    pub next: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    pub tag_key: String,
    pub tag_value: String,
}

/// A KMS key.
#[derive(Debug, Serialize, Deserialize)]
pub struct KeyRecord {
    pub key_id: String,
    pub arn: String,
    pub account_id: String,
    pub creation_date: Timestamp,
    pub description: String,
    pub state: KeyState,
    pub manager: KeyManager,
    pub origin: Origin,
    /// `KeySpec`. Records written before key specs existed are SYMMETRIC_DEFAULT.
    #[serde(default)]
    pub key_spec: KeySpec,
    /// `KeyUsage`. Records written before key usages existed are ENCRYPT_DECRYPT.
    #[serde(default)]
    pub key_usage: KeyUsage,
    /// `MultiRegion`: true for the primary and the replicas of a multi-Region key
    /// (then `multi_region_config` says which this is).
    #[serde(default)]
    pub multi_region: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_region_config: Option<MultiRegionConfig>,
    /// For AWS managed keys, the service that owns it (`ebs`, `rds`, …).
    pub service: Option<String>,
    pub deletion_date: Option<Timestamp>,
    pub pending_window_days: Option<u32>,
    pub policy: String,
    pub tags: Vec<Tag>,
    pub rotation: Rotation,
    /// Every backing key the key ever had; the last is current.
    pub materials: Vec<KeyMaterial>,
    /// How many times RotateKeyOnDemand ran (AWS limits it per key).
    pub on_demand_rotations: u32,
    /// An AWS owned key: used by an AWS service for its own purposes, invisible to
    /// the account (never listed, not describable, not in the account's audit log,
    /// outside its quotas).
    #[serde(default)]
    pub aws_owned: bool,
    /// The key policy, parsed once per loaded record.
    #[serde(skip)]
    pub parsed_policy: std::sync::OnceLock<Option<std::sync::Arc<crate::policy::PolicyDocument>>>,
}

impl KeyRecord {
    pub fn current_material(&self) -> Option<(u32, &KeyMaterial)> {
        let v = self.materials.len().checked_sub(1)?;
        Some((u32::try_from(v).ok()?, &self.materials[v]))
    }

    /// The key policy as a document (None only if a stored policy no longer parses,
    /// which then allows nothing).
    pub fn policy_document(&self) -> Option<std::sync::Arc<crate::policy::PolicyDocument>> {
        self.parsed_policy
            .get_or_init(|| {
                crate::policy::parse(&self.policy, crate::policy::PolicyKind::Key)
                    .ok()
                    .map(std::sync::Arc::new)
            })
            .clone()
    }

    /// The 16 bytes of the key id (a UUID's, or the hex digits of an `mrk-` id);
    /// None only for a record whose id is neither, which no code writes.
    pub fn key_id_bytes(&self) -> Option<[u8; 16]> {
        super::ids::key_id_bytes(&self.key_id)
    }

    /// A copy for copy-on-write updates (the secrets are duplicated into new locked pages).
    pub fn duplicate(&self) -> KeyRecord {
        KeyRecord {
            key_id: self.key_id.clone(),
            arn: self.arn.clone(),
            account_id: self.account_id.clone(),
            creation_date: self.creation_date,
            description: self.description.clone(),
            state: self.state,
            manager: self.manager,
            origin: self.origin,
            key_spec: self.key_spec,
            key_usage: self.key_usage,
            multi_region: self.multi_region,
            multi_region_config: self.multi_region_config.clone(),
            service: self.service.clone(),
            deletion_date: self.deletion_date,
            pending_window_days: self.pending_window_days,
            policy: self.policy.clone(),
            tags: self.tags.clone(),
            rotation: self.rotation.clone(),
            materials: self
                .materials
                .iter()
                .map(|m| KeyMaterial {
                    id: m.id.clone(),
                    created: m.created,
                    rotation: m.rotation,
                    secret: m.secret.duplicate(),
                })
                .collect(),
            on_demand_rotations: self.on_demand_rotations,
            aws_owned: self.aws_owned,
            parsed_policy: Default::default(),
        }
    }
}

/// A grant: permission for one principal to use one key for some operations.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GrantRecord {
    /// 64 hex digits.
    pub grant_id: String,
    pub key_id: String,
    pub name: Option<String>,
    pub creation_date: Timestamp,
    pub grantee_principal: String,
    pub retiring_principal: Option<String>,
    /// `arn:aws:iam::<account>:root` of the account that created it.
    pub issuing_account: String,
    pub operations: Vec<String>,
    pub constraints: Option<crate::kms::api::GrantConstraints>,
    /// Random part of the grant token (tokens are not secret; they name the grant).
    pub token_nonce: String,
}

/// An alias: a friendly name for one key in one region.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AliasRecord {
    pub name: String,
    pub target_key_id: String,
    pub creation_date: Timestamp,
    pub last_updated_date: Timestamp,
}

/// Serde for secrets inside sealed records: base64 text in buffers the store
/// zeroizes.
mod secret_serde {
    use super::KeySecret;
    use crate::crypto::SecretBytes;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::de::{self, MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::fmt;
    use zeroize::Zeroizing;

    /// Longest secret a record may hold (an RSA-4096 private key in PKCS#8 DER is
    /// about 2,400 bytes).
    const MAX_SECRET: usize = 4096;

    fn decode<E: de::Error>(text: &str) -> Result<SecretBytes, E> {
        let bytes = Zeroizing::new(STANDARD.decode(text.as_bytes()).map_err(E::custom)?);
        if bytes.len() > MAX_SECRET {
            return Err(E::custom("key material too long"));
        }
        Ok(SecretBytes::from_slice(&bytes))
    }

    impl Serialize for KeySecret {
        fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
            let text = Zeroizing::new(STANDARD.encode(self.expose()));
            match self {
                // The shape of every record written before kinds existed.
                KeySecret::Symmetric(_) => ser.serialize_str(&text),
                // The object form, for the kinds to come.
                #[allow(unreachable_patterns)]
                _ => {
                    let mut m = ser.serialize_map(Some(2))?;
                    m.serialize_entry("kind", self.kind())?;
                    m.serialize_entry("bytes", text.as_str())?;
                    m.end()
                }
            }
        }
    }

    impl<'de> Deserialize<'de> for KeySecret {
        fn deserialize<D: Deserializer<'de>>(de: D) -> Result<KeySecret, D::Error> {
            de.deserialize_any(SecretVisitor)
        }
    }

    struct SecretVisitor;

    impl<'de> Visitor<'de> for SecretVisitor {
        type Value = KeySecret;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("base64 text, or {\"kind\", \"bytes\"}")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<KeySecret, E> {
            Ok(KeySecret::Symmetric(decode(text)?))
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeySecret, A::Error> {
            let mut kind: Option<String> = None;
            let mut bytes: Option<SecretBytes> = None;
            while let Some(name) = map.next_key::<String>()? {
                match name.as_str() {
                    "kind" => kind = Some(map.next_value()?),
                    "bytes" => {
                        let text = Zeroizing::new(map.next_value::<String>()?);
                        bytes = Some(decode(&text)?);
                    }
                    other => return Err(de::Error::unknown_field(other, &["kind", "bytes"])),
                }
            }
            let kind = kind.ok_or_else(|| de::Error::missing_field("kind"))?;
            let bytes = bytes.ok_or_else(|| de::Error::missing_field("bytes"))?;
            match kind.as_str() {
                "SYMMETRIC" => Ok(KeySecret::Symmetric(bytes)),
                other => Err(de::Error::custom(format!(
                    "key material of kind {other} is not known to this version of ebsim"
                ))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key record as ebsim wrote it before key specs, usages and multi-Region
    /// fields existed (the shape of `KeyRecord` at commit d73ad35), one backing key
    /// per version as base64 text.
    const OLD_RECORD: &str = r#"{
        "key_id": "1234abcd-12ab-34cd-56ef-1234567890ab",
        "arn": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "account_id": "111122223333",
        "creation_date": "2024-01-02T03:04:05Z",
        "description": "old",
        "state": "Enabled",
        "manager": "CUSTOMER",
        "origin": "AWS_KMS",
        "service": null,
        "deletion_date": null,
        "pending_window_days": null,
        "policy": "{}",
        "tags": [{"TagKey": "team", "TagValue": "storage"}],
        "rotation": {"enabled": true, "period_days": 365, "next": "2025-01-01T03:04:05Z"},
        "materials": [
            {"id": "aa", "created": "2024-01-02T03:04:05Z", "rotation": null,
             "secret": "ERERERERERERERERERERERERERERERERERERERERERE="},
            {"id": "bb", "created": "2025-01-01T03:04:05Z", "rotation": "AUTOMATIC",
             "secret": "IiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiI="}
        ],
        "on_demand_rotations": 0,
        "aws_owned": false
    }"#;

    #[test]
    fn records_written_before_key_specs_load_as_symmetric_single_region_keys() {
        let k: KeyRecord = serde_json::from_str(OLD_RECORD).unwrap();
        assert_eq!(k.key_spec, KeySpec::SymmetricDefault);
        assert_eq!(k.key_usage, KeyUsage::EncryptDecrypt);
        assert_eq!(k.origin, Origin::AwsKms);
        assert!(!k.multi_region);
        assert_eq!(k.multi_region_config, None);
        assert_eq!(k.materials.len(), 2);
        let (v, current) = k.current_material().unwrap();
        assert_eq!((v, current.id.as_str()), (1, "bb"));
        assert_eq!(
            current.secret.symmetric().unwrap().expose(),
            &[0x22; 32][..]
        );
        assert_eq!(k.materials[0].secret.expose(), &[0x11; 32][..]);
        assert!(k.materials.iter().all(|m| m.secret.fits(k.key_spec)));
        assert_eq!(k.key_id_bytes().unwrap()[0], 0x12);

        // Its metadata is what ebsim has always shown for it, field for field and
        // in the same order.
        let m = serde_json::to_value(crate::kms::metadata(&k)).unwrap();
        let fields: Vec<&str> = m.as_object().unwrap().keys().map(|s| s.as_str()).collect();
        assert_eq!(
            fields,
            [
                "AWSAccountId",
                "KeyId",
                "Arn",
                "CreationDate",
                "Enabled",
                "Description",
                "KeyUsage",
                "KeyState",
                "Origin",
                "KeyManager",
                "CustomerMasterKeySpec",
                "KeySpec",
                "EncryptionAlgorithms",
                "MultiRegion",
                "CurrentKeyMaterialId"
            ]
        );
        assert_eq!(m["KeyUsage"], "ENCRYPT_DECRYPT");
        assert_eq!(m["CustomerMasterKeySpec"], "SYMMETRIC_DEFAULT");
        assert_eq!(m["KeySpec"], "SYMMETRIC_DEFAULT");
        assert_eq!(
            m["EncryptionAlgorithms"],
            serde_json::json!(["SYMMETRIC_DEFAULT"])
        );
        assert_eq!(m["MultiRegion"], false);
        assert_eq!(m["Origin"], "AWS_KMS");
        assert_eq!(m["CurrentKeyMaterialId"], "bb");

        // Written back, the secrets keep their old shape, so an older ebsim still
        // reads the record (it ignores the new fields).
        let again = serde_json::to_value(&k).unwrap();
        assert_eq!(
            again["materials"][0]["secret"],
            "ERERERERERERERERERERERERERERERERERERERERERE="
        );
        assert_eq!(again["key_spec"], "SYMMETRIC_DEFAULT");
        assert_eq!(again["key_usage"], "ENCRYPT_DECRYPT");
        assert_eq!(again["multi_region"], false);
        assert!(again.get("multi_region_config").is_none());
        let k2: KeyRecord = serde_json::from_value(again).unwrap();
        assert_eq!(k2.materials[1].secret.expose(), &[0x22; 32][..]);
    }

    /// Records from before `aws_owned` existed (the first store format) load too.
    #[test]
    fn records_without_aws_owned_load() {
        let mut v: serde_json::Value = serde_json::from_str(OLD_RECORD).unwrap();
        v.as_object_mut().unwrap().remove("aws_owned");
        let k: KeyRecord = serde_json::from_value(v).unwrap();
        assert!(!k.aws_owned);
        assert_eq!(k.key_spec, KeySpec::SymmetricDefault);
    }

    #[test]
    fn key_material_kinds_in_the_object_form() {
        let m: KeyMaterial = serde_json::from_str(
            r#"{"id": "cc", "created": "2024-01-02T03:04:05Z", "rotation": "ON_DEMAND",
                "secret": {"kind": "SYMMETRIC", "bytes": "MzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzM="}}"#,
        )
        .unwrap();
        assert_eq!(m.secret.kind(), "SYMMETRIC");
        assert_eq!(m.secret.expose(), &[0x33; 32][..]);
        let unknown = serde_json::from_str::<KeyMaterial>(
            r#"{"id": "dd", "created": "2024-01-02T03:04:05Z", "rotation": null,
                "secret": {"kind": "RSA_PRIVATE_KEY", "bytes": "AA=="}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            unknown.contains("RSA_PRIVATE_KEY is not known"),
            "{unknown}"
        );
        for bad in [
            r#"{"kind": "SYMMETRIC"}"#,
            r#"{"bytes": "AA=="}"#,
            r#"{"kind": "SYMMETRIC", "bytes": "AA==", "extra": 1}"#,
            r#""not base64!""#,
            "42",
        ] {
            let json = format!(
                r#"{{"id": "ee", "created": "2024-01-02T03:04:05Z", "rotation": null, "secret": {bad}}}"#
            );
            assert!(serde_json::from_str::<KeyMaterial>(&json).is_err(), "{bad}");
        }
        let long = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [0u8; 4097]);
        let json = format!(
            r#"{{"id": "ff", "created": "2024-01-02T03:04:05Z", "rotation": null, "secret": "{long}"}}"#
        );
        assert!(serde_json::from_str::<KeyMaterial>(&json).is_err());
    }

    /// A multi-Region primary (which only a later ebsim writes) shows AWS's
    /// MultiRegion and MultiRegionConfiguration, ARNs built from the regions.
    #[test]
    fn multi_region_records_show_their_configuration() {
        let mut v: serde_json::Value = serde_json::from_str(OLD_RECORD).unwrap();
        let mrk = "mrk-1234abcd12ab34cd56ef1234567890ab";
        v["key_id"] = mrk.into();
        v["arn"] = format!("arn:aws:kms:us-west-2:111122223333:key/{mrk}").into();
        v["multi_region"] = true.into();
        v["multi_region_config"] = serde_json::json!({
            "key_type": "PRIMARY",
            "primary_region": "us-west-2",
            "replica_regions": ["eu-west-1"]
        });
        let k: KeyRecord = serde_json::from_value(v).unwrap();
        assert_eq!(k.key_id_bytes(), crate::kms::ids::key_id_bytes(mrk));
        let m = serde_json::to_value(crate::kms::metadata(&k)).unwrap();
        assert_eq!(m["MultiRegion"], true);
        assert_eq!(
            m["MultiRegionConfiguration"],
            serde_json::json!({
                "MultiRegionKeyType": "PRIMARY",
                "PrimaryKey": {
                    "Arn": format!("arn:aws:kms:us-west-2:111122223333:key/{mrk}"),
                    "Region": "us-west-2"
                },
                "ReplicaKeys": [{
                    "Arn": format!("arn:aws:kms:eu-west-1:111122223333:key/{mrk}"),
                    "Region": "eu-west-1"
                }]
            })
        );
        let keys: Vec<&str> = m.as_object().unwrap().keys().map(|s| s.as_str()).collect();
        let pos = |f: &str| keys.iter().position(|k| *k == f).unwrap();
        assert_eq!(pos("MultiRegionConfiguration"), pos("MultiRegion") + 1);
    }

    /// A record of another spec lists the algorithms of its own usage only.
    #[test]
    fn metadata_lists_the_algorithms_of_the_key_usage() {
        let mut v: serde_json::Value = serde_json::from_str(OLD_RECORD).unwrap();
        v["key_spec"] = "HMAC_384".into();
        v["key_usage"] = "GENERATE_VERIFY_MAC".into();
        let k: KeyRecord = serde_json::from_value(v).unwrap();
        assert!(!k.materials[0].secret.fits(k.key_spec));
        let m = serde_json::to_value(crate::kms::metadata(&k)).unwrap();
        assert_eq!(m["KeySpec"], "HMAC_384");
        assert_eq!(m["CustomerMasterKeySpec"], "HMAC_384");
        assert_eq!(m["MacAlgorithms"], serde_json::json!(["HMAC_SHA_384"]));
        assert!(m.get("EncryptionAlgorithms").is_none());
        assert!(m.get("SigningAlgorithms").is_none());
        assert!(m.get("KeyAgreementAlgorithms").is_none());

        let mut v: serde_json::Value = serde_json::from_str(OLD_RECORD).unwrap();
        v["key_spec"] = "ECC_NIST_P256".into();
        v["key_usage"] = "KEY_AGREEMENT".into();
        let k: KeyRecord = serde_json::from_value(v).unwrap();
        let m = serde_json::to_value(crate::kms::metadata(&k)).unwrap();
        assert_eq!(m["KeyAgreementAlgorithms"], serde_json::json!(["ECDH"]));
        assert!(m.get("EncryptionAlgorithms").is_none());
    }
}
