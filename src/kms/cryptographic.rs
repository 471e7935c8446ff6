//! The cryptographic operations: Encrypt, Decrypt, ReEncrypt, GenerateDataKey,
//! GenerateDataKeyWithoutPlaintext, GenerateRandom. They count against the shared
//! symmetric quota and are `readOnly` in CloudTrail.

use super::*;
use crate::crypto::SecretBytes;

/// A ciphertext to open and what to open it with.
struct Opening<'a> {
    blob: &'a [u8],
    ctx: &'a EncryptionContext,
    key_id: Option<&'a str>,
    action: &'a str,
    grant_tokens: &'a [String],
}

impl Kms {
    /// Resolves, authorizes and state-checks a key for a cryptographic operation.
    fn usable_key(
        &self,
        caller: &Caller,
        audit: &mut Audit,
        key_id: &str,
        action: &str,
        authz: &Authz<'_>,
    ) -> Result<Arc<KeyRecord>> {
        let (key, grants) = {
            let inner = self.fresh()?;
            let key = self.resolve(&inner.cache, caller, key_id, true)?;
            let grants = inner.cache.grants_of(&key.key_id);
            (key, grants)
        };
        audit.resources.push(key.arn.clone());
        self.authorize(caller, action, &key, &grants, authz)?;
        check_usable(&key)?;
        check_key_usage(&key, KeyUsage::EncryptDecrypt, operation_of(action))?;
        Ok(key)
    }

