//! What the KMS stores: keys with their backing-key versions, and aliases.
//! These records are serialized to JSON and sealed under the root key by
//! [`super::store`]; they never reach disk in the clear.

use crate::clock::Timestamp;
use crate::crypto::SecretBytes;
use serde::{Deserialize, Serialize};

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

/// `Origin`: where the key material came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Origin {
    AwsKms,
    External,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::AwsKms => "AWS_KMS",
            Origin::External => "EXTERNAL",
        }
    }
}

/// How a backing key came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RotationType {
    Automatic,
    OnDemand,
}

/// One version of a key's backing key (AWS's "key material").
#[derive(Debug, Serialize, Deserialize)]
pub struct KeyMaterial {
    /// `KeyMaterialId`: 64 hex digits, random (never derived from the material).
    pub id: String,
    pub created: Timestamp,
    /// None for the material the key was created with.
    pub rotation: Option<RotationType>,
    #[serde(with = "secret_b64")]
    pub secret: SecretBytes,
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
        Some((v as u32, &self.materials[v]))
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

    pub fn uuid(&self) -> uuid::Uuid {
        uuid::Uuid::parse_str(&self.key_id).expect("stored key ids are UUIDs")
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

/// Serde for secrets inside sealed records: base64 text in a buffer the store zeroizes.
mod secret_b64 {
    use crate::crypto::SecretBytes;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};
    use zeroize::Zeroizing;

    pub fn serialize<S: Serializer>(s: &SecretBytes, ser: S) -> Result<S::Ok, S::Error> {
        let text = Zeroizing::new(STANDARD.encode(s.expose()));
        ser.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<SecretBytes, D::Error> {
        let text = Zeroizing::new(String::deserialize(de)?);
        let bytes = Zeroizing::new(
            STANDARD
                .decode(text.as_bytes())
                .map_err(serde::de::Error::custom)?,
        );
        if bytes.len() > 4096 {
            return Err(serde::de::Error::custom("key material too long"));
        }
        Ok(SecretBytes::from_slice(&bytes))
    }
}
