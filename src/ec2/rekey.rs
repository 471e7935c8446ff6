//! Re-keying a volume in place (`ebsim ec2 rekey-volume`, an ebsim extension: EBS
//! changes a volume's key only through a snapshot copy). docs/FORMAT.md §9.
//!
//! A new data key is made under the new KMS key; every allocated unit is decrypted
//! and re-encrypted, in chunks. Modelled on LUKS2's online re-encryption with
//! journal resilience: the header records the new wrapped key and a boundary (units
//! below it are under the new key); before a chunk is overwritten its old
//! ciphertext goes to a journal file (`vol-….rekey`, fsynced), then the chunk is
//! rewritten and fsynced, then the boundary moves (both header copies, fsynced). A
//! kill at any moment leaves either the chunk whole under the old key, or its old
//! bytes in the journal for the boundary the header still names — a rerun restores
//! the chunk from the journal and carries on. The last step writes a header that
//! names only the new key, authenticated under the new data key.

use super::{Ec2, err, new_data_key_id};
use crate::crypto::secret::SecretBytes;
use crate::crypto::xts::Xts;
use crate::ec2::model::Volume;
use crate::error::{Error, ErrorKind, Result};
use crate::kms::access::Caller;
use crate::kms::api::{Blob, DecryptRequest};
use crate::volume::DATA_UNIT;
use crate::volume::header::Rekey;
use crate::volume::image::Image;
use sha2::Digest;
use std::path::{Path, PathBuf};

const JOURNAL_MAGIC: &[u8; 8] = b"EBSIMRKJ";
/// Units per chunk by default (16 MiB): memory used is two chunks.
const CHUNK_UNITS: u64 = 4096;

fn journal_path(image: &Path) -> PathBuf {
    image.with_extension("rekey")
}

/// Writes the journal for the chunk at `boundary`: magic, boundary, unit count,
/// each old unit's signature, and the SHA-256 of all that; fsynced.
fn write_journal(path: &Path, boundary: u64, sums: &[[u8; SIG]]) -> Result<()> {
    let mut buf = Vec::with_capacity(24 + SIG * sums.len() + 32);
    buf.extend_from_slice(JOURNAL_MAGIC);
    buf.extend_from_slice(&boundary.to_le_bytes());
    buf.extend_from_slice(&(sums.len() as u64).to_le_bytes());
    for s in sums {
        buf.extend_from_slice(s);
    }
    let check = sha2::Sha256::digest(&buf);
    buf.extend_from_slice(&check);
    crate::fsutil::write_atomic(path, &buf)
}

/// The journal's per-unit signatures, if it is whole and belongs to `boundary`.
fn read_journal(path: &Path, boundary: u64) -> Option<Vec<[u8; SIG]>> {
    let b = std::fs::read(path).ok()?;
    if b.len() < 56 || &b[..8] != JOURNAL_MAGIC {
        return None;
    }
    let (body, check) = b.split_at(b.len() - 32);
    if sha2::Sha256::digest(body)[..] != *check {
        return None;
    }
    let at = u64::from_le_bytes(body[8..16].try_into().ok()?);
    let n = u64::from_le_bytes(body[16..24].try_into().ok()?) as usize;
    let sums = body.get(24..24 + SIG * n)?;
    (at == boundary && body.len() == 24 + SIG * n).then(|| {
        sums.chunks_exact(SIG)
            .map(|c| c.try_into().expect("SIG bytes"))
            .collect()
    })
}

/// Bytes of a unit's signature in the journal.
const SIG: usize = 16;

