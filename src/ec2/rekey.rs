//! RekeyVolume (`ebsim ec2 rekey-volume`, an ebsim extension: EBS changes a
//! volume's key only through a snapshot copy): the EC2 side — authorization, the
//! KMS calls for the new data key, the record. The re-encryption itself, its
//! journal and crash points are `crate::volume::rekey` (docs/FORMAT.md §9).

use super::{Ec2, err, new_data_key_id};
use crate::crypto::secret::SecretBytes;
use crate::ec2::model::{Volume, VolumeRecord};
use crate::error::{ErrorKind, Result};
use crate::kms::access::Caller;
use crate::kms::api::{Blob, DecryptRequest};
use crate::volume::rekey;

impl Ec2 {
    /// Re-keys detached, encrypted `volume_id` to `kms_key_id` (resuming an
    /// interrupted re-key). `progress(done, total)` is called after every chunk.
    pub fn rekey_volume(
        &self,
        caller: &Caller,
        volume_id: &str,
        kms_key_id: &str,
        progress: &dyn Fn(u64, u64),
    ) -> Result<Volume> {
        self.rekey_volume_with(caller, volume_id, kms_key_id, false, progress)
    }

    /// [`Ec2::rekey_volume`] with EC2's DryRun: the volume's state and the new
    /// key are checked, then DryRunOperation before any KMS call for a data key.
    pub fn rekey_volume_with(
        &self,
        caller: &Caller,
        volume_id: &str,
        kms_key_id: &str,
        dry: bool,
        progress: &dyn Fn(u64, u64),
    ) -> Result<Volume> {
        let request = serde_json::json!({ "volumeId": volume_id, "kmsKeyId": kms_key_id });
        self.call(
            caller,
            "RekeyVolume",
            request,
            |t| {
                let mut v = self.record(volume_id)?;
                t.resources.push(self.volume_arn(volume_id));
                self.repair(&mut v)?;
                // ebsim's own action: ec2:RekeyVolume on the volume, with the key
                // it moves to as ec2:KmsKeyId (as the request gave it).
                let target = self.volume_target(&v).key("ec2:KmsKeyId", kms_key_id);
                self.authorize(caller, "ec2:RekeyVolume", &[target])?;
                self.rekey_volume_op(caller, v, kms_key_id, dry, progress)
            },
            super::trail::volume_response,
        )
    }

    fn rekey_volume_op(
        &self,
        caller: &Caller,
        v: VolumeRecord,
        kms_key_id: &str,
        dry: bool,
        progress: &dyn Fn(u64, u64),
    ) -> Result<Volume> {
        let volume_id = v.volume_id.clone();
        let volume_id = volume_id.as_str();
        if v.attachment.is_some() {
            return Err(err(
                ErrorKind::VolumeInUse,
                format!("{volume_id} is attached; detach it before re-keying"),
            ));
        }
        if !v.encrypted {
            return Err(err(
                ErrorKind::IncorrectState,
                format!(
                    "{volume_id} is not encrypted; an unencrypted volume cannot be encrypted in place (copy a snapshot of it with --encrypted, then create a volume from the copy)"
                ),
            ));
        }
        let new_arn = self.resolve_key(caller, kms_key_id)?;
        super::dry_run(dry)?;
        let (image, _) = self.open_image(caller, &v, None)?;
        let new_key = match &image.header().rekey {
            Some(r) if r.kms_key_arn != new_arn => {
                return Err(err(
                    ErrorKind::IncorrectState,
                    format!(
                        "a re-key of {volume_id} to {} is in progress; rerun with --kms-key-id {} to finish it",
                        r.kms_key_arn, r.kms_key_arn
                    ),
                ));
            }
            Some(r) => {
                self.decrypt_for_volume(caller, volume_id, &r.kms_key_arn, &r.wrapped_key)?
            }
            None => {
                let (wrapped, arn, key) = self.new_data_key(caller, &new_arn, volume_id)?;
                rekey::begin(&image, arn, wrapped)?;
                key
            }
        };
        let arn = rekey::finish(image, &new_key, progress)?;
        let rec = self.write(|tx| {
            let mut cur = tx
                .volume(volume_id)?
                .ok_or_else(|| super::not_found(volume_id))?;
            cur.kms_key_arn = Some(arn.clone());
            cur.data_key_id = Some(new_data_key_id());
            tx.put_volume(&cur)?;
            Ok(cur)
        })?;
        Ok(Volume::from_record(&rec, false))
    }

    /// Decrypts a volume's wrapped data key through EC2 for the caller.
    fn decrypt_for_volume(
        &self,
        caller: &Caller,
        volume_id: &str,
        key_arn: &str,
        wrapped: &[u8],
    ) -> Result<SecretBytes> {
        self.kms.decrypt_locked(
            &self.via(caller),
            DecryptRequest {
                ciphertext_blob: Blob::new(wrapped.to_vec()),
                encryption_context: self.context(volume_id),
                key_id: Some(key_arn.to_string()),
                ..Default::default()
            },
        )
    }
}
