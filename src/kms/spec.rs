//! Key specs, key usages, origins and algorithms as AWS KMS names them, and the
//! one table of what each key spec allows: which `KeyUsage` values, and which
//! encryption, signing, MAC and key-agreement algorithms for each usage
//! (shared/reference/kms-ebs.md §1.4; the KMS API model's `KeySpec`, `KeyUsageType`,
//! `OriginType` and `*AlgorithmSpec` enums; the CreateKey and DescribeKey examples
//! of the API reference for the order of the algorithm lists).
//!
//! Everything here is data about AWS. What ebsim serves today is [`SERVED_KEY_SPECS`]:
//! a spec outside it is recognised, validated like AWS, then refused.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// An AWS enum: one Rust variant per wire name, the wire names in the order AWS's
/// API model lists them (the order of its `Member must satisfy enum value set: […]`
/// messages), serde through the wire name.
macro_rules! aws_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $wire:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in AWS's order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];
            /// Every wire name, in AWS's order.
            pub const NAMES: &'static [&'static str] = &[$($wire,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)+
                }
            }

            /// The value with this wire name (exact, case-sensitive, as AWS matches).
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($wire => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(&s).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "unknown {} '{s}' (known: {})",
                        stringify!($name),
                        $name::NAMES.join(", ")
                    ))
                })
            }
        }
    };
}

aws_enum! {
    /// `KeySpec`: the type of key material and so the algorithms a key supports.
    /// Fixed when the key is created. The default is AWS's CreateKey default.
    #[derive(Default)]
    KeySpec {
        Rsa2048 = "RSA_2048",
        Rsa3072 = "RSA_3072",
        Rsa4096 = "RSA_4096",
        EccNistP256 = "ECC_NIST_P256",
        EccNistP384 = "ECC_NIST_P384",
        EccNistP521 = "ECC_NIST_P521",
        EccSecgP256k1 = "ECC_SECG_P256K1",
        /// 256-bit AES-GCM (SM4 in China Regions, which ebsim does not model).
        #[default]
        SymmetricDefault = "SYMMETRIC_DEFAULT",
        Hmac224 = "HMAC_224",
        Hmac256 = "HMAC_256",
        Hmac384 = "HMAC_384",
        Hmac512 = "HMAC_512",
        /// China Regions only.
        Sm2 = "SM2",
        MlDsa44 = "ML_DSA_44",
        MlDsa65 = "ML_DSA_65",
        MlDsa87 = "ML_DSA_87",
        EccNistEdwards25519 = "ECC_NIST_EDWARDS25519",
    }
}

aws_enum! {
    /// `KeyUsage`: the one kind of cryptographic operation a key is for. Fixed when
    /// the key is created. The default is AWS's CreateKey default, which only
    /// SYMMETRIC_DEFAULT keys may take ([`KeySpec::default_usage`]).
    #[derive(Default)]
    KeyUsage {
        SignVerify = "SIGN_VERIFY",
        #[default]
        EncryptDecrypt = "ENCRYPT_DECRYPT",
        GenerateVerifyMac = "GENERATE_VERIFY_MAC",
        KeyAgreement = "KEY_AGREEMENT",
    }
}

aws_enum! {
    /// `Origin`: where the key material comes from. The default is AWS's CreateKey
    /// default.
    #[derive(Default)]
    Origin {
        /// KMS made it.
        #[default]
        AwsKms = "AWS_KMS",
        /// The customer imports it (the key waits in PendingImport until then).
        External = "EXTERNAL",
        /// A CloudHSM key store made it (a custom key store).
        AwsCloudhsm = "AWS_CLOUDHSM",
        /// It stays in an external key manager (a custom key store).
        ExternalKeyStore = "EXTERNAL_KEY_STORE",
    }
}

aws_enum! {
    /// `EncryptionAlgorithmSpec`.
    EncryptionAlgorithm {
        SymmetricDefault = "SYMMETRIC_DEFAULT",
        RsaesOaepSha1 = "RSAES_OAEP_SHA_1",
        RsaesOaepSha256 = "RSAES_OAEP_SHA_256",
        Sm2Pke = "SM2PKE",
    }
}