    fn seal_under(
        &self,
        key: &KeyRecord,
        ctx: &EncryptionContext,
        plaintext: &[u8],
    ) -> Result<(Vec<u8>, String)> {
        let (version, m) = key
            .current_material()
            .ok_or_else(|| invalid_state(key, "is pending import."))?;
        let backing_key = m.secret.symmetric().ok_or_else(|| not_symmetric(key))?;
        // Ciphertext v1 names its key by the 16 bytes of a UUID; a multi-Region
        // key's `mrk-` id would come back as a UUID that names no key.
        let key_id = key
            .key_id_bytes()
            .filter(|_| !key.multi_region && !ids::is_multi_region_key_id(&key.key_id))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::UnsupportedOperation,
                    format!(
                        "{} is a multi-Region key, which ebsim's ciphertext format cannot name yet.",
                        key.arn
                    ),
                )
            })?;
        let blob = ciphertext::seal(
            &uuid::Uuid::from_bytes(key_id),
            version,
            backing_key.expose(),
            &canonical_bytes(ctx),
            plaintext,
        );
        Ok((blob, m.id.clone()))
    }

    /// Opens a ciphertext blob: finds its key and backing-key version, checks the
    /// optional `KeyId`, authorizes the action, decrypts with the context.
    fn open_blob(
        &self,
        caller: &Caller,
        audit: &mut Audit,
        o: Opening<'_>,
    ) -> Result<(Arc<KeyRecord>, SecretBytes, String)> {
        let Opening {
            blob,
            ctx,
            key_id,
            action,
            grant_tokens,
        } = o;
        check_len(blob.len(), "ciphertextBlob", 1, ciphertext::MAX_LEN)?;
        let parsed = ciphertext::Blob::parse(blob).map_err(|_| invalid_ciphertext())?;
        let inner = self.fresh()?;
        let named = key_id
            .map(|id| self.resolve(&inner.cache, caller, id, true))
            .transpose()?;
        let key = inner
            .cache
            .keys
            .get(&parsed.key_id.to_string())
            .filter(|k| visible(k, caller))
            .cloned();
        let grants = key
            .as_ref()
            .map(|k| inner.cache.grants_of(&k.key_id))
            .unwrap_or_default();
        drop(inner);
        let Some(key) = key else {
            return Err(Error::new(
                ErrorKind::AccessDenied,
                "The ciphertext refers to a customer master key that does not exist, does not exist in this region, or you are not allowed to access.",
            ));
        };
        audit.resources.push(key.arn.clone());
        if let Some(named) = named
            && named.key_id != key.key_id
        {
            return Err(Error::new(
                ErrorKind::IncorrectKey,
                "The key ID in the request does not identify a CMK that can perform this operation.",
            ));
        }
        let authz = Authz {
            context: Some(ctx),
            grant_tokens,
            conditions: vec![("kms:EncryptionAlgorithm", vec![SYMMETRIC_DEFAULT.into()])],
        };
        self.authorize(caller, action, &key, &grants, &authz)?;
        check_usable(&key)?;
        check_key_usage(&key, KeyUsage::EncryptDecrypt, operation_of(action))?;
        let m = key
            .materials
            .get(parsed.material_version as usize)
            .ok_or_else(invalid_ciphertext)?;
        let backing_key = m.secret.symmetric().ok_or_else(invalid_ciphertext)?;
        let plaintext = parsed
            .open(backing_key.expose(), &canonical_bytes(ctx))
            .map_err(|_| invalid_ciphertext())?;
        let material_id = m.id.clone();
        Ok((key, plaintext, material_id))
    }

    pub fn encrypt(&self, caller: &Caller, req: EncryptRequest) -> Result<EncryptResponse> {
        self.call(caller, "Encrypt", CallKind::Crypto, &req, |audit| {
            check_len(req.plaintext.as_slice().len(), "plaintext", 1, 4096)?;
            check_grant_tokens(&req.grant_tokens)?;
            check_algorithm(req.encryption_algorithm.as_deref())?;
            let authz = Authz {
                context: Some(&req.encryption_context),
                grant_tokens: &req.grant_tokens,
                conditions: vec![("kms:EncryptionAlgorithm", vec![SYMMETRIC_DEFAULT.into()])],
            };
            let key = self.usable_key(caller, audit, &req.key_id, "kms:Encrypt", &authz)?;
            dry_run(req.dry_run)?;
            let (blob, _) =
                self.seal_under(&key, &req.encryption_context, req.plaintext.as_slice())?;
            Ok(EncryptResponse {
                ciphertext_blob: Blob::new(blob),
                key_id: key.arn.clone(),
                encryption_algorithm: SYMMETRIC_DEFAULT.into(),
            })
        })
    }

    pub fn decrypt(&self, caller: &Caller, req: DecryptRequest) -> Result<DecryptResponse> {
        self.call(caller, "Decrypt", CallKind::Crypto, &req, |audit| {
            let (key, plaintext, material_id) = self.decrypt_op(caller, audit, &req)?;
            Ok(DecryptResponse {
                key_id: key.arn.clone(),
                plaintext: Blob::new(plaintext.expose().to_vec()),
                encryption_algorithm: SYMMETRIC_DEFAULT.into(),
                key_material_id: material_id,
            })
        })
    }

    /// Decrypt for the AWS services ebsim runs (EBS attach, snapshots, re-key) that
    /// keep the plaintext in locked memory: the same checks, quota and CloudTrail
    /// record as [`Kms::decrypt`], but the plaintext goes from AES-GCM straight into
    /// a [`SecretBytes`] page and never through a heap buffer.
    pub fn decrypt_locked(&self, caller: &Caller, req: DecryptRequest) -> Result<SecretBytes> {
        self.call(caller, "Decrypt", CallKind::Crypto, &req, |audit| {
            let (_, plaintext, _) = self.decrypt_op(caller, audit, &req)?;
            Ok(Unprintable(plaintext))
        })
        .map(|p| p.0)
    }

    fn decrypt_op(
        &self,
        caller: &Caller,
        audit: &mut Audit,
        req: &DecryptRequest,
    ) -> Result<(Arc<KeyRecord>, SecretBytes, String)> {
        check_grant_tokens(&req.grant_tokens)?;
        check_algorithm(req.encryption_algorithm.as_deref())?;
        let opened = self.open_blob(
            caller,
            audit,
            Opening {
                blob: req.ciphertext_blob.as_slice(),
                ctx: &req.encryption_context,
                key_id: req.key_id.as_deref(),
                action: "kms:Decrypt",
                grant_tokens: &req.grant_tokens,
            },
        )?;
        dry_run(req.dry_run)?;
        Ok(opened)
    }

    pub fn re_encrypt(&self, caller: &Caller, req: ReEncryptRequest) -> Result<ReEncryptResponse> {
        self.call(caller, "ReEncrypt", CallKind::Crypto, &req, |audit| {
            check_grant_tokens(&req.grant_tokens)?;
            check_algorithm(req.source_encryption_algorithm.as_deref())?;
            check_algorithm(req.destination_encryption_algorithm.as_deref())?;
            let (source, plaintext, source_material) = self.open_blob(
                caller,
                audit,
                Opening {
                    blob: req.ciphertext_blob.as_slice(),
                    ctx: &req.source_encryption_context,
                    key_id: req.source_key_id.as_deref(),
                    action: "kms:ReEncryptFrom",
                    grant_tokens: &req.grant_tokens,
                },
            )?;
            let authz = Authz {
                context: Some(&req.destination_encryption_context),
                grant_tokens: &req.grant_tokens,
                conditions: vec![("kms:EncryptionAlgorithm", vec![SYMMETRIC_DEFAULT.into()])],
            };
            let dest = self.usable_key(
                caller,
                audit,
                &req.destination_key_id,
                "kms:ReEncryptTo",
                &authz,
            )?;
            dry_run(req.dry_run)?;
            let (blob, dest_material) = self.seal_under(
                &dest,
                &req.destination_encryption_context,
                plaintext.expose(),
            )?;
            Ok(ReEncryptResponse {
                ciphertext_blob: Blob::new(blob),
                source_key_id: source.arn.clone(),
                key_id: dest.arn.clone(),
                source_encryption_algorithm: SYMMETRIC_DEFAULT.into(),
                destination_encryption_algorithm: SYMMETRIC_DEFAULT.into(),
                source_key_material_id: source_material,
                destination_key_material_id: dest_material,
            })
        })
    }

    /// The shared body of GenerateDataKey and GenerateDataKeyWithoutPlaintext.
    fn data_key(
        &self,
        caller: &Caller,
        audit: &mut Audit,
        req: &GenerateDataKeyRequest,
        action: &str,
    ) -> Result<DataKey> {
        let len = match (req.number_of_bytes, req.key_spec.as_deref()) {
            (Some(n), None) => {
                check_range(n, "numberOfBytes", 1, 1024)?;
                n as usize
            }
            (None, Some(spec)) => match spec {
                "AES_256" => 32,
                "AES_128" => 16,
                other => return Err(enum_error(other, "keySpec", &["AES_256", "AES_128"])),
            },
            _ => {
                return Err(Error::new(
                    ErrorKind::Validation,
                    "Please specify either number of bytes or key spec.",
                ));
            }
        };
        check_grant_tokens(&req.grant_tokens)?;
        let authz = Authz::with_context(&req.encryption_context, &req.grant_tokens);
        let key = self.usable_key(caller, audit, &req.key_id, action, &authz)?;
        dry_run(req.dry_run)?;
        // Made in a locked page and sealed from there; GenerateDataKey copies it into
        // the response (a zeroizing buffer); it is never kept.
        let data_key = SecretBytes::random(len);
        let (blob, material) = self.seal_under(&key, &req.encryption_context, data_key.expose())?;
        Ok(DataKey {
            plaintext: data_key,
            blob,
            key,
            material,
        })
    }

    pub fn generate_data_key(
        &self,
        caller: &Caller,
        req: GenerateDataKeyRequest,
    ) -> Result<GenerateDataKeyResponse> {
        self.call(caller, "GenerateDataKey", CallKind::Crypto, &req, |audit| {
            let DataKey {
                plaintext: dk,
                blob,
                key,
                material,
            } = self.data_key(caller, audit, &req, "kms:GenerateDataKey")?;
            Ok(GenerateDataKeyResponse {
                ciphertext_blob: Blob::new(blob),
                plaintext: Blob::new(dk.expose().to_vec()),
                key_id: key.arn.clone(),
                key_material_id: material,
            })
        })
    }

    pub fn generate_data_key_without_plaintext(
        &self,
        caller: &Caller,
        req: GenerateDataKeyRequest,
    ) -> Result<GenerateDataKeyWithoutPlaintextResponse> {
        self.call(
            caller,
            "GenerateDataKeyWithoutPlaintext",
            CallKind::Crypto,
            &req,
            |audit| {
                let DataKey {
                    blob,
                    key,
                    material,
                    ..
                } = self.data_key(caller, audit, &req, "kms:GenerateDataKeyWithoutPlaintext")?;
                Ok(GenerateDataKeyWithoutPlaintextResponse {
                    ciphertext_blob: Blob::new(blob),
                    key_id: key.arn.clone(),
                    key_material_id: material,
                })
            },
        )
    }

    pub fn generate_random(
        &self,
        caller: &Caller,
        req: GenerateRandomRequest,
    ) -> Result<GenerateRandomResponse> {
        self.call(caller, "GenerateRandom", CallKind::Crypto, &req, |_| {
            if req.custom_key_store_id.is_some() {
                return Err(Error::new(
                    ErrorKind::UnsupportedOperation,
                    "Custom key stores are not implemented by ebsim.",
                ));
            }
            self.authorize_account_action(caller, "kms:GenerateRandom", "*")?;
            let n = req.number_of_bytes.ok_or_else(|| {
                Error::validation("null", "numberOfBytes", "Member must not be null")
            })?;
            check_range(n, "numberOfBytes", 1, 1024)?;
            Ok(GenerateRandomResponse {
                plaintext: Blob::new(crate::crypto::random_bytes(n as usize)),
            })
        })
    }
}

/// A plaintext that a response carries but that is never serialized (the audit
/// record of a crypto call has no response): Kms::call wants `Serialize`.
struct Unprintable(SecretBytes);

impl serde::Serialize for Unprintable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

/// A generated data key: the plaintext (for the caller only), its blob, the key.
struct DataKey {
    plaintext: SecretBytes,
    blob: Vec<u8>,
    key: Arc<KeyRecord>,
    material: String,
}

/// The operation an action is checked for (`kms:ReEncryptFrom` → `ReEncrypt`), as
/// InvalidKeyUsageException names it.
fn operation_of(action: &str) -> &str {
    let op = action.strip_prefix("kms:").unwrap_or(action);
    if op.starts_with("ReEncrypt") {
        "ReEncrypt"
    } else {
        op
    }
}

/// A SYMMETRIC_DEFAULT key whose current material is of another kind: no code
/// writes one, so a record that has it is damaged.
fn not_symmetric(key: &KeyRecord) -> Error {
    Error::new(
        ErrorKind::Environment,
        format!(
            "{}: its key material is not a symmetric backing key; the KMS store is damaged.",
            key.arn
        ),
    )
}
