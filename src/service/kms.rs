//! The KMS's operation table: one variant per operation, with its AWS name, its
//! request type (AWS's member names, `src/kms/api.rs`) and the engine method that
//! serves it. The CLI builds these from arguments; the wire protocol reads them
//! with [`KmsRequest::from_json`]. Authorization, auditing and quotas happen in the
//! engine (`Kms::call`), the same for every front end.

use super::{serialization_error, to_value, unknown_operation};
use crate::error::Result;
use crate::kms::Kms;
use crate::kms::access::Caller;
use crate::kms::api::*;
use serde_json::Value;

macro_rules! operations {
    ($( $variant:ident => $name:literal ($req:ty) $method:ident; )*) => {
        /// One KMS request, in AWS's member names.
        #[derive(Debug, Clone)]
        pub enum KmsRequest {
            $( $variant($req), )*
        }

        /// Every KMS operation ebsim serves, by its AWS name.
        pub const OPERATIONS: &[&str] = &[$( $name, )*];

        impl KmsRequest {
            /// The operation's AWS name (`Encrypt`).
            pub fn name(&self) -> &'static str {
                match self {
                    $( KmsRequest::$variant(_) => $name, )*
                }
            }

            /// Reads a request as AWS's JSON protocol carries it: the operation's
            /// name (`TrentService.<Name>`) and a body in AWS's member names.
            pub fn from_json(name: &str, body: Value) -> Result<Self> {
                match name {
                    $( $name => serde_json::from_value(body)
                        .map(KmsRequest::$variant)
                        .map_err(|e| serialization_error(name, e)), )*
                    _ => Err(unknown_operation("KMS", name)),
                }
            }

            /// Runs it: the one place every front end's KMS calls go through.
            pub(super) fn run(self, kms: &Kms, caller: &Caller) -> Result<Value> {
                match self {
                    $( KmsRequest::$variant(r) => kms.$method(caller, r).map(to_value), )*
                }
            }
        }
    };
}

operations! {
    CreateKey => "CreateKey" (CreateKeyRequest) create_key;
    DescribeKey => "DescribeKey" (DescribeKeyRequest) describe_key;
    ListKeys => "ListKeys" (ListRequest) list_keys;
    EnableKey => "EnableKey" (KeyIdRequest) enable_key;
    DisableKey => "DisableKey" (KeyIdRequest) disable_key;
    ScheduleKeyDeletion => "ScheduleKeyDeletion" (ScheduleKeyDeletionRequest) schedule_key_deletion;
    CancelKeyDeletion => "CancelKeyDeletion" (KeyIdRequest) cancel_key_deletion;
    UpdateKeyDescription => "UpdateKeyDescription" (UpdateKeyDescriptionRequest) update_key_description;
    CreateAlias => "CreateAlias" (AliasRequest) create_alias;
    UpdateAlias => "UpdateAlias" (AliasRequest) update_alias;
    DeleteAlias => "DeleteAlias" (AliasRequest) delete_alias;
    ListAliases => "ListAliases" (ListAliasesRequest) list_aliases;
    TagResource => "TagResource" (TagResourceRequest) tag_resource;
    UntagResource => "UntagResource" (UntagResourceRequest) untag_resource;
    ListResourceTags => "ListResourceTags" (ListResourceTagsRequest) list_resource_tags;
    EnableKeyRotation => "EnableKeyRotation" (EnableKeyRotationRequest) enable_key_rotation;
    DisableKeyRotation => "DisableKeyRotation" (KeyIdRequest) disable_key_rotation;
    GetKeyRotationStatus => "GetKeyRotationStatus" (KeyIdRequest) get_key_rotation_status;
    RotateKeyOnDemand => "RotateKeyOnDemand" (KeyIdRequest) rotate_key_on_demand;
    ListKeyRotations => "ListKeyRotations" (ListKeyRotationsRequest) list_key_rotations;
    PutKeyPolicy => "PutKeyPolicy" (PutKeyPolicyRequest) put_key_policy;
    GetKeyPolicy => "GetKeyPolicy" (GetKeyPolicyRequest) get_key_policy;
    ListKeyPolicies => "ListKeyPolicies" (KeyIdRequest) list_key_policies;
    CreateGrant => "CreateGrant" (CreateGrantRequest) create_grant;
    ListGrants => "ListGrants" (ListGrantsRequest) list_grants;
    ListRetirableGrants => "ListRetirableGrants" (ListRetirableGrantsRequest) list_retirable_grants;
    RetireGrant => "RetireGrant" (RetireGrantRequest) retire_grant;
    RevokeGrant => "RevokeGrant" (RevokeGrantRequest) revoke_grant;
    Encrypt => "Encrypt" (EncryptRequest) encrypt;
    Decrypt => "Decrypt" (DecryptRequest) decrypt;
    ReEncrypt => "ReEncrypt" (ReEncryptRequest) re_encrypt;
    GenerateDataKey => "GenerateDataKey" (GenerateDataKeyRequest) generate_data_key;
    GenerateDataKeyWithoutPlaintext => "GenerateDataKeyWithoutPlaintext" (GenerateDataKeyRequest) generate_data_key_without_plaintext;
    GenerateRandom => "GenerateRandom" (GenerateRandomRequest) generate_random;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_reads_from_json_under_its_name() {
        for name in OPERATIONS {
            // An empty body reads (members default) or is refused as a body, never
            // as an unknown operation; the name round-trips.
            match KmsRequest::from_json(name, serde_json::json!({})) {
                Ok(r) => assert_eq!(r.name(), *name),
                Err(e) => assert_eq!(e.kind(), crate::ErrorKind::Serialization, "{name}: {e}"),
            }
        }
        let e = KmsRequest::from_json("Frobnicate", serde_json::json!({})).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::UnknownOperation);
        let r = KmsRequest::from_json(
            "Encrypt",
            serde_json::json!({"KeyId": "alias/x", "Plaintext": "aGk="}),
        )
        .unwrap();
        match r {
            KmsRequest::Encrypt(e) => assert_eq!(e.plaintext.as_slice(), b"hi"),
            other => panic!("{other:?}"),
        }
    }
}