aws_enum! {
    /// `SigningAlgorithmSpec`.
    SigningAlgorithm {
        RsassaPssSha256 = "RSASSA_PSS_SHA_256",
        RsassaPssSha384 = "RSASSA_PSS_SHA_384",
        RsassaPssSha512 = "RSASSA_PSS_SHA_512",
        RsassaPkcs1V15Sha256 = "RSASSA_PKCS1_V1_5_SHA_256",
        RsassaPkcs1V15Sha384 = "RSASSA_PKCS1_V1_5_SHA_384",
        RsassaPkcs1V15Sha512 = "RSASSA_PKCS1_V1_5_SHA_512",
        EcdsaSha256 = "ECDSA_SHA_256",
        EcdsaSha384 = "ECDSA_SHA_384",
        EcdsaSha512 = "ECDSA_SHA_512",
        Sm2Dsa = "SM2DSA",
        MlDsaShake256 = "ML_DSA_SHAKE_256",
        Ed25519Sha512 = "ED25519_SHA_512",
        Ed25519PhSha512 = "ED25519_PH_SHA_512",
    }
}

aws_enum! {
    /// `MacAlgorithmSpec`.
    MacAlgorithm {
        HmacSha224 = "HMAC_SHA_224",
        HmacSha256 = "HMAC_SHA_256",
        HmacSha384 = "HMAC_SHA_384",
        HmacSha512 = "HMAC_SHA_512",
    }
}

aws_enum! {
    /// `KeyAgreementAlgorithmSpec`.
    KeyAgreementAlgorithm {
        Ecdh = "ECDH",
    }
}

aws_enum! {
    /// `MultiRegionKeyType`: the role of one key of a multi-Region key.
    MultiRegionKeyType {
        Primary = "PRIMARY",
        Replica = "REPLICA",
    }
}

/// The key specs ebsim creates keys with today. CreateKey validates every other
/// spec like AWS, then refuses it with UnsupportedOperationException.
pub const SERVED_KEY_SPECS: &[KeySpec] = &[KeySpec::SymmetricDefault];

/// [`SERVED_KEY_SPECS`] in words, for that refusal.
pub const SERVED_KEY_SPECS_IN_WORDS: &str = "symmetric encryption keys (SYMMETRIC_DEFAULT)";

/// What a key of one spec and usage can do: the algorithm lists DescribeKey
/// shows (`EncryptionAlgorithms`, `SigningAlgorithms`, `MacAlgorithms`,
/// `KeyAgreementAlgorithms`), each in the order AWS shows it. Exactly one list is
/// non-empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Algorithms {
    pub encryption: &'static [EncryptionAlgorithm],
    pub signing: &'static [SigningAlgorithm],
    pub mac: &'static [MacAlgorithm],
    pub key_agreement: &'static [KeyAgreementAlgorithm],
}

impl Algorithms {
    /// No algorithm at all.
    pub const NONE: Algorithms = Algorithms {
        encryption: &[],
        signing: &[],
        mac: &[],
        key_agreement: &[],
    };
}

const NONE: Algorithms = Algorithms::NONE;

const fn encryption(list: &'static [EncryptionAlgorithm]) -> Algorithms {
    Algorithms {
        encryption: list,
        ..NONE
    }
}

const fn signing(list: &'static [SigningAlgorithm]) -> Algorithms {
    Algorithms {
        signing: list,
        ..NONE
    }
}

const fn mac(list: &'static [MacAlgorithm]) -> Algorithms {
    Algorithms { mac: list, ..NONE }
}

const ECDH: Algorithms = Algorithms {
    key_agreement: &[KeyAgreementAlgorithm::Ecdh],
    ..NONE
};

use EncryptionAlgorithm as E;
use SigningAlgorithm as S;

/// RSA signing, in the order of AWS's DescribeKey example for an RSA_2048 key.
const RSA_SIGNING: &[SigningAlgorithm] = &[
    S::RsassaPkcs1V15Sha256,
    S::RsassaPkcs1V15Sha384,
    S::RsassaPkcs1V15Sha512,
    S::RsassaPssSha256,
    S::RsassaPssSha384,
    S::RsassaPssSha512,
];