fn unit_sum(unit: &[u8]) -> [u8; SIG] {
    unit[..SIG]
        .try_into()
        .expect("a unit is longer than its signature")
}

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
        let mut v = self.record(volume_id)?;
        self.repair(&mut v)?;
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
        let (image, _) = self.open_image(caller, &v, None)?;
        let path = self.image_path(volume_id);
        let journal = journal_path(&path);
        let old_key = image.data_key().expect("encrypted images keep their key");
        let h = image.header();
        let new_key = match &h.rekey {
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
                let mut next = h.clone();
                next.sequence += 1;
                next.rekey = Some(Rekey {
                    kms_key_arn: arn,
                    wrapped_key: wrapped,
                    boundary: 0,
                });
                image.set_header(next, &old_key)?;
                let _ = std::fs::remove_file(&journal);
                key
            }
        };
        let new_xts = Xts::new(new_key.expose())
            .map_err(|e| Error::new(ErrorKind::VolumeImage, format!("{volume_id}: {e}")))?;
        let units = image.size() / DATA_UNIT;
        let chunk = std::env::var("EBSIM_REKEY_CHUNK_UNITS")
            .ok()
            .and_then(|c| c.parse().ok())
            .filter(|c: &u64| *c > 0)
            .unwrap_or(CHUNK_UNITS);
        let mut boundary = image.header().rekey.as_ref().expect("set above").boundary;
        // The chunk a kill cut short: its journal says which units are still old.
        let mut resumed = read_journal(&journal, boundary);
        let allocated: Vec<(u64, u64)> = image
            .allocation(0, image.size())?
            .into_iter()
            .filter(|e| e.allocated)
            .map(|e| {
                (
                    e.offset / DATA_UNIT,
                    (e.offset + e.length).div_ceil(DATA_UNIT),
                )
            })
            .collect();
        let mut buf = Vec::new();
        while boundary < units {
            let (start, end, old_sums) = match resumed.take() {
                Some(sums) => (
                    boundary,
                    (boundary + sums.len() as u64).min(units),
                    Some(sums),
                ),
                None => {
                    // Skip to the next allocated unit: holes are holes under any key.
                    let next = allocated
                        .iter()
                        .find(|(_, end)| *end > boundary)
                        .map(|(start, _)| (*start).max(boundary));
                    let Some(start) = next else {
                        break;
                    };
                    (start, (start + chunk).min(units), None)
                }
            };
            if start > boundary {
                // Moving the boundary over a hole needs no journal.
                self.move_boundary(&image, &old_key, start)?;
            }
            buf.resize(((end - start) * DATA_UNIT) as usize, 0);
            image.read_stored(start * DATA_UNIT, &mut buf)?;
            let is_old: Vec<bool> = match &old_sums {
                Some(sums) => buf
                    .chunks_exact(DATA_UNIT as usize)
                    .zip(sums)
                    .map(|(u, s)| unit_sum(u) == *s)
                    .collect(),
                None => {
                    let sums: Vec<[u8; SIG]> =
                        buf.chunks_exact(DATA_UNIT as usize).map(unit_sum).collect();
                    write_journal(&journal, start, &sums)?;
                    vec![true; sums.len()]
                }
            };
            {
                use rayon::prelude::*;
                buf.par_chunks_mut(DATA_UNIT as usize)
                    .enumerate()
                    .filter(|(i, unit)| is_old[*i] && unit.iter().any(|&b| b != 0))
                    .for_each(|(i, unit)| {
                        image.decrypt_stored(start + i as u64, unit);
                        new_xts.encrypt(start + i as u64, unit).expect("whole unit");
                    });
            }
            image.write_stored(start * DATA_UNIT, &buf)?;
            image.flush()?;
            self.move_boundary(&image, &old_key, end)?;
            boundary = end;
            progress(boundary, units);
        }
        // Done: the header names only the new key, authenticated under it.
        let cur = image.header();
        let r = cur.rekey.clone().expect("in progress");
        let mut fin = cur.clone();
        fin.sequence += 1;
        fin.kms_key_arn = r.kms_key_arn.clone();
        fin.wrapped_key = r.wrapped_key.clone();
        fin.rekey = None;
        image.set_header(fin, &new_key)?;
        image.reset_tracking(None)?;
        drop(image);
        let _ = std::fs::remove_file(&journal);
        progress(units, units);
        let rec = self.write(|tx| {
            let mut cur = tx
                .volume(volume_id)?
                .ok_or_else(|| super::not_found(volume_id))?;
            cur.kms_key_arn = Some(r.kms_key_arn.clone());
            cur.data_key_id = Some(new_data_key_id());
            tx.put_volume(&cur)?;
            Ok(cur)
        })?;
        Ok(Volume::from_record(&rec, false))
    }

    fn move_boundary(&self, image: &Image, old_key: &SecretBytes, to: u64) -> Result<()> {
        let mut next = image.header();
        next.sequence += 1;
        next.rekey.as_mut().expect("in progress").boundary = to;
        image.set_header(next, old_key)
    }

    /// Decrypts a volume's wrapped data key through EC2 for the caller.
    fn decrypt_for_volume(
        &self,
        caller: &Caller,
        volume_id: &str,
        key_arn: &str,
        wrapped: &[u8],
    ) -> Result<SecretBytes> {
        let out = self.kms.decrypt(
            &caller.via("ec2", self.region()),
            DecryptRequest {
                ciphertext_blob: Blob::new(wrapped.to_vec()),
                encryption_context: [("aws:ebs:id".to_string(), volume_id.to_string())].into(),
                key_id: Some(key_arn.to_string()),
                ..Default::default()
            },
        )?;
        Ok(SecretBytes::from_slice(out.plaintext.as_slice()))
    }
}
