//! `ebsim kms …`: one subcommand per KMS operation, with the AWS CLI's parameter names.

use super::{Ctx, input};
use crate::error::Result;
use crate::kms::api::Tag;
use crate::kms::api::*;
use crate::service::kms::KmsRequest;
use clap::{Args, Subcommand};
use serde_json::Value;

/// `--dry-run | --no-dry-run`.
#[derive(Args, Debug, Clone, Default)]
pub struct DryRun {
    /// Check the request and permissions without performing it (DryRunOperationException on success)
    #[arg(long, overrides_with = "no_dry_run")]
    dry_run: bool,
    #[arg(long, hide = true)]
    no_dry_run: bool,
}

/// Auto-pagination controls of the AWS CLI.
#[derive(Args, Debug, Clone, Default)]
pub struct Paging {
    /// Items per service call while paginating (the API's Limit)
    #[arg(long)]
    page_size: Option<u32>,
    /// Make one call and print its raw page (with NextMarker/Truncated)
    #[arg(long)]
    no_paginate: bool,
    /// API Limit for one call (implies one page, like --no-paginate)
    #[arg(long)]
    limit: Option<u32>,
    /// API Marker for one call (implies --no-paginate)
    #[arg(long)]
    marker: Option<String>,
}

impl Paging {
    fn single(&self) -> bool {
        self.no_paginate || self.limit.is_some() || self.marker.is_some()
    }
}