impl KeySpec {
    /// What a key of this spec does with `usage`, or None when AWS refuses the pair
    /// at CreateKey. This match is the table: the allowed usages follow from it.
    pub fn algorithms(self, usage: KeyUsage) -> Option<Algorithms> {
        use KeySpec::*;
        use KeyUsage::*;
        let a = match (self, usage) {
            (SymmetricDefault, EncryptDecrypt) => encryption(&[E::SymmetricDefault]),
            (Rsa2048 | Rsa3072 | Rsa4096, EncryptDecrypt) => {
                encryption(&[E::RsaesOaepSha1, E::RsaesOaepSha256])
            }
            (Rsa2048 | Rsa3072 | Rsa4096, SignVerify) => signing(RSA_SIGNING),
            (EccNistP256 | EccSecgP256k1, SignVerify) => signing(&[S::EcdsaSha256]),
            (EccNistP384, SignVerify) => signing(&[S::EcdsaSha384]),
            (EccNistP521, SignVerify) => signing(&[S::EcdsaSha512]),
            (EccNistP256 | EccNistP384 | EccNistP521, KeyAgreement) => ECDH,
            (EccNistEdwards25519, SignVerify) => signing(&[S::Ed25519Sha512, S::Ed25519PhSha512]),
            (MlDsa44 | MlDsa65 | MlDsa87, SignVerify) => signing(&[S::MlDsaShake256]),
            (Sm2, EncryptDecrypt) => encryption(&[E::Sm2Pke]),
            (Sm2, SignVerify) => signing(&[S::Sm2Dsa]),
            (Sm2, KeyAgreement) => ECDH,
            (Hmac224, GenerateVerifyMac) => mac(&[MacAlgorithm::HmacSha224]),
            (Hmac256, GenerateVerifyMac) => mac(&[MacAlgorithm::HmacSha256]),
            (Hmac384, GenerateVerifyMac) => mac(&[MacAlgorithm::HmacSha384]),
            (Hmac512, GenerateVerifyMac) => mac(&[MacAlgorithm::HmacSha512]),
            _ => return None,
        };
        Some(a)
    }

    /// The usages AWS accepts for this spec, in AWS's order.
    pub fn usages(self) -> Vec<KeyUsage> {
        KeyUsage::ALL
            .iter()
            .copied()
            .filter(|u| self.algorithms(*u).is_some())
            .collect()
    }

    /// The usage CreateKey gives a key when the request names none: AWS's default,
    /// ENCRYPT_DECRYPT, serves only symmetric encryption keys; every other spec
    /// needs an explicit KeyUsage.
    pub fn default_usage(self) -> Option<KeyUsage> {
        (self == KeySpec::SymmetricDefault).then_some(KeyUsage::EncryptDecrypt)
    }

    /// Whether the deprecated `CustomerMasterKeySpec` request member accepts this
    /// spec: its enum stopped growing before ML-DSA and Ed25519 were added.
    pub fn is_customer_master_key_spec(self) -> bool {
        !matches!(
            self,
            KeySpec::MlDsa44 | KeySpec::MlDsa65 | KeySpec::MlDsa87 | KeySpec::EccNistEdwards25519
        )
    }

    /// The wire names the `CustomerMasterKeySpec` request member accepts, in AWS's order.
    pub fn customer_master_key_spec_names() -> Vec<&'static str> {
        KeySpec::ALL
            .iter()
            .filter(|s| s.is_customer_master_key_spec())
            .map(|s| s.as_str())
            .collect()
    }

    /// Whether this spec's key material never leaves KMS and has no public half.
    pub fn is_symmetric(self) -> bool {
        matches!(
            self,
            KeySpec::SymmetricDefault
                | KeySpec::Hmac224
                | KeySpec::Hmac256
                | KeySpec::Hmac384
                | KeySpec::Hmac512
        )
    }

    /// Whether ebsim creates keys of this spec today.
    pub fn is_served(self) -> bool {
        SERVED_KEY_SPECS.contains(&self)
    }
}

impl Origin {
    /// Whether the key lives in a custom key store (CloudHSM or external).
    pub fn is_custom_key_store(self) -> bool {
        matches!(self, Origin::AwsCloudhsm | Origin::ExternalKeyStore)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_the_api_model() {
        for s in KeySpec::ALL {
            assert_eq!(KeySpec::parse(s.as_str()), Some(*s));
            let json = serde_json::to_string(s).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<KeySpec>(&json).unwrap(), *s);
        }
        assert_eq!(KeySpec::ALL.len(), 17);
        assert_eq!(KeySpec::customer_master_key_spec_names().len(), 13);
        assert_eq!(KeySpec::parse("symmetric_default"), None, "case-sensitive");
        assert!(serde_json::from_str::<KeySpec>("\"AES_256\"").is_err());
        assert_eq!(
            Origin::NAMES,
            ["AWS_KMS", "EXTERNAL", "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"]
        );
        assert_eq!(
            KeyUsage::NAMES,
            [
                "SIGN_VERIFY",
                "ENCRYPT_DECRYPT",
                "GENERATE_VERIFY_MAC",
                "KEY_AGREEMENT"
            ]
        );
    }

    /// The usages of each spec, as the CreateKey reference lists them.
    #[test]
    fn usages_per_spec() {
        use KeySpec::*;
        use KeyUsage::*;
        assert_eq!(SymmetricDefault.usages(), [EncryptDecrypt]);
        for s in [Rsa2048, Rsa3072, Rsa4096] {
            assert_eq!(s.usages(), [SignVerify, EncryptDecrypt]);
        }
        for s in [EccNistP256, EccNistP384, EccNistP521] {
            assert_eq!(s.usages(), [SignVerify, KeyAgreement]);
        }
        for s in [
            EccSecgP256k1,
            EccNistEdwards25519,
            MlDsa44,
            MlDsa65,
            MlDsa87,
        ] {
            assert_eq!(s.usages(), [SignVerify]);
        }
        for s in [Hmac224, Hmac256, Hmac384, Hmac512] {
            assert_eq!(s.usages(), [GenerateVerifyMac]);
        }
        assert_eq!(Sm2.usages(), [SignVerify, EncryptDecrypt, KeyAgreement]);
    }

    #[test]
    fn exactly_one_algorithm_list_per_usage() {
        for spec in KeySpec::ALL {
            for usage in spec.usages() {
                let a = spec.algorithms(usage).unwrap();
                let lists = [
                    a.encryption.len(),
                    a.signing.len(),
                    a.mac.len(),
                    a.key_agreement.len(),
                ];
                assert_eq!(
                    lists.iter().filter(|n| **n > 0).count(),
                    1,
                    "{spec} {usage}"
                );
                let expected = match usage {
                    KeyUsage::EncryptDecrypt => a.encryption.len(),
                    KeyUsage::SignVerify => a.signing.len(),
                    KeyUsage::GenerateVerifyMac => a.mac.len(),
                    KeyUsage::KeyAgreement => a.key_agreement.len(),
                };
                assert!(expected > 0, "{spec} {usage}: the list of its own usage");
            }
        }
    }

    /// The lists of the API reference's CreateKey and DescribeKey examples.
    #[test]
    fn algorithm_lists_as_aws_shows_them() {
        let names = |a: &[SigningAlgorithm]| a.iter().map(|x| x.as_str()).collect::<Vec<_>>();
        let rsa = KeySpec::Rsa2048.algorithms(KeyUsage::SignVerify).unwrap();
        assert_eq!(
            names(rsa.signing),
            [
                "RSASSA_PKCS1_V1_5_SHA_256",
                "RSASSA_PKCS1_V1_5_SHA_384",
                "RSASSA_PKCS1_V1_5_SHA_512",
                "RSASSA_PSS_SHA_256",
                "RSASSA_PSS_SHA_384",
                "RSASSA_PSS_SHA_512"
            ]
        );
        let rsa = KeySpec::Rsa4096
            .algorithms(KeyUsage::EncryptDecrypt)
            .unwrap();
        assert_eq!(
            rsa.encryption,
            [
                EncryptionAlgorithm::RsaesOaepSha1,
                EncryptionAlgorithm::RsaesOaepSha256
            ]
        );
        let p521 = KeySpec::EccNistP521
            .algorithms(KeyUsage::SignVerify)
            .unwrap();
        assert_eq!(names(p521.signing), ["ECDSA_SHA_512"]);
        let hmac = KeySpec::Hmac384
            .algorithms(KeyUsage::GenerateVerifyMac)
            .unwrap();
        assert_eq!(hmac.mac, [MacAlgorithm::HmacSha384]);
        let sym = KeySpec::SymmetricDefault
            .algorithms(KeyUsage::EncryptDecrypt)
            .unwrap();
        assert_eq!(sym.encryption, [EncryptionAlgorithm::SymmetricDefault]);
    }

    #[test]
    fn defaults_are_aws_create_key_defaults() {
        assert_eq!(KeySpec::default(), KeySpec::SymmetricDefault);
        assert_eq!(KeyUsage::default(), KeyUsage::EncryptDecrypt);
        assert_eq!(Origin::default(), Origin::AwsKms);
        assert_eq!(
            KeySpec::SymmetricDefault.default_usage(),
            Some(KeyUsage::EncryptDecrypt)
        );
        assert_eq!(KeySpec::Hmac256.default_usage(), None);
        assert_eq!(KeySpec::Rsa2048.default_usage(), None);
    }
}