#[derive(Subcommand, Debug)]
pub enum KmsCommand {
    /// Creates a symmetric encryption KMS key
    CreateKey {
        #[arg(long)]
        policy: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        key_usage: Option<String>,
        #[arg(long)]
        key_spec: Option<String>,
        #[arg(long)]
        customer_master_key_spec: Option<String>,
        #[arg(long)]
        origin: Option<String>,
        #[arg(long)]
        bypass_policy_lockout_safety_check: bool,
        /// TagKey=k,TagValue=v ... or a JSON list
        #[arg(long, num_args = 1..)]
        tags: Vec<String>,
        #[arg(long, overrides_with = "no_multi_region")]
        multi_region: bool,
        #[arg(long, hide = true)]
        no_multi_region: bool,
    },
    /// Describes a key (key id, key ARN, alias name or alias ARN)
    DescribeKey {
        #[arg(long)]
        key_id: String,
        #[arg(long, num_args = 1..)]
        grant_tokens: Vec<String>,
    },
    /// Lists the keys of the region
    ListKeys {
        #[command(flatten)]
        paging: Paging,
    },
    /// Sets a key's state to Enabled
    EnableKey {
        #[arg(long)]
        key_id: String,
    },
    /// Sets a key's state to Disabled
    DisableKey {
        #[arg(long)]
        key_id: String,
    },
    /// Schedules a key's deletion after a waiting period of 7-30 days (default 30)
    ScheduleKeyDeletion {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        pending_window_in_days: Option<u32>,
    },
    /// Cancels a scheduled deletion; the key becomes Disabled
    CancelKeyDeletion {
        #[arg(long)]
        key_id: String,
    },
    /// Changes a key's description
    UpdateKeyDescription {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        description: String,
    },
    /// Creates an alias (alias/NAME) for a key
    CreateAlias {
        #[arg(long)]
        alias_name: String,
        #[arg(long)]
        target_key_id: String,
    },
    /// Points an alias at another key
    UpdateAlias {
        #[arg(long)]
        alias_name: String,
        #[arg(long)]
        target_key_id: String,
    },
    /// Deletes an alias
    DeleteAlias {
        #[arg(long)]
        alias_name: String,
    },
    /// Lists aliases (all, or those of one key)
    ListAliases {
        #[arg(long)]
        key_id: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
    /// Adds or overwrites tags on a key
    TagResource {
        #[arg(long)]
        key_id: String,
        #[arg(long, num_args = 1.., required = true)]
        tags: Vec<String>,
    },
    /// Removes tags from a key
    UntagResource {
        #[arg(long)]
        key_id: String,
        #[arg(long, num_args = 1.., required = true)]
        tag_keys: Vec<String>,
    },
    /// Lists a key's tags
    ListResourceTags {
        #[arg(long)]
        key_id: String,
        #[command(flatten)]
        paging: Paging,
    },
    /// Turns on automatic rotation (period 90-2560 days, default 365)
    EnableKeyRotation {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        rotation_period_in_days: Option<u32>,
    },
    /// Turns off automatic rotation
    DisableKeyRotation {
        #[arg(long)]
        key_id: String,
    },
    /// Shows whether and when a key rotates
    GetKeyRotationStatus {
        #[arg(long)]
        key_id: String,
    },
    /// Rotates a key's material now (at most 25 times per key)
    RotateKeyOnDemand {
        #[arg(long)]
        key_id: String,
    },
    /// Lists a key's rotations
    ListKeyRotations {
        #[arg(long)]
        key_id: String,
        /// ROTATIONS_ONLY (default) or ALL_KEY_MATERIAL
        #[arg(long)]
        include_key_material: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
    /// Replaces a key's policy (the lockout safety check applies unless bypassed)
    PutKeyPolicy {
        #[arg(long)]
        key_id: String,
        /// JSON, or file://FILE
        #[arg(long)]
        policy: String,
        /// Always "default"
        #[arg(long)]
        policy_name: Option<String>,
        #[arg(long)]
        bypass_policy_lockout_safety_check: bool,
    },
    /// Shows a key's policy
    GetKeyPolicy {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        policy_name: Option<String>,
    },
    /// Lists a key's policy names (always "default")
    ListKeyPolicies {
        #[arg(long)]
        key_id: String,
    },
    /// Lets a grantee principal use a key for some operations
    CreateGrant {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        grantee_principal: String,
        #[arg(long)]
        retiring_principal: Option<String>,
        /// Decrypt Encrypt GenerateDataKey GenerateDataKeyWithoutPlaintext ReEncryptFrom
        /// ReEncryptTo CreateGrant RetireGrant DescribeKey
        #[arg(long, num_args = 1.., required = true)]
        operations: Vec<String>,
        /// EncryptionContextSubset={k=v},EncryptionContextEquals={k=v} or JSON
        #[arg(long)]
        constraints: Option<String>,
        #[arg(long, num_args = 1..)]
        grant_tokens: Vec<String>,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        dry: DryRun,
    },
    /// Lists a key's grants
    ListGrants {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        grant_id: Option<String>,
        #[arg(long)]
        grantee_principal: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
    /// Lists the grants a principal may retire
    ListRetirableGrants {
        #[arg(long)]
        retiring_principal: String,
        #[command(flatten)]
        paging: Paging,
    },
    /// Retires a grant (by its token, or by key id and grant id)
    RetireGrant {
        #[arg(long)]
        grant_token: Option<String>,
        #[arg(long)]
        key_id: Option<String>,
        #[arg(long)]
        grant_id: Option<String>,
        #[command(flatten)]
        dry: DryRun,
    },
    /// Revokes a grant
    RevokeGrant {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        grant_id: String,
        #[command(flatten)]
        dry: DryRun,
    },
    /// Encrypts up to 4096 bytes under a key
    Encrypt {
        #[arg(long)]
        key_id: String,
        /// fileb://FILE, or base64 inline
        #[arg(long)]
        plaintext: String,
        /// k=v,k2=v2 or JSON
        #[arg(long)]
        encryption_context: Option<String>,
        #[arg(long, num_args = 1..)]
        grant_tokens: Vec<String>,
        #[arg(long)]
        encryption_algorithm: Option<String>,
        #[command(flatten)]
        dry: DryRun,
    },
    /// Decrypts a ciphertext blob (the key is read from the blob)
    Decrypt {
        /// fileb://FILE, or base64 inline
        #[arg(long)]
        ciphertext_blob: String,
        #[arg(long)]
        encryption_context: Option<String>,
        #[arg(long, num_args = 1..)]
        grant_tokens: Vec<String>,
        #[arg(long)]
        key_id: Option<String>,
        #[arg(long)]
        encryption_algorithm: Option<String>,
        #[command(flatten)]
        dry: DryRun,
    },
    /// Decrypts and re-encrypts under another key (or the same key's current material)
    ReEncrypt {
        #[arg(long)]
        ciphertext_blob: String,
        #[arg(long)]
        source_encryption_context: Option<String>,
        #[arg(long)]
        source_key_id: Option<String>,
        #[arg(long)]
        destination_key_id: String,
        #[arg(long)]
        destination_encryption_context: Option<String>,
        #[arg(long)]
        source_encryption_algorithm: Option<String>,
        #[arg(long)]
        destination_encryption_algorithm: Option<String>,
        #[arg(long, num_args = 1..)]
        grant_tokens: Vec<String>,
        #[command(flatten)]
        dry: DryRun,
    },
    /// Returns a data key in plaintext and encrypted under a key
    GenerateDataKey {
        #[command(flatten)]
        a: DataKeyArgs,
    },
    /// Returns a data key encrypted under a key only
    GenerateDataKeyWithoutPlaintext {
        #[command(flatten)]
        a: DataKeyArgs,
    },
    /// Returns 1-1024 random bytes
    GenerateRandom {
        #[arg(long)]
        number_of_bytes: Option<u32>,
        #[arg(long)]
        custom_key_store_id: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct DataKeyArgs {
    #[arg(long)]
    key_id: String,
    #[arg(long)]
    encryption_context: Option<String>,
    /// 1-1024
    #[arg(long)]
    number_of_bytes: Option<u32>,
    /// AES_256 or AES_128
    #[arg(long)]
    key_spec: Option<String>,
    #[arg(long, num_args = 1..)]
    grant_tokens: Vec<String>,
    #[command(flatten)]
    dry: DryRun,
}

fn ctx_param(name: &str, v: &Option<String>) -> Result<crate::kms::api::EncryptionContext> {
    v.as_deref()
        .map(|v| input::map(name, v))
        .transpose()
        .map(Option::unwrap_or_default)
}

impl DataKeyArgs {
    fn request(&self) -> Result<GenerateDataKeyRequest> {
        Ok(GenerateDataKeyRequest {
            key_id: self.key_id.clone(),
            encryption_context: ctx_param("encryption-context", &self.encryption_context)?,
            number_of_bytes: self.number_of_bytes,
            key_spec: self.key_spec.clone(),
            grant_tokens: self.grant_tokens.clone(),
            dry_run: self.dry.dry_run,
        })
    }
}

/// Runs a paginated list operation: one page with `--no-paginate`/`--limit`/`--marker`,
/// otherwise every page merged into one `result_key` list, as the AWS CLI does.
fn paginate<F>(ctx: &Ctx, op: &str, paging: &Paging, result_key: &str, mut call: F) -> Result<()>
where
    F: FnMut(Option<u32>, Option<String>) -> Result<Value>,
{
    if paging.single() {
        let page = call(paging.limit.or(paging.page_size), paging.marker.clone())?;
        return ctx.out.print(op, page);
    }
    let mut all = Vec::new();
    let mut marker = None;
    loop {
        let mut page = call(paging.page_size, marker.take())?;
        if let Some(Value::Array(items)) = page.get_mut(result_key).map(Value::take) {
            all.extend(items);
        }
        match page.get("NextMarker").and_then(Value::as_str) {
            Some(m) if page["Truncated"] == Value::Bool(true) => marker = Some(m.to_string()),
            _ => break,
        }
    }
    ctx.out.print(op, serde_json::json!({ result_key: all }))
}

pub fn run(ctx: &Ctx, cmd: KmsCommand) -> Result<()> {
    use KmsCommand as C;
    let rc = ctx.request_context();
    let call = |r: KmsRequest| ctx.services.kms(&rc, r);
    let key = |k: &str| KeyIdRequest {
        key_id: k.to_string(),
    };
    // A paginated operation's page as JSON, retried when throttled.
    let page = |f: &dyn Fn() -> Result<Value>| ctx.backoff.run(f);
    match cmd {
        C::CreateKey {
            policy,
            description,
            key_usage,
            key_spec,
            customer_master_key_spec,
            origin,
            bypass_policy_lockout_safety_check,
            tags,
            multi_region,
            no_multi_region: _,
        } => {
            let req = CreateKeyRequest {
                policy: policy.map(|p| input::text("policy", &p)).transpose()?,
                description,
                key_usage,
                key_spec,
                customer_master_key_spec,
                origin,
                bypass_policy_lockout_safety_check,
                tags: if tags.is_empty() {
                    Vec::new()
                } else {
                    input::structs::<Tag>("tags", &tags)?
                },
                multi_region: multi_region.then_some(true),
            };
            exec!(ctx, "CreateKey", call(KmsRequest::CreateKey(req.clone())))
        }
        C::DescribeKey {
            key_id,
            grant_tokens,
        } => {
            let req = DescribeKeyRequest {
                key_id,
                grant_tokens,
            };
            exec!(
                ctx,
                "DescribeKey",
                call(KmsRequest::DescribeKey(req.clone()))
            )
        }
        C::ListKeys { paging } => paginate(ctx, "ListKeys", &paging, "Keys", |limit, marker| {
            page(&|| {
                call(KmsRequest::ListKeys(ListRequest {
                    limit,
                    marker: marker.clone(),
                }))
            })
        }),
        C::EnableKey { key_id } => {
            exec!(ctx, "EnableKey", call(KmsRequest::EnableKey(key(&key_id))))
        }
        C::DisableKey { key_id } => exec!(
            ctx,
            "DisableKey",
            call(KmsRequest::DisableKey(key(&key_id)))
        ),
        C::ScheduleKeyDeletion {
            key_id,
            pending_window_in_days,
        } => {
            let req = ScheduleKeyDeletionRequest {
                key_id,
                pending_window_in_days,
            };
            exec!(
                ctx,
                "ScheduleKeyDeletion",
                call(KmsRequest::ScheduleKeyDeletion(req.clone()))
            )
        }
        C::CancelKeyDeletion { key_id } => {
            exec!(
                ctx,
                "CancelKeyDeletion",
                call(KmsRequest::CancelKeyDeletion(key(&key_id)))
            )
        }
        C::UpdateKeyDescription {
            key_id,
            description,
        } => {
            let req = UpdateKeyDescriptionRequest {
                key_id,
                description,
            };
            exec!(
                ctx,
                "UpdateKeyDescription",
                call(KmsRequest::UpdateKeyDescription(req.clone()))
            )
        }
        C::CreateAlias {
            alias_name,
            target_key_id,
        } => {
            let req = AliasRequest {
                alias_name,
                target_key_id,
            };
            exec!(
                ctx,
                "CreateAlias",
                call(KmsRequest::CreateAlias(req.clone()))
            )
        }
        C::UpdateAlias {
            alias_name,
            target_key_id,
        } => {
            let req = AliasRequest {
                alias_name,
                target_key_id,
            };
            exec!(
                ctx,
                "UpdateAlias",
                call(KmsRequest::UpdateAlias(req.clone()))
            )
        }
        C::DeleteAlias { alias_name } => {
            let req = AliasRequest {
                alias_name,
                target_key_id: String::new(),
            };
            exec!(
                ctx,
                "DeleteAlias",
                call(KmsRequest::DeleteAlias(req.clone()))
            )
        }
        C::ListAliases { key_id, paging } => {
            paginate(ctx, "ListAliases", &paging, "Aliases", |limit, marker| {
                let req = ListAliasesRequest {
                    key_id: key_id.clone(),
                    limit,
                    marker,
                };
                page(&|| call(KmsRequest::ListAliases(req.clone())))
            })
        }
        C::TagResource { key_id, tags } => {
            let req = TagResourceRequest {
                key_id,
                tags: input::structs("tags", &tags)?,
            };
            exec!(
                ctx,
                "TagResource",
                call(KmsRequest::TagResource(req.clone()))
            )
        }
        C::UntagResource { key_id, tag_keys } => {
            let req = UntagResourceRequest { key_id, tag_keys };
            exec!(
                ctx,
                "UntagResource",
                call(KmsRequest::UntagResource(req.clone()))
            )
        }
        C::ListResourceTags { key_id, paging } => {
            paginate(ctx, "ListResourceTags", &paging, "Tags", |limit, marker| {
                let req = ListResourceTagsRequest {
                    key_id: key_id.clone(),
                    limit,
                    marker,
                };
                page(&|| call(KmsRequest::ListResourceTags(req.clone())))
            })
        }
        C::EnableKeyRotation {
            key_id,
            rotation_period_in_days,
        } => {
            let req = EnableKeyRotationRequest {
                key_id,
                rotation_period_in_days,
            };
            exec!(
                ctx,
                "EnableKeyRotation",
                call(KmsRequest::EnableKeyRotation(req.clone()))
            )
        }
        C::DisableKeyRotation { key_id } => {
            exec!(
                ctx,
                "DisableKeyRotation",
                call(KmsRequest::DisableKeyRotation(key(&key_id)))
            )
        }
        C::GetKeyRotationStatus { key_id } => {
            exec!(
                ctx,
                "GetKeyRotationStatus",
                call(KmsRequest::GetKeyRotationStatus(key(&key_id)))
            )
        }
        C::RotateKeyOnDemand { key_id } => {
            exec!(
                ctx,
                "RotateKeyOnDemand",
                call(KmsRequest::RotateKeyOnDemand(key(&key_id)))
            )
        }
        C::ListKeyRotations {
            key_id,
            include_key_material,
            paging,
        } => paginate(
            ctx,
            "ListKeyRotations",
            &paging,
            "Rotations",
            |limit, marker| {
                let req = ListKeyRotationsRequest {
                    key_id: key_id.clone(),
                    include_key_material: include_key_material.clone(),
                    limit,
                    marker,
                };
                page(&|| call(KmsRequest::ListKeyRotations(req.clone())))
            },
        ),
        C::PutKeyPolicy {
            key_id,
            policy,
            policy_name,
            bypass_policy_lockout_safety_check,
        } => {
            let req = PutKeyPolicyRequest {
                key_id,
                policy_name,
                policy: input::text("policy", &policy)?,
                bypass_policy_lockout_safety_check,
            };
            exec!(
                ctx,
                "PutKeyPolicy",
                call(KmsRequest::PutKeyPolicy(req.clone()))
            )
        }
        C::GetKeyPolicy {
            key_id,
            policy_name,
        } => {
            let req = GetKeyPolicyRequest {
                key_id,
                policy_name,
            };
            exec!(
                ctx,
                "GetKeyPolicy",
                call(KmsRequest::GetKeyPolicy(req.clone()))
            )
        }
        C::ListKeyPolicies { key_id } => exec!(
            ctx,
            "ListKeyPolicies",
            call(KmsRequest::ListKeyPolicies(key(&key_id)))
        ),
        C::CreateGrant {
            key_id,
            grantee_principal,
            retiring_principal,
            operations,
            constraints,
            grant_tokens,
            name,
            dry,
        } => {
            let req = CreateGrantRequest {
                key_id,
                grantee_principal,
                retiring_principal,
                operations,
                constraints: constraints
                    .map(|c| input::constraints("constraints", &c))
                    .transpose()?,
                grant_tokens,
                name,
                dry_run: dry.dry_run,
            };
            exec!(
                ctx,
                "CreateGrant",
                call(KmsRequest::CreateGrant(req.clone()))
            )
        }
        C::ListGrants {
            key_id,
            grant_id,
            grantee_principal,
            paging,
        } => paginate(ctx, "ListGrants", &paging, "Grants", |limit, marker| {
            let req = ListGrantsRequest {
                key_id: key_id.clone(),
                grant_id: grant_id.clone(),
                grantee_principal: grantee_principal.clone(),
                limit,
                marker,
            };
            page(&|| call(KmsRequest::ListGrants(req.clone())))
        }),
        C::ListRetirableGrants {
            retiring_principal,
            paging,
        } => paginate(
            ctx,
            "ListRetirableGrants",
            &paging,
            "Grants",
            |limit, marker| {
                let req = ListRetirableGrantsRequest {
                    retiring_principal: retiring_principal.clone(),
                    limit,
                    marker,
                };
                page(&|| call(KmsRequest::ListRetirableGrants(req.clone())))
            },
        ),
        C::RetireGrant {
            grant_token,
            key_id,
            grant_id,
            dry,
        } => {
            let req = RetireGrantRequest {
                grant_token,
                key_id,
                grant_id,
                dry_run: dry.dry_run,
            };
            exec!(
                ctx,
                "RetireGrant",
                call(KmsRequest::RetireGrant(req.clone()))
            )
        }
        C::RevokeGrant {
            key_id,
            grant_id,
            dry,
        } => {
            let req = RevokeGrantRequest {
                key_id,
                grant_id,
                dry_run: dry.dry_run,
            };
            exec!(
                ctx,
                "RevokeGrant",
                call(KmsRequest::RevokeGrant(req.clone()))
            )
        }
        C::Encrypt {
            key_id,
            plaintext,
            encryption_context,
            grant_tokens,
            encryption_algorithm,
            dry,
        } => {
            let req = EncryptRequest {
                key_id,
                plaintext: Blob(input::blob("plaintext", &plaintext, ctx.binary)?),
                encryption_context: ctx_param("encryption-context", &encryption_context)?,
                grant_tokens,
                encryption_algorithm,
                dry_run: dry.dry_run,
            };
            exec!(ctx, "Encrypt", call(KmsRequest::Encrypt(req.clone())))
        }
        C::Decrypt {
            ciphertext_blob,
            encryption_context,
            grant_tokens,
            key_id,
            encryption_algorithm,
            dry,
        } => {
            let req = DecryptRequest {
                ciphertext_blob: Blob(input::blob(
                    "ciphertext-blob",
                    &ciphertext_blob,
                    ctx.binary,
                )?),
                encryption_context: ctx_param("encryption-context", &encryption_context)?,
                grant_tokens,
                key_id,
                encryption_algorithm,
                dry_run: dry.dry_run,
            };
            exec!(ctx, "Decrypt", call(KmsRequest::Decrypt(req.clone())))
        }
        C::ReEncrypt {
            ciphertext_blob,
            source_encryption_context,
            source_key_id,
            destination_key_id,
            destination_encryption_context,
            source_encryption_algorithm,
            destination_encryption_algorithm,
            grant_tokens,
            dry,
        } => {
            let req = ReEncryptRequest {
                ciphertext_blob: Blob(input::blob(
                    "ciphertext-blob",
                    &ciphertext_blob,
                    ctx.binary,
                )?),
                source_encryption_context: ctx_param(
                    "source-encryption-context",
                    &source_encryption_context,
                )?,
                source_key_id,
                destination_key_id,
                destination_encryption_context: ctx_param(
                    "destination-encryption-context",
                    &destination_encryption_context,
                )?,
                source_encryption_algorithm,
                destination_encryption_algorithm,
                grant_tokens,
                dry_run: dry.dry_run,
            };
            exec!(ctx, "ReEncrypt", call(KmsRequest::ReEncrypt(req.clone())))
        }
        C::GenerateDataKey { a } => {
            let req = a.request()?;
            exec!(
                ctx,
                "GenerateDataKey",
                call(KmsRequest::GenerateDataKey(req.clone()))
            )
        }
        C::GenerateDataKeyWithoutPlaintext { a } => {
            let req = a.request()?;
            exec!(
                ctx,
                "GenerateDataKeyWithoutPlaintext",
                call(KmsRequest::GenerateDataKeyWithoutPlaintext(req.clone()))
            )
        }
        C::GenerateRandom {
            number_of_bytes,
            custom_key_store_id,
        } => {
            let req = GenerateRandomRequest {
                number_of_bytes,
                custom_key_store_id,
            };
            exec!(
                ctx,
                "GenerateRandom",
                call(KmsRequest::GenerateRandom(req.clone()))
            )
        }
    }
}
